"""ReportData: everything a report shows about one run, built from the run store.

The contract figures come from the tracker's :class:`~llmflow.tracker.RunSummary`
(so every format agrees with ``summary.json``); the report adds the plan's tier,
model and mode per step, a per-tier breakdown, per-step baseline and savings,
warnings, spend today and this month, and the cumulative spend series.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime
from decimal import Decimal

from pydantic import BaseModel, ConfigDict

from llmflow.catalog import ZERO, ModelInfo, TokenUsage
from llmflow.reporting.settings import ReportSettings
from llmflow.reporting.warnings import ReportWarning, budget_stop, step_warnings
from llmflow.tracker import RunStore, RunSummary, period_start
from llmflow.tracker.store import LedgerEntry, UsageGroup
from llmflow.tracker.summary import baseline_cost, savings_pct

#: At most this many points of the cumulative spend series are kept (evenly spaced).
MAX_SERIES_POINTS = 500


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
    """What every run of the pipeline recorded today and this month (UTC)."""

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
    ledger: Sequence[LedgerEntry], start: datetime, *, max_points: int = MAX_SERIES_POINTS
) -> list[SpendPoint]:
    """Cumulative spend from ``start`` (at 0) through every billed response.

    Long ledgers are thinned to about ``max_points`` evenly spaced points; the last
    point (the run's total) is always kept.
    """
    points = [
        SpendPoint(at=min(start, ledger[0].recorded_at) if ledger else start, cumulative=ZERO)
    ]
    running = ZERO
    stride = max(1, -(-len(ledger) // max_points))
    for index, entry in enumerate(ledger):
        running += entry.cost
        if (index + 1) % stride == 0 or index == len(ledger) - 1:
            points.append(SpendPoint(at=entry.recorded_at, cumulative=running))
    return points


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
    store: RunStore, run_id: str, settings: ReportSettings, *, now: datetime | None = None
) -> ReportData:
    """The report of ``run_id`` (RunStoreError if the store has no such run)."""
    run = store.get_run(run_id)
    summary = store.summary(run_id, baseline=settings.baseline)
    plans = {p.step_id: p for p in store.step_plans(run_id)}
    totals = {t.step_id: t for t in store.step_totals(run_id)}
    groups = store.usage_groups(run_id)
    stops = store.stop_reasons(run_id)
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
                plan_cost_max=totals[s.id].plan_cost_max if s.id in totals else None,
                cache_hit_ratio=s.cache_hit_ratio, cost_baseline=base, savings_pct=saved,
                max_tokens_stops=stops.get(s.id, {}).get("max_tokens", 0),
            )
        )  # fmt: skip
        warnings += step_warnings(
            s.id,
            usage=usage,
            succeeded=s.succeeded,
            groups=mine,
            stop_reasons=stops.get(s.id, {}),
            min_hit_ratio=settings.min_hit_ratio,
            batch_hit_rate=settings.batch_hit_rate,
        )
    stopped = budget_stop(summary, pipeline_path=run.pipeline_path, policy_path=run.policy_path)
    if stopped is not None:
        warnings.insert(0, stopped)
    moment = now or datetime.now(UTC)
    day, month = period_start("day", moment), period_start("month", moment)
    spend = SpendPeriods(
        pipeline=run.pipeline,
        day_start=day,
        today=store.spend_since(day, pipeline=run.pipeline),
        month_start=month,
        month=store.spend_since(month, pipeline=run.pipeline),
    )
    return ReportData(
        summary=summary,
        policy_path=run.policy_path,
        sessions=run.sessions,
        unrecorded_usd=run.unrecorded_usd,
        tags=dict(run.tags),
        steps=steps,
        tiers=_tier_rows(groups, settings.baseline),
        spend=spend,
        series=cumulative_series(store.usage_ledger(run_id), run.started_at),
        warnings=warnings,
        min_hit_ratio=settings.min_hit_ratio,
        baseline_model=settings.baseline.id if settings.baseline else None,
        notes=list(settings.notes),
        generated_at=moment,
    )
