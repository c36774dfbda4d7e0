"""Today's API end to end on the emulator: every example under every shipped policy,
structured output through output_config.format, and price bands in the tracker."""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Callable
from decimal import Decimal
from pathlib import Path

import pytest

from llmflow.catalog import TokenUsage, load_catalog
from llmflow.emulator.config import EmulatorConfig
from llmflow.emulator.ledger import entry_usage
from llmflow.planner.model_checks import check_models
from llmflow.spec.loader import load_pair

from .conftest import (  # type: ignore[import-not-found]
    Emulated,
    Runner,
    ledger_cost,
    ledger_usage,
    summary_usage,
)

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = sorted((ROOT / "pipelines").glob("*.yaml"))
POLICIES = sorted((ROOT / "policies").glob("*.yaml"))
CATALOG = load_catalog()
MTOK = Decimal(1_000_000)


@pytest.mark.parametrize("policy", POLICIES, ids=lambda p: p.stem)
@pytest.mark.parametrize("pipeline", EXAMPLES, ids=lambda p: p.stem)
async def test_every_example_runs_under_every_shipped_policy(
    emulated: Callable[[EmulatorConfig], Emulated],
    run_pipeline: Runner,
    pipeline: Path,
    policy: Path,
) -> None:
    pipeline_file, policy_file = load_pair(pipeline, policy, inputs={})
    assert policy_file is not None
    report = check_models(pipeline_file, policy_file, CATALOG, today=dt.date(2026, 11, 30))
    assert report.errors == [] and report.warnings == []
    emu = emulated(EmulatorConfig(seed=3))
    outcome = await run_pipeline(emu, pipeline, policy)
    assert outcome.status == "succeeded", outcome
    ledger = await emu.ledger()
    assert summary_usage(outcome) == ledger_usage(ledger)
    assert Decimal(outcome.summary.total.cost) == ledger_cost(ledger)
    assert Decimal(outcome.summary.total.cost) <= Decimal(outcome.summary.total.plan_cost_max)


async def test_structured_output_on_sonnet_5_5_goes_through_output_config_format(
    emulated: Callable[[EmulatorConfig], Emulated], run_pipeline: Runner
) -> None:
    emu = emulated(EmulatorConfig())
    outcome = await run_pipeline(emu, "structured_sonnet55.yaml", "policy_sonnet55.yaml")
    assert outcome.status == "succeeded", outcome
    outputs = outcome.summary_path.parent / "outputs" / "extract.jsonl"
    rows = [json.loads(line) for line in outputs.read_text().splitlines()]
    assert rows
    for row in rows:
        record = row.get("output", row)
        assert set(record) == {"product", "severity"}
        assert record["severity"] in {"low", "medium", "high"}
    ledger = await emu.ledger()
    assert {e["model"] for e in ledger["requests"]} == {"claude-sonnet-5-5"}
    assert all(entry_usage(e).thinking > 0 for e in ledger["requests"])  # Sonnet 5.5 thinks


async def test_a_haiku_5_5_request_over_100k_tokens_is_recorded_at_the_higher_band(
    emulated: Callable[[EmulatorConfig], Emulated], run_pipeline: Runner, tmp_path: Path
) -> None:
    (tmp_path / "doc.txt").write_text("abcd " * 116_000, encoding="utf-8")
    (tmp_path / "pipeline.yaml").write_text(
        json.dumps(
            {
                "name": "long",
                "inputs": {"doc": {"type": "text", "path": "doc.txt"}},
                "steps": {
                    "read": {
                        "task": "work",
                        "system": [{"text": "{{ inputs.doc }}", "cache": False}],
                        "prompt": "Summarise.",
                    }
                },
            }
        )
    )
    (tmp_path / "policy.yaml").write_text(
        json.dumps(
            {
                "name": "p",
                "tiers": {"haiku": {"model": "claude-haiku-5-5"}},
                "routes": {"work": {"tier": "haiku", "max_tokens": 300, "thinking": "disabled"}},
                "baseline_tier": "haiku",
            }
        )
    )
    emu = emulated(EmulatorConfig())
    outcome = await run_pipeline(emu, tmp_path / "pipeline.yaml", tmp_path / "policy.yaml")
    assert outcome.status == "succeeded", outcome
    (entry,) = (await emu.ledger())["requests"]
    usage: TokenUsage = entry_usage(entry)
    assert usage.total_input > 100_000
    high_band = (usage.input * Decimal("0.50") + usage.output * Decimal("2.50")) / MTOK
    assert Decimal(outcome.summary.total.cost) == high_band
    # the plan expected the band too: >100k tokens at the base band would be < $0.015
    assert Decimal(outcome.summary.steps[0].plan_cost_expected) >= Decimal("0.05")
