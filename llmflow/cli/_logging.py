"""structlog configuration for the CLI: readable console lines or one JSON object per event.

Logs go to stderr, so stdout stays for results (plans, reports). Events carry stable
names (``request.completed``, ``budget.alert``, ...) and never the API key or prompt text.
"""

from __future__ import annotations

import sys
from enum import StrEnum
from typing import TYPE_CHECKING

from llmflow.lazy import configure_when_imported, discard_pending_configuration

if TYPE_CHECKING:
    import structlog


class LogFormat(StrEnum):
    console = "console"
    json = "json"


def configure_logging(fmt: LogFormat = LogFormat.console, *, verbose: bool = False) -> None:
    """Configure structlog once per command.

    JSON logs include info events (one per request); console logs show warnings and up
    unless ``verbose``, because the console has a progress display instead.
    """
    import logging

    import structlog

    discard_pending_configuration()  # this one wins
    level = (
        logging.INFO if fmt is LogFormat.json else (logging.DEBUG if verbose else logging.WARNING)
    )
    renderer: structlog.typing.Processor = (
        structlog.processors.JSONRenderer(sort_keys=True)
        if fmt is LogFormat.json
        else structlog.dev.ConsoleRenderer(colors=sys.stderr.isatty())
    )
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(level),
        # Resolve sys.stderr at each call: a captured stream may be closed later (tests).
        logger_factory=_stderr_logger,
        cache_logger_on_first_use=False,
    )


def _stderr_logger(*_args: object) -> structlog.PrintLogger:
    import structlog

    return structlog.PrintLogger(sys.stderr)


def quiet_logging() -> None:
    """Warnings and up only (for commands whose output is on stdout), configured once
    structlog is loaded: a command that logs nothing never imports it."""
    configure_when_imported(lambda: configure_logging(LogFormat.console))
