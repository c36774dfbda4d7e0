"""Command-line values shared by commands: ``--input KEY=VALUE`` and ``--backend``."""

from __future__ import annotations

from enum import StrEnum

import typer


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


def wide_console_width(is_terminal: bool) -> int | None:
    """Tables written to a pipe or file get room (rich assumes 80 columns otherwise)."""
    return None if is_terminal else 200
