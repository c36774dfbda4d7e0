"""How every command reports llmflow's own errors: one line each, no traceback."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

import typer

from llmflow.errors import ConfigError, LlmflowError

if TYPE_CHECKING:
    from rich.console import Console


class _Stderr:
    """The stderr console, made on first use: commands that print nothing there never
    import rich."""

    _console: Console | None = None

    def __getattr__(self, name: str) -> Any:
        if self._console is None:
            from rich.console import Console

            self._console = Console(stderr=True, highlight=False, soft_wrap=True)
        return getattr(self._console, name)


stderr = _Stderr()


@contextmanager
def reported_errors() -> Iterator[None]:
    """Print an LlmflowError to stderr and exit with its code."""
    try:
        yield
    except LlmflowError as exc:
        report(exc)
        raise typer.Exit(exc.exit_code) from None


def report(exc: LlmflowError) -> None:
    """Write ``exc`` to stderr; a ConfigError prints one diagnostic per line."""
    if isinstance(exc, ConfigError):
        for diagnostic in exc.diagnostics:
            stderr.print(str(diagnostic), markup=False)
        count = len(exc.diagnostics)
        stderr.print(f"{count} error{'s' if count != 1 else ''}", style="red", markup=False)
    else:
        stderr.print(f"error: {exc}", markup=False)
