"""``llmflow plan PIPELINE --policy P``: resolve and price, send nothing.

``--exact-tokens`` counts input tokens with the free count_tokens endpoint through
``--backend`` (the real API, or the in-process emulator).
"""

from __future__ import annotations

from collections.abc import Mapping
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING

import typer

from llmflow.cli._app import app
from llmflow.cli._inputs import Backend, parse_budget, parse_inputs
from llmflow.cli._store import open_store, store_exists, store_option

if TYPE_CHECKING:
    from decimal import Decimal

    from llmflow.catalog import Catalog
    from llmflow.planner import Plan
    from llmflow.spec.loader import PipelineFile, PolicyFile
    from llmflow.spec.policy import Policy
    from llmflow.tracker import LimitSpec


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


# Typer keeps single line breaks of a help paragraph, so each paragraph is one line here.
_HELP = (
    "Resolve a pipeline under a policy and price it; nothing is sent.\n\n"
    "Exit 0 on success, 2 on invalid configuration or input (4 when --exact-tokens cannot"
    " use its backend). Examples:\n\n"
    "llmflow plan pipelines/support-triage.yaml --policy policies/default.yaml\n\n"
    "llmflow plan pipelines/support-triage.yaml -p policies/default.yaml --format json\n\n"
    "llmflow plan pipelines/contract-qa.yaml -p policies/default.yaml --exact-tokens"
    " --backend emulator\n\n"
    "llmflow plan pipelines/nightly-doc-summaries.yaml -p policies/overnight-etl.yaml"
    " --input week=2026-W48 --store postgresql://llmflow@db/llmflow"
)


def with_period_spend(
    result: Plan, policy: Policy, budget: Decimal | None, store_spec: str
) -> Plan:
    """The plan's budget check with ``--budget`` and what each period's scope already
    spent and holds in the store (nothing when there is no store yet)."""
    from datetime import UTC, datetime

    from llmflow.planner.budget_check import budget_plan, policy_limits
    from llmflow.tracker.store_budget import RunScopes

    limits = policy_limits(policy, budget)
    if not store_exists(store_spec):
        checked = budget_plan(result, limits, now=datetime.now(UTC))
        return result.model_copy(update={"budget": checked})
    with open_store(store_spec) as store:
        day = store.day()
        scopes = RunScopes("plan", result.pipeline, tuple(sorted(policy.tags.items())))

        def spend_of(spec: LimitSpec) -> tuple[Decimal, Decimal]:
            key = scopes.scope(spec.period, day, spec.tag)
            spent, reserved, unrecorded = store.read_counter(key)
            return spent + unrecorded, reserved

        checked = budget_plan(result, limits, spend_of=spend_of, now=store.now())
    return result.model_copy(update={"budget": checked})


@app.command("plan", help=_HELP)
def plan(
    pipeline: Path = typer.Argument(..., help="Pipeline YAML file."),
    policy: Path = typer.Option(..., "--policy", "-p", help="Policy YAML file."),
    input_values: list[str] = typer.Option(
        [],
        "--input",
        "-i",
        metavar="KEY=VALUE",
        help="Value of a scalar input of the pipeline, e.g. week=2026-W48 (repeatable).",
    ),
    output_format: PlanFormat = typer.Option(
        PlanFormat.table,
        "--format",
        help="table (for people) or json (stable fields, money as decimal strings).",
    ),
    exact_tokens: bool = typer.Option(
        False,
        "--exact-tokens",
        help="Count input tokens with the free count_tokens endpoint of --backend"
        " instead of estimating them offline.",
    ),
    backend: Backend = typer.Option(
        Backend.anthropic,
        "--backend",
        help="Where --exact-tokens counts: anthropic (needs ANTHROPIC_API_KEY) or emulator"
        " (in-process, no key). Ignored without --exact-tokens.",
    ),
    budget: str | None = typer.Option(
        None,
        "--budget",
        metavar="USD",
        help="Per-run budget to check the plan against (as `llmflow run --budget`).",
    ),
    store_spec: str = store_option(
        "Run store whose per-day and per-month spend the budget check counts (as `llmflow"
        " run --store`; read only). Default: $LLMFLOW_STORE, else .llmflow."
    ),
) -> None:
    """Resolve a pipeline under a policy and price it; nothing is sent."""
    import asyncio

    from llmflow.cli._config import load_config
    from llmflow.cli._errors import reported_errors
    from llmflow.cli._inputs import table_console
    from llmflow.planner import build_plan
    from llmflow.planner.render import render_plan

    inputs = parse_inputs(input_values)
    with reported_errors():
        limit = parse_budget(budget)
        pipeline_file, policy_file, catalog = load_config(pipeline, policy, inputs)
        assert policy_file is not None  # --policy is required
        if exact_tokens:
            result = asyncio.run(_exact_plan(backend, pipeline_file, policy_file, inputs, catalog))
        else:
            result = build_plan(pipeline_file, policy_file, inputs=inputs, catalog=catalog).plan
        result = with_period_spend(result, policy_file.policy, limit, store_spec)
    if output_format is PlanFormat.json:
        typer.echo(result.to_json(), nl=False)
    else:
        table_console().print(render_plan(result))
