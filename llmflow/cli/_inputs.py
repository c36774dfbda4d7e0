"""Command-line values shared by commands: ``--input KEY=VALUE`` and ``--backend``."""

from __future__ import annotations

from decimal import Decimal, InvalidOperation
from enum import StrEnum
from typing import TYPE_CHECKING

import typer

from llmflow.errors import ConfigError, Diagnostic

if TYPE_CHECKING:
    from rich.console import Console


class Backend(StrEnum):
    anthropic = "anthropic"
    emulator = "emulator"


def parse_inputs(pairs: list[str]) -> dict[str, str]:
    """``["week=2026-W48"]`` → ``{"week": "2026-W48"}``; a pair without ``=`` is refused."""
    values: dict[str, str] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key.strip():
            raise typer.BadParameter(f"expected KEY=VALUE, got {pair!r}", param_hint="--input")
        values[key.strip()] = value
    return values


#: Width of tables written to a file or a pipe instead of a terminal.
PIPE_WIDTH = 160


def parse_budget(text: str | None) -> Decimal | None:
    """``--budget USD`` as a positive Decimal (a leading ``$`` is fine); ConfigError else."""
    from llmflow.catalog import format_usd

    if text is None:
        return None
    try:
        value = Decimal(text.lstrip("$"))
    except InvalidOperation:
        raise option_error("--budget", f"not an amount in USD: {text!r}") from None
    if not value.is_finite() or value <= 0:
        raise option_error("--budget", f"must be a positive amount, got {format_usd(value)}")
    return value


def option_error(option: str, message: str) -> ConfigError:
    """A bad command-line value, reported like a configuration error (exit 2)."""
    return ConfigError([Diagnostic("<command line>", 1, 1, option, message)])


def table_console() -> Console:
    """A console for tables on stdout; a pipe or file gets room (rich assumes 80 columns)."""
    from rich.console import Console

    console = Console(highlight=False)
    if not console.is_terminal:
        console.width = PIPE_WIDTH
    return console
