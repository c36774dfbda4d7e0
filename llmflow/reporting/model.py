"""ReportData: everything a report shows about one run, built from the run store.

The contract figures come from the tracker's :class:`~llmflow.tracker.RunSummary`
(so every format agrees with ``summary.json``); the report adds the plan's tier,
model and mode per step, a per-tier breakdown, per-step baseline and savings,
warnings, spend today and this month (the budget counters), and the cumulative spend
series (a bounded number of time buckets). Every figure is read from the usage roll-ups
(:mod:`llmflow.tracker.store_rollup`) or by index seeks: what the report reads and holds
grows with the run's steps (and its seconds of spending), never with its requests.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime
from decimal import Decimal

from pydantic import BaseModel, ConfigDict

from llmflow.catalog import ZERO, ModelInfo, TokenUsage
from llmflow.reporting.settings import ReportSettings
from llmflow.reporting.warnings import ReportWarning, budget_stop, step_warnings
from llmflow.tracker import RunRecord, RunStore, RunSummary, period_start
from llmflow.tracker.store import UsageGroup
from llmflow.tracker.store_budget import RunScopes, day_key
from llmflow.tracker.store_queries import (
    SERIES_BUCKETS,
    SpendBucket,
    UsageCell,
    bucket_width_ms,
    step_usage,
)
from llmflow.tracker.summary import baseline_cost, build_summary, savings_pct

#: The cumulative spend series has at most this many points after its start (time
#: buckets of equal width over the run, summed in SQL).
MAX_SERIES_POINTS = SERIES_BUCKETS


class _Model(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class StepRow(_Model):
    """One step: the summary's figures plus how it ran and what it saved."""

    id: str
    tier: str
    model: str
    mode: str
    requests: int
    succeeded: int
    failed: int
    skipped: int
    usage: TokenUsage
    cost: Decimal
    plan_cost_expected: Decimal | None
    plan_cost_max: Decimal | None
    cache_hit_ratio: Decimal
    cost_baseline: Decimal | None
    savings_pct: Decimal | None
    max_tokens_stops: int


class TierRow(_Model):
    """Billed responses on one tier, model and mode, over every step."""

    tier: str
    model: str
    mode: str
    steps: list[str]
    responses: int
    usage: TokenUsage
    cost: Decimal
    cost_baseline: Decimal | None
    savings_pct: Decimal | None


class SpendPeriods(_Model):
    """What every run of the pipeline recorded today and this month (UTC), from the
    budget counters (money reserved on a day is counted on that day)."""

    pipeline: str
    day_start: datetime
    today: Decimal
    month_start: datetime
    month: Decimal


class SpendPoint(_Model):
    """Cumulative spend of the run at a moment."""

    at: datetime
    cumulative: Decimal


class ReportData(_Model):
    """A run's report, independent of the output format."""

    summary: RunSummary
    policy_path: str | None
    sessions: int
    unrecorded_usd: Decimal
    tags: dict[str, str]
    steps: list[StepRow]
    tiers: list[TierRow]
    spend: SpendPeriods
    series: list[SpendPoint]
    warnings: list[ReportWarning]
    min_hit_ratio: Decimal
    baseline_model: str | None
    notes: list[str]
    generated_at: datetime


def _joined(values: Sequence[str | None]) -> str:
    seen = list(dict.fromkeys(v for v in values if v))
    return "+".join(seen) if seen else "-"


def _savings(
    usage: TokenUsage, cost: Decimal, baseline: ModelInfo | None
) -> tuple[Decimal | None, Decimal | None]:
    if baseline is None:
        return None, None
    base = baseline_cost(usage, baseline)
    return base, savings_pct(actual=cost, baseline=base)


