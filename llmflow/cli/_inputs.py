"""Command-line values shared by commands: ``--input KEY=VALUE`` and ``--backend``."""

from __future__ import annotations

from enum import StrEnum
from typing import TYPE_CHECKING

import typer

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


def table_console() -> Console:
    """A console for tables on stdout; a pipe or file gets room (rich assumes 80 columns)."""
    from rich.console import Console

    console = Console(highlight=False)
    if not console.is_terminal:
        console.width = PIPE_WIDTH
    return console
