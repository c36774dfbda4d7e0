"""ReportData built from a run the real Tracker wrote."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal
from types import ModuleType
from typing import Any

from llmflow.catalog import ZERO, format_usd, load_catalog
from llmflow.reporting import build_report, load_settings
from llmflow.reporting.model import MAX_SERIES_POINTS, cumulative_series
from llmflow.tracker import RunInfo, RunStore, StepPlan
from llmflow.tracker.schema import timestamp
from llmflow.tracker.store_queries import SpendBucket
from llmflow.tracker.store_rollup import rebuild
from llmflow.tracker.summary import baseline_cost

HAIKU = "claude-haiku-4-5"


def _report(store: RunStore, clock: Any, builders: ModuleType, **kw: Any) -> Any:
    summary = builders.triage_run(store, clock, **kw)
    settings = load_settings("tests/fixtures/policies/basic.yaml", load_catalog())
    return summary, build_report(store, summary.run_id, settings, now=clock.now)


def test_steps_agree_with_the_summary(store: RunStore, clock: Any, builders: ModuleType) -> None:
    summary, report = _report(store, clock, builders)
    assert report.summary == summary
    assert [s.id for s in report.steps] == ["classify", "extract", "digest"]
    for row, s in zip(report.steps, summary.steps, strict=True):
        assert (row.requests, row.succeeded, row.failed, row.skipped) == (
            s.requests,
            s.succeeded,
            s.failed,
            s.skipped,
        )
        assert row.cost == s.cost and row.plan_cost_expected == s.plan_cost_expected
        assert row.usage.model_dump() == s.usage.model_dump()
        assert row.cache_hit_ratio == s.cache_hit_ratio
    classify = report.steps[0]
    assert (classify.tier, classify.model, classify.mode) == ("haiku", "claude-haiku-4-5", "batch")
    assert classify.plan_cost_max == Decimal("0.03")
    assert report.steps[1].max_tokens_stops == 1


def test_baseline_and_savings_per_step_sum_to_the_total(
    store: RunStore, clock: Any, builders: ModuleType
) -> None:
    summary, report = _report(store, clock, builders)
    assert report.baseline_model == "claude-sonnet-4-6"
    for row in report.steps:
        assert row.cost_baseline == baseline_cost(row.usage, builders.SONNET)
    assert sum(r.cost_baseline for r in report.steps) == summary.total.cost_baseline
    digest = report.steps[2]  # sonnet, no cache: baseline is what it cost
    assert digest.cost_baseline == digest.cost and digest.savings_pct == Decimal("0.0")


def test_tier_rows_split_by_mode_and_cover_every_cent(
    store: RunStore, clock: Any, builders: ModuleType
) -> None:
    summary, report = _report(store, clock, builders)
    keys = [(t.tier, t.mode) for t in report.tiers]
    assert sorted(keys) == [("haiku", "batch"), ("haiku", "sync"), ("sonnet", "sync")]
    assert sum(t.cost for t in report.tiers) == summary.total.cost
    assert sum(t.responses for t in report.tiers) == 15  # the failed request was not billed
    assert [t.cost for t in report.tiers] == sorted((t.cost for t in report.tiers), reverse=True)


def test_cumulative_series_runs_from_zero_to_the_total(
    store: RunStore, clock: Any, builders: ModuleType
) -> None:
    summary, report = _report(store, clock, builders)
    values = [p.cumulative for p in report.series]
    assert values[0] == ZERO and values[-1] == summary.total.cost
    assert values == sorted(values)
    # a 38 s run: every recording moment is its own bucket (the batch's 10 results were
    # recorded at once, then 4 extract responses and the digest one by one)
    assert len(report.series) == 1 + 6
    times = [p.at for p in report.series]
    assert times == sorted(times) and times[0] == summary.started_at
    assert times[-1] == clock.now  # the digest, recorded last


def test_a_report_without_its_series_is_otherwise_the_same(
    store: RunStore, clock: Any, builders: ModuleType
) -> None:
    summary, report = _report(store, clock, builders)
    settings = load_settings("tests/fixtures/policies/basic.yaml", load_catalog())
    bare = build_report(store, summary.run_id, settings, now=clock.now, series=False)
    assert bare.series == [] and len(report.series) > 1
    assert bare.model_copy(update={"series": report.series}) == report


def _bucket(at: datetime, slot: int, cost: str) -> SpendBucket:
    return SpendBucket(at.strftime("%Y-%m-%d"), slot, at, Decimal(cost))


def test_cumulative_series_merges_buckets_beyond_max_points_and_keeps_the_total() -> None:
    start = datetime(2026, 1, 1, tzinfo=UTC)
    buckets = [_bucket(start + timedelta(seconds=i), i, "0.0000001") for i in range(1001)]
    buckets[5] = _bucket(start + timedelta(seconds=5), 5, "0.3000001")
    points = cumulative_series(buckets[::-1], start, max_points=100)  # in any order
    assert len(points) <= 101
    assert points[-1].cumulative == Decimal("0.3001001")
    assert points[-1].at == start + timedelta(seconds=1000)
    assert [p.cumulative for p in points] == sorted(p.cumulative for p in points)


def test_series_of_many_responses_is_bounded_and_ends_at_the_exact_total(
    store: RunStore, clock: Any
) -> None:
    """5,000 responses over five UTC days (bursts and a trickle), costs of up to 10
    decimal places, the run still open: at most MAX_SERIES_POINTS + 1 points, the last one the run's exact total."""
    start = clock.now = datetime(2026, 5, 18, 22, 0, tzinfo=UTC)
    info = RunInfo(
        pipeline="big", policy="basic",
        steps=(StepPlan("a", 3000, HAIKU, "haiku", "batch"), StepPlan("b", 2000, HAIKU, "haiku", "sync")),
    )  # fmt: skip
    store.start_run("big", info)
    rows, expected = [], Decimal(0)
    for i in range(5000):
        step = "a" if i < 3000 else "b"
        # a: three bursts of 1,000 batch results; b: one response every 97 s after them
        at = start + (timedelta(hours=20 * (i // 1000)) if step == "a" else timedelta(
            hours=45, seconds=97 * (i - 3000)
        ))  # fmt: skip
        cost = Decimal(f"0.{i % 7:01d}{i:06d}{i % 13:03d}").normalize()
        expected += cost
        rows.append((
            "big", step, f"{step}-{i}", i, 1, HAIKU, "haiku", "batch" if step == "a" else "sync",
            10, 0, 0, 5000 if i % 3 else 0, 4, 0, format_usd(cost), timestamp(at),
        ))  # fmt: skip
    with store.db.transaction() as c:
        c.executemany(
            "INSERT INTO usage (run_id, step_id, key, item_index, attempt, model, tier, mode,"
            " input_tokens, cache_write_5m, cache_write_1h, cache_read, output_tokens,"
            " thinking_tokens, cost_usd, recorded_at)"
            " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            rows,
        )
        rebuild(c, ["big"])  # the roll-ups of ledger rows inserted directly
    clock.now = start + timedelta(days=3)
    settings = load_settings(None, load_catalog())
    report = build_report(store, "big", settings, now=clock.now)
    assert 2 < len(report.series) <= MAX_SERIES_POINTS + 1
    values = [p.cumulative for p in report.series]
    assert values[0] == ZERO and values == sorted(values)
    assert values[-1] == expected == report.summary.total.cost == store.run_spent("big")
    assert all(isinstance(v, Decimal) for v in values)
    times = [p.at for p in report.series]
    assert times == sorted(times) and times[0] == start
    assert times[-1] == start + timedelta(hours=45, seconds=97 * 1999)
    assert sum(t.responses for t in report.tiers) == 5000
    [batch] = [t for t in report.tiers if t.mode == "batch"]
    assert batch.responses == 3000 and batch.cost == sum(
        (Decimal(r[14]) for r in rows if r[1] == "a"), ZERO
    )


def test_spend_today_and_this_month_count_the_pipeline_only(
    store: RunStore, clock: Any, builders: ModuleType
) -> None:
    clock.now = datetime(2026, 4, 30, 23, 0, tzinfo=UTC)  # last month
    builders.simple_run(store, clock, "old", pipeline="triage", responses=2)
    clock.now = datetime(2026, 5, 2, 9, 0, tzinfo=UTC)  # this month, not today
    earlier = builders.simple_run(store, clock, "earlier", pipeline="triage", responses=3)
    clock.now = datetime(2026, 5, 20, 8, 0, tzinfo=UTC)  # today, another pipeline
    builders.simple_run(store, clock, "other", pipeline="elsewhere", responses=4)
    clock.now = datetime(2026, 5, 20, 12, 0, tzinfo=UTC)
    summary, report = _report(store, clock, builders)
    assert report.spend.pipeline == "triage"
    assert report.spend.today == summary.total.cost
    assert report.spend.month == summary.total.cost + earlier
    assert report.spend.day_start == datetime(2026, 5, 20, tzinfo=UTC)
    assert report.spend.month_start == datetime(2026, 5, 1, tzinfo=UTC)


def test_budget_alert_reaches_the_report(store: RunStore, clock: Any, builders: ModuleType) -> None:
    _, report = _report(store, clock, builders)
    alerts = report.summary.budget.alerts
    assert [a.limit_name for a in alerts] == ["run"]
    assert alerts[0].threshold == Decimal("0.03")
