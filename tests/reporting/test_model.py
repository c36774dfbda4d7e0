"""ReportData built from a run the real Tracker wrote."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal
from types import ModuleType
from typing import Any

from llmflow.catalog import ZERO, load_catalog
from llmflow.reporting import build_report, load_settings
from llmflow.reporting.model import cumulative_series
from llmflow.tracker import RunStore
from llmflow.tracker.store import LedgerEntry
from llmflow.tracker.summary import baseline_cost


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
    assert len(report.series) == 1 + 15
    times = [p.at for p in report.series]
    assert times == sorted(times) and times[0] == summary.started_at


def test_cumulative_series_is_thinned_but_keeps_the_total() -> None:
    start = datetime(2026, 1, 1, tzinfo=UTC)
    ledger = [LedgerEntry(start, "s", Decimal("0.001")) for _ in range(1001)]
    points = cumulative_series(ledger, start, max_points=100)
    assert len(points) <= 102
    assert points[-1].cumulative == Decimal("1.001")


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
