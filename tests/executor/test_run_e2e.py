"""`llmflow run` end to end on the emulator: what was billed is exactly what was recorded."""

from __future__ import annotations

import json
from collections.abc import Callable
from decimal import Decimal
from pathlib import Path

from llmflow.catalog import request_cost
from llmflow.emulator.config import EmulatorConfig, parse_faults
from llmflow.tracker import RunStore

from .conftest import CATALOG, Emulated, Runner, ledger_cost, ledger_usage, summary_usage  # type: ignore[import-not-found]


async def test_warm_fan_out_writes_the_shared_prefix_once(
    emulated: Callable[[EmulatorConfig], Emulated], run_pipeline: Runner
) -> None:
    emu = emulated(EmulatorConfig(latency_ms=20))
    outcome = await run_pipeline(emu, "fanout.yaml")
    assert outcome.status == "succeeded" and outcome.exit_code == 0
    ledger = await emu.ledger()
    writes = [e for e in ledger["requests"] if e["usage"]["cache_creation_input_tokens"] > 0]
    reads = [e for e in ledger["requests"] if e["usage"]["cache_read_input_tokens"] > 0]
    assert len(ledger["requests"]) == 30
    assert len(writes) == 1 and len(reads) == 29
    assert summary_usage(outcome) == ledger_usage(ledger)
    assert Decimal(outcome.summary.total.cost) == ledger_cost(ledger)


async def test_chain_batch_structured_and_fan_out_over_outputs(
    emulated: Callable[[EmulatorConfig], Emulated], run_pipeline: Runner
) -> None:
    emu = emulated(EmulatorConfig())
    outcome = await run_pipeline(emu, "chain.yaml")
    assert outcome.status == "succeeded", outcome
    summary = json.loads(outcome.summary_path.read_text())
    steps = {s["id"]: s for s in summary["steps"]}
    assert {k: v["succeeded"] for k, v in steps.items()} == {
        "classify": 30, "extract": 30, "digest": 1, "per_label": 30,
    }  # fmt: skip
    ledger = await emu.ledger()
    batch = [e for e in ledger["requests"] if e["service_tier"] == "batch"]
    assert len(batch) == 30  # classify went through the Batches API
    assert summary_usage(outcome) == ledger_usage(ledger)
    assert Decimal(outcome.summary.total.cost) == ledger_cost(ledger)
    outputs = outcome.summary_path.parent / "outputs"
    extracted = [json.loads(line) for line in (outputs / "extract.jsonl").read_text().splitlines()]
    assert len(extracted) == 30
    for row in extracted:
        record = row.get("output", row)
        assert set(record) >= {"product", "severity", "users"}
        assert record["severity"] in {"low", "medium", "high"}


async def test_early_abort_records_partial_output_and_counts_the_rest_up_to_max_tokens(
    emulated: Callable[[EmulatorConfig], Emulated], run_pipeline: Runner, tmp_path: Path
) -> None:
    emu = emulated(EmulatorConfig())
    outcome = await run_pipeline(emu, "abort.yaml")
    assert outcome.status == "succeeded"
    ledger = await emu.ledger()
    (billed,) = ledger["requests"]
    recorded = outcome.summary.steps[0].usage
    # The emulator generated the whole response; the client stopped reading after ~10
    # tokens and records the bytes received as an upper bound of the tokens it saw.
    assert 10 <= recorded.output < billed["usage"]["output_tokens"] <= 300
    row = (outcome.summary_path.parent / "outputs" / "streamed.jsonl").read_text()
    assert row.strip()
    # What the API may bill beyond that (up to max_tokens: 300) is unrecorded spend, so
    # recorded + unrecorded covers what was billed, and the budget settled no lower.
    model = CATALOG.get(billed["model"])
    assert model is not None
    usage = summary_usage(outcome)  # the one step's
    whole = usage.model_copy(update={"output": 300})
    store = RunStore.open(tmp_path / "state")
    try:
        run = store.get_run("r1")
    finally:
        store.close()
    assert run.unrecorded_usd == request_cost(whole, model) - request_cost(usage, model) > 0
    paid = Decimal(outcome.summary.total.cost)
    assert paid < ledger_cost(ledger) <= paid + run.unrecorded_usd


async def test_faults_are_retried_and_the_tracker_loses_nothing(
    emulated: Callable[[EmulatorConfig], Emulated], run_pipeline: Runner
) -> None:
    faults = parse_faults("rate_limit=0.2,overloaded=0.1,server_error=0.1")
    emu = emulated(EmulatorConfig(faults=faults, seed=11, retry_after_seconds=0))
    outcome = await run_pipeline(emu, "fanout.yaml")
    assert outcome.status in ("succeeded", "partial")
    ledger = await emu.ledger()
    assert summary_usage(outcome) == ledger_usage(ledger)
    assert Decimal(outcome.summary.total.cost) == ledger_cost(ledger)


async def test_budget_stop_then_resume_pays_each_request_once(
    emulated: Callable[[EmulatorConfig], Emulated], run_pipeline: Runner
) -> None:
    emu = emulated(EmulatorConfig(latency_ms=5))
    stopped = await run_pipeline(emu, "fanout.yaml", run_id="b", budget=Decimal("0.25"))
    assert stopped.status == "budget_stopped" and stopped.exit_code == 3
    spent = Decimal(stopped.summary.total.cost)
    assert 0 < spent <= Decimal("0.25")
    done_first = sum(s.succeeded for s in stopped.summary.steps)
    assert 0 < done_first < 30
    resumed = await run_pipeline(emu, "fanout.yaml", run_id="b", budget=Decimal("5"))
    assert resumed.status == "succeeded"
    ledger = await emu.ledger()
    assert len(ledger["requests"]) == 30  # nothing finished was sent again
    assert summary_usage(resumed) == ledger_usage(ledger)
    assert Decimal(resumed.summary.total.cost) == ledger_cost(ledger)


async def test_downgrade_moves_the_rest_to_the_cheaper_tier(
    emulated: Callable[[EmulatorConfig], Emulated], run_pipeline: Runner
) -> None:
    emu = emulated(EmulatorConfig(latency_ms=5))
    outcome = await run_pipeline(emu, "fanout.yaml", "downgrade.yaml", budget=Decimal("0.2"))
    ledger = await emu.ledger()
    models = [e["model"] for e in ledger["requests"]]
    assert "claude-sonnet-4-6" in models and "claude-haiku-4-5" in models
    assert models.index("claude-haiku-4-5") > 0
    assert Decimal(outcome.summary.total.cost) <= Decimal("0.2")
    assert Decimal(outcome.summary.total.cost) == ledger_cost(ledger)


async def test_in_flight_upper_bounds_do_not_stop_a_run_the_budget_covers(
    emulated: Callable[[EmulatorConfig], Emulated], run_pipeline: Runner
) -> None:
    # 8 requests in flight reserve ~8 x $0.17 (byte-level upper bounds of a 45 KB prefix
    # on sonnet) = $1.36, far above $0.45; their actual cost is ~$0.006 each after the
    # first (~$0.23 in all). A refused dispatch waits for in-flight requests to settle
    # instead of stopping; the last request still needs its whole $0.17 bound free.
    emu = emulated(EmulatorConfig(latency_ms=5))
    outcome = await run_pipeline(emu, "fanout.yaml", budget=Decimal("0.45"))
    assert outcome.status == "succeeded"
    assert Decimal(outcome.summary.total.cost) <= Decimal("0.45")
    assert Decimal(outcome.summary.total.cost) == ledger_cost(await emu.ledger())
