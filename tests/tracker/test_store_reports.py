"""The run store's read-only queries for reports: plans, usage groups and cells, counts."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

from llmflow.catalog import TokenUsage
from llmflow.tracker.records import Response, RunInfo, StepPlan, request_key
from llmflow.tracker.store import RunStore
from llmflow.tracker.store_queries import bucket_width_ms, step_usage


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


def test_usage_cells_sum_the_ledger_per_group_and_time_bucket(store: RunStore, clock: Any) -> None:
    start = clock.now
    _run(store, clock)  # four responses, one a second
    cells = store.usage_cells("r1", width_ms=1000)  # one bucket per second
    assert sorted((c.step_id, c.last) for c in cells) == [
        ("a", start + timedelta(seconds=1)), ("a", start + timedelta(seconds=2)),
        ("a", start + timedelta(seconds=3)), ("b", start + timedelta(seconds=4)),
    ]  # fmt: skip
    assert all(c.day == "2026-05-20" and c.first == c.last for c in cells)
    assert len({c.bucket for c in cells}) == 4
    assert sorted(c.cost for c in cells) == [Decimal(x) for x in ("0.02", "0.05", "0.1", "0.3")]
    wide = store.usage_cells("r1", width_ms=3_600_000)  # one bucket: per group only
    by_group = {(c.step_id, c.tier, c.mode): c for c in wide}
    assert len(wide) == len(by_group) == 3
    batch = by_group["a", "haiku", "batch"]
    assert (batch.responses, batch.reading, batch.writing) == (2, 1, 1)
    assert batch.usage == TokenUsage(input=10, cache_write_5m=100, cache_read=100)
    assert batch.cost == Decimal("0.12")
    assert (batch.first, batch.last) == (start + timedelta(seconds=1), start + timedelta(seconds=2))
    assert by_group["b", "haiku", "sync"].writing == 1
    assert store.usage_cells("nope", width_ms=1000) == []


def test_step_totals_from_cells_equal_the_ones_it_sums(store: RunStore, clock: Any) -> None:
    _run(store, clock)
    cells = store.usage_cells("r1", width_ms=1)
    assert store.step_totals("r1", usage=step_usage(cells)) == store.step_totals("r1")
    assert [t.step_id for t in store.step_totals("r1")] == ["a", "b"]


def test_max_tokens_stops_and_last_recorded(store: RunStore, clock: Any) -> None:
    start = clock.now
    assert store.last_recorded("r1") is None
    _run(store, clock)
    assert store.max_tokens_stops("r1") == {"a": 1}
    assert store.last_recorded("r1") == start + timedelta(seconds=4)


def test_runs_spent_in_one_read(store: RunStore, clock: Any) -> None:
    _run(store, clock)
    store.start_run("r2", RunInfo(pipeline="p", policy="default", steps=()))
    spent = store.runs_spent(["r1", "r2", "nope"])
    assert spent == {"r1": Decimal("0.47"), "r2": 0, "nope": 0}
    assert store.run_spent("r1") == Decimal("0.47")


def test_bucket_width_covers_the_span_in_about_the_number_of_buckets() -> None:
    start = datetime(2026, 5, 20, 23, 0, tzinfo=UTC)
    assert bucket_width_ms(start, start + timedelta(hours=1), 200) == 18_000
    assert bucket_width_ms(start, start, 200) == 1
    assert bucket_width_ms(start, start - timedelta(seconds=5), 200) == 1
    assert bucket_width_ms(start, start + timedelta(milliseconds=1001), 200) == 6
