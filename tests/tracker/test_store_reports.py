"""The run store's read-only queries for reports: plans, usage groups, stop reasons, ledger."""

from __future__ import annotations

from datetime import timedelta
from decimal import Decimal
from typing import Any

from llmflow.catalog import TokenUsage
from llmflow.tracker.records import Response, RunInfo, StepPlan, request_key
from llmflow.tracker.store import RunStore


def _resp(step: str, i: int, *, tier: str, mode: str, cost: str, **usage: int) -> Response:
    return Response(
        step_id=step, key=request_key(step, i), item_index=i, model=f"claude-{tier}-4-5",
        tier=tier, mode=mode, usage=TokenUsage(**usage), cost=Decimal(cost),  # type: ignore[arg-type]
        stop_reason="max_tokens" if i == 0 else "end_turn", output=str(i),
    )  # fmt: skip


def _run(store: RunStore, clock: Any) -> None:
    info = RunInfo(
        pipeline="p", policy="default",
        steps=(
            StepPlan("a", 3, "claude-haiku-4-5", "haiku", "batch", Decimal("0.5"), Decimal("1")),
            StepPlan("b", 1),
        ),
    )  # fmt: skip
    store.start_run("r1", info)
    responses = [
        _resp("a", 0, tier="haiku", mode="batch", cost="0.1", input=5, cache_write_5m=100),
        _resp("a", 1, tier="haiku", mode="batch", cost="0.02", input=5, cache_read=100),
        _resp("a", 2, tier="sonnet", mode="sync", cost="0.3", input=105, output=7),
        _resp("b", 1, tier="haiku", mode="sync", cost="0.05", input=9, cache_write_1h=50),
    ]
    for r in responses:
        clock.advance(seconds=1)
        store.mark_dispatched(
            "r1", r.step_id, r.key, r.item_index, model=r.model, tier=r.tier, mode=r.mode,
            reserved=Decimal("1"),
        )  # fmt: skip
        store.record_success("r1", r)


def test_step_plans_in_plan_order(store: RunStore, clock: Any) -> None:
    _run(store, clock)
    plans = store.step_plans("r1")
    assert [p.step_id for p in plans] == ["a", "b"]
    assert plans[0] == StepPlan(
        "a", 3, "claude-haiku-4-5", "haiku", "batch", Decimal("0.5"), Decimal("1")
    )
    assert plans[1].model is None and plans[1].plan_cost_expected is None
    assert store.step_plans("nope") == []


def test_usage_groups_per_step_tier_model_mode(store: RunStore, clock: Any) -> None:
    _run(store, clock)
    groups = {(g.step_id, g.tier, g.mode): g for g in store.usage_groups("r1")}
    assert set(groups) == {("a", "haiku", "batch"), ("a", "sonnet", "sync"), ("b", "haiku", "sync")}
    batch = groups["a", "haiku", "batch"]
    assert (batch.responses, batch.reading, batch.writing) == (2, 1, 1)
    assert batch.usage == TokenUsage(input=10, cache_write_5m=100, cache_read=100)
    assert batch.cost == Decimal("0.12")
    assert groups["b", "haiku", "sync"].writing == 1  # a 1h write counts as a write
    assert sum(g.cost for g in groups.values()) == store.run_spent("r1")


def test_stop_reasons_count_succeeded_requests(store: RunStore, clock: Any) -> None:
    _run(store, clock)
    assert store.stop_reasons("r1") == {"a": {"max_tokens": 1, "end_turn": 2}, "b": {"end_turn": 1}}


def test_usage_ledger_in_time_order_with_exact_costs(store: RunStore, clock: Any) -> None:
    start = clock.now
    _run(store, clock)
    ledger = store.usage_ledger("r1")
    assert [e.step_id for e in ledger] == ["a", "a", "a", "b"]
    assert [e.cost for e in ledger] == [Decimal(x) for x in ("0.1", "0.02", "0.3", "0.05")]
    assert [e.recorded_at for e in ledger] == [start + timedelta(seconds=s) for s in (1, 2, 3, 4)]
