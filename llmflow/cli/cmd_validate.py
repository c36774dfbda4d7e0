"""``llmflow validate PIPELINE [--policy P]``: load and check, report every error."""

from __future__ import annotations

from pathlib import Path

import typer

from llmflow.cli._app import app


@app.command("validate")
def validate(
    pipeline: Path = typer.Argument(..., help="Pipeline YAML file."),
    policy: Path | None = typer.Option(None, "--policy", "-p", help="Policy YAML file."),
) -> None:
    """Load and check a pipeline (and a policy), reporting every error at once.

    Exit 0 when valid, 2 when not. Example:

      llmflow validate pipelines/support-triage.yaml --policy policies/default.yaml
    """
    from rich.console import Console

    from llmflow.cli._config import load_config
    from llmflow.cli._errors import reported_errors

    with reported_errors():
        pipeline_file, policy_file, _ = load_config(pipeline, policy)
    steps = pipeline_file.pipeline.steps
    what = f"{pipeline_file.display}: {len(steps)} step{'s' if len(steps) != 1 else ''}"
    if policy_file is not None:
        what += f", routed by {policy_file.display}"
    Console(highlight=False, soft_wrap=True).print(f"ok  {what}", markup=False)
