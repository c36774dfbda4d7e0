"""``llmflow plan PIPELINE --policy P``: resolve and price, send nothing.

``--exact-tokens`` counts input tokens with the free count_tokens endpoint through
``--backend`` (the real API, or the in-process emulator).
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING

import typer

from llmflow.cli._app import app
from llmflow.cli._inputs import Backend, parse_inputs

if TYPE_CHECKING:
    from llmflow.catalog import Catalog
    from llmflow.planner import Plan
    from llmflow.spec.loader import PipelineFile, PolicyFile


class PlanFormat(StrEnum):
    table = "table"
    json = "json"


async def _exact_plan(
    backend: Backend,
    pipeline_file: PipelineFile,
    policy_file: PolicyFile,
    inputs: Mapping[str, str],
    catalog: Catalog,
) -> Plan:
    from llmflow.cli._backend import client_for
    from llmflow.cli._token_counter import SdkTokenCounter
    from llmflow.planner import build_plan_async

    client = client_for(backend.value)
    try:
        result = await build_plan_async(
            pipeline_file,
            policy_file,
            inputs=inputs,
            catalog=catalog,
            token_counter=SdkTokenCounter(client),
        )
    finally:
        await client.close()
    return result.plan


@app.command("plan")
def plan(
    pipeline: Path = typer.Argument(..., help="Pipeline YAML file."),
    policy: Path = typer.Option(..., "--policy", "-p", help="Policy YAML file."),
    input_values: list[str] = typer.Option(
        [], "--input", "-i", help="Scalar input as KEY=VALUE (repeatable)."
    ),
    output_format: PlanFormat = typer.Option(PlanFormat.table, "--format", help="table or json."),
    exact_tokens: bool = typer.Option(
        False, "--exact-tokens", help="Count input tokens with the count_tokens endpoint."
    ),
    backend: Backend = typer.Option(
        Backend.anthropic, "--backend", help="Backend for --exact-tokens: anthropic or emulator."
    ),
) -> None:
    """Resolve a pipeline under a policy and price it; nothing is sent.

    Exit 0 on success, 2 on invalid configuration or input. Examples:

      llmflow plan pipelines/support-triage.yaml --policy policies/default.yaml

      llmflow plan pipelines/support-triage.yaml -p policies/default.yaml --format json

      llmflow plan pipelines/support-triage.yaml -p policies/default.yaml --exact-tokens
      --backend emulator
    """
    from rich.console import Console

    from llmflow.cli._config import load_config
    from llmflow.cli._errors import reported_errors
    from llmflow.cli._inputs import wide_console_width
    from llmflow.planner import build_plan
    from llmflow.planner.render import render_plan

    inputs = parse_inputs(input_values)
    with reported_errors():
        pipeline_file, policy_file, catalog = load_config(pipeline, policy, inputs)
        assert policy_file is not None  # --policy is required
        if exact_tokens:
            result = asyncio.run(_exact_plan(backend, pipeline_file, policy_file, inputs, catalog))
        else:
            result = build_plan(pipeline_file, policy_file, inputs=inputs, catalog=catalog).plan
    if output_format is PlanFormat.json:
        typer.echo(result.to_json(), nl=False)
    else:
        console = Console(highlight=False)
        console = Console(highlight=False, width=wide_console_width(console.is_terminal))
        console.print(render_plan(result))
