"""``llmflow --version``."""

from __future__ import annotations

import typer

from llmflow.cli._app import app


def _print_version(value: bool) -> None:
    if value:
        from importlib.metadata import version

        typer.echo(f"llmflow {version('llmflow')}")
        raise typer.Exit()


@app.callback()
def _root(
    show_version: bool = typer.Option(
        False, "--version", callback=_print_version, is_eager=True, help="Print the version."
    ),
) -> None:
    """Declarative, cost-aware LLM pipelines for Claude."""