def cumulative_series(
    buckets: Sequence[SpendBucket], start: datetime, *, max_points: int = MAX_SERIES_POINTS
) -> list[SpendPoint]:
    """Cumulative spend from ``start`` (at 0) through the run's time buckets.

    Each point is what the run had spent when the last response of a bucket was
    recorded. More buckets than ``max_points`` (a run spread over many days) are merged
    in runs of consecutive buckets; the last point is always the run's exact total.
    """
    ordered = sorted(buckets, key=lambda b: (b.day, b.slot))
    points = [SpendPoint(at=start, cumulative=ZERO)]
    running = ZERO
    stride = max(1, -(-len(ordered) // max(1, max_points)))
    for index, bucket in enumerate(ordered):
        running += bucket.cost
        if (index + 1) % stride == 0 or index == len(ordered) - 1:
            points.append(SpendPoint(at=bucket.last, cumulative=running))
    return points


def usage_groups(cells: Sequence[UsageCell]) -> list[UsageGroup]:
    """The cells as usage groups, by step and then first use."""
    return [
        UsageGroup(
            step_id=c.step_id, tier=c.tier, model=c.model, mode=c.mode, responses=c.responses,
            reading=c.reading, writing=c.writing, usage=c.usage, cost=c.cost,
        )
        for c in sorted(cells, key=lambda c: (c.step_id, c.first_id))
    ]  # fmt: skip


def spend_series(store: RunStore, run: RunRecord) -> list[SpendPoint]:
    """The run's cumulative spend over about :data:`MAX_SERIES_POINTS` time buckets."""
    first, last = store.recorded_between(run.run_id) or (run.started_at, run.started_at)
    width = bucket_width_ms(run.started_at, run.ended_at or last, MAX_SERIES_POINTS)
    buckets = store.spend_buckets(run.run_id, width_ms=width)
    return cumulative_series(buckets, min(first, run.started_at))


def spend_periods(store: RunStore, pipeline: str, moment: datetime) -> SpendPeriods:
    """What the pipeline's runs spent on ``moment``'s UTC day and month, as the budget
    counts it (the store's ``day/…`` and ``month/…`` counters of the pipeline)."""
    scopes = RunScopes(run_id="", pipeline=pipeline)
    day = day_key(moment)
    return SpendPeriods(
        pipeline=pipeline,
        day_start=period_start("day", moment),
        today=store.read_counter(scopes.scope("day", day))[0],
        month_start=period_start("month", moment),
        month=store.read_counter(scopes.scope("month", day))[0],
    )


def _tier_rows(groups: Sequence[UsageGroup], baseline: ModelInfo | None) -> list[TierRow]:
    merged: dict[tuple[str, str, str], list[UsageGroup]] = {}
    for g in groups:
        merged.setdefault((g.tier or "-", g.model, g.mode), []).append(g)
    rows = []
    for (tier, model, mode), gs in merged.items():
        usage = sum((g.usage for g in gs), TokenUsage())
        cost = sum((g.cost for g in gs), ZERO)
        base, saved = _savings(usage, cost, baseline)
        rows.append(
            TierRow(
                tier=tier, model=model, mode=mode,
                steps=list(dict.fromkeys(g.step_id for g in gs)),
                responses=sum(g.responses for g in gs), usage=usage, cost=cost,
                cost_baseline=base, savings_pct=saved,
            )
        )  # fmt: skip
    return sorted(rows, key=lambda r: (-r.cost, r.tier, r.model, r.mode))


def build_report(
    store: RunStore,
    run_id: str,
    settings: ReportSettings,
    *,
    now: datetime | None = None,
    series: bool = True,
) -> ReportData:
    """The report of ``run_id`` (RunStoreError if the store has no such run).

    Every figure comes from the run's usage roll-ups (the ledger summed per step,
    tier, model and mode, and, unless ``series`` is False (only HTML draws it), per
    second of spending, grouped into time buckets), counts of its requests per step
    and status, and the budget counters; nothing is read per request.
    """
    run = store.get_run(run_id)
    cells = store.usage_cells(run_id)
    totals = store.step_totals(run_id, usage=step_usage(cells))
    summary = build_summary(store, run_id, baseline=settings.baseline, steps=totals)
    plans = {p.step_id: p for p in store.step_plans(run_id)}
    maxima = {t.step_id: t.plan_cost_max for t in totals}
    groups = usage_groups(cells)
    stops = store.max_tokens_stops(run_id)
    steps: list[StepRow] = []
    warnings: list[ReportWarning] = []
    for s in summary.steps:
        plan = plans.get(s.id)
        mine = [g for g in groups if g.step_id == s.id]
        usage = TokenUsage.model_validate(s.usage.model_dump())
        base, saved = _savings(usage, s.cost, settings.baseline)
        steps.append(
            StepRow(
                id=s.id,
                tier=_joined([plan.tier if plan else None, *(g.tier for g in mine)]),
                model=_joined([plan.model if plan else None, *(g.model for g in mine)]),
                mode=_joined([plan.mode if plan else None, *(g.mode for g in mine)]),
                requests=s.requests, succeeded=s.succeeded, failed=s.failed, skipped=s.skipped,
                usage=usage, cost=s.cost, plan_cost_expected=s.plan_cost_expected,
                plan_cost_max=maxima.get(s.id),
                cache_hit_ratio=s.cache_hit_ratio, cost_baseline=base, savings_pct=saved,
                max_tokens_stops=stops.get(s.id, 0),
            )
        )  # fmt: skip
        warnings += step_warnings(
            s.id,
            usage=usage,
            succeeded=s.succeeded,
            groups=mine,
            max_tokens=stops.get(s.id, 0),
            min_hit_ratio=settings.min_hit_ratio,
            batch_hit_rate=settings.batch_hit_rate,
        )
    stopped = budget_stop(summary, pipeline_path=run.pipeline_path, policy_path=run.policy_path)
    if stopped is not None:
        warnings.insert(0, stopped)
    moment = now or datetime.now(UTC)
    return ReportData(
        summary=summary,
        policy_path=run.policy_path,
        sessions=run.sessions,
        unrecorded_usd=run.unrecorded_usd,
        tags=dict(run.tags),
        steps=steps,
        tiers=_tier_rows(groups, settings.baseline),
        spend=spend_periods(store, run.pipeline, moment),
        series=spend_series(store, run) if series else [],
        warnings=warnings,
        min_hit_ratio=settings.min_hit_ratio,
        baseline_model=settings.baseline.id if settings.baseline else None,
        notes=list(settings.notes),
        generated_at=moment,
    )
