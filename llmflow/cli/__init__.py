"""Command-line interface. Each command lives in its own ``cmd_*`` module."""

from __future__ import annotations

import os

from llmflow.cli._app import app

# Importing a command module registers its command on ``app``.
from llmflow.cli import cmd_version  # noqa: F401  isort: skip
from llmflow.cli import cmd_emulator  # noqa: F401  isort: skip
from llmflow.cli import cmd_validate  # noqa: F401  isort: skip
from llmflow.cli import cmd_schema  # noqa: F401  isort: skip
from llmflow.cli import cmd_plan  # noqa: F401  isort: skip
from llmflow.cli import cmd_report  # noqa: F401  isort: skip
from llmflow.cli import cmd_run  # noqa: F401  isort: skip
from llmflow.cli import cmd_models  # noqa: F401  isort: skip


def main() -> None:
    """Console-script entry point."""
    # pydantic looks for plugins in the entry points of every installed distribution
    # (20-50 ms of each start); llmflow uses none. A value the user set is kept.
    os.environ.setdefault("PYDANTIC_DISABLE_PLUGINS", "__all__")
    app()


__all__ = ["app", "main"]
