"""The typer application every command module registers on."""

from __future__ import annotations

import typer

app = typer.Typer(
    name="llmflow",
    help=(
        "Declarative, cost-aware LLM pipelines for Claude.\n\n"
        "Examples:\n\n"
        "  llmflow validate pipelines/support-triage.yaml --policy policies/default.yaml\n\n"
        "  llmflow plan pipelines/support-triage.yaml --policy policies/default.yaml\n\n"
        "  llmflow run pipelines/support-triage.yaml --policy policies/default.yaml"
        " --backend emulator"
    ),
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode="rich",
)
