"""The run store's read-only queries for reports: plans, usage groups, buckets, counts."""

from __future__ import annotations

import sqlite3
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import pytest

from llmflow.catalog import TokenUsage
from llmflow.tracker import schema
from llmflow.tracker.records import Response, RunInfo, StepPlan, request_key
from llmflow.tracker.store import RunStore
from llmflow.tracker.store_queries import bucket_width_ms, money_rows, step_usage


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


def test_usage_cells_sum_the_ledger_per_group(store: RunStore, clock: Any) -> None:
    _run(store, clock)
    cells = store.usage_cells("r1")
    by_group = {(c.step_id, c.tier, c.mode): c for c in cells}
    assert len(cells) == len(by_group) == 3
    batch = by_group["a", "haiku", "batch"]
    assert (batch.responses, batch.reading, batch.writing) == (2, 1, 1)
    assert batch.usage == TokenUsage(input=10, cache_write_5m=100, cache_read=100)
    assert batch.cost == Decimal("0.12")
    assert batch.first_id < by_group["a", "sonnet", "sync"].first_id
    assert by_group["b", "haiku", "sync"].writing == 1
    assert store.usage_cells("nope") == []


def test_spend_buckets_sum_the_ledger_per_time_bucket(store: RunStore, clock: Any) -> None:
    start = clock.now
    _run(store, clock)  # four responses, one a second
    buckets = store.spend_buckets("r1", width_ms=1000)  # one bucket per second
    assert [b.last for b in buckets] == [start + timedelta(seconds=s) for s in (1, 2, 3, 4)]
    assert all(b.day == "2026-05-20" for b in buckets)
    assert [b.cost for b in buckets] == [Decimal(x) for x in ("0.1", "0.02", "0.3", "0.05")]
    [wide] = store.spend_buckets("r1", width_ms=3_600_000)
    assert (wide.last, wide.cost) == (start + timedelta(seconds=4), Decimal("0.47"))
    assert store.spend_buckets("nope", width_ms=1000) == []


def test_step_totals_from_cells_equal_the_ones_it_sums(store: RunStore, clock: Any) -> None:
    _run(store, clock)
    cells = store.usage_cells("r1")
    assert store.step_totals("r1", usage=step_usage(cells)) == store.step_totals("r1")
    assert [t.step_id for t in store.step_totals("r1")] == ["a", "b"]


def test_max_tokens_stops_and_recorded_between(store: RunStore, clock: Any) -> None:
    start = clock.now
    assert store.recorded_between("r1") is None
    _run(store, clock)
    assert store.max_tokens_stops("r1") == {"a": 1}
    span = (start + timedelta(seconds=1), start + timedelta(seconds=4))
    assert store.recorded_between("r1") == span


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


#: Amounts around the fast SQLite sum's limits: 12 decimals and more, 100 USD and more.
AWKWARD = ("0.000000000001", "0.0000000000001", "99.999999999999", "100", "1234.5", "3")


@pytest.mark.parametrize("amounts", [AWKWARD[:1] + AWKWARD[2:3] + AWKWARD[5:], AWKWARD])
def test_every_sum_of_money_is_exact(store: RunStore, clock: Any, amounts: tuple[str, ...]) -> None:
    store.start_run("r1", RunInfo(pipeline="p", policy="default", steps=()))
    for i, cost in enumerate(amounts * 3):
        clock.advance(seconds=1)
        r = _resp("a", i, tier="haiku", mode="sync", cost=cost, input=1)
        store.mark_dispatched(
            "r1", "a", r.key, i, model=r.model, tier="haiku", mode="sync", reserved=Decimal(1)
        )
        store.record_success("r1", r)
    exact = sum(Decimal(a) for a in amounts) * 3
    assert store.run_spent("r1") == exact
    assert [t.cost for t in store.step_totals("r1")] == [exact]
    assert [c.cost for c in store.usage_cells("r1")] == [exact]
    assert sum(b.cost for b in store.spend_buckets("r1", width_ms=1000)) == exact


def test_money_sums_past_the_fast_sums_range_are_exact() -> None:
    """9.3M USD in amounts below 100 USD overflow SQLite's integer picodollars."""
    conn = sqlite3.connect(":memory:")
    conn.create_aggregate("dsum", 1, schema._DecimalSum)  # type: ignore[arg-type]
    sql = (
        "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 93000)"
        " SELECT 'a', {money} FROM (SELECT '99.999999999999' AS cost_usd FROM n)"
    )
    with pytest.raises(sqlite3.OperationalError, match="overflow"):
        conn.execute(sql.format(money="sum(CAST(round(cost_usd * 1000000000000) AS INTEGER))"))
    assert money_rows(conn, "sqlite", sql, ()) == [("a", Decimal("99.999999999999") * 93_000)]
