"""The run summary, built from the run store.

Because it is computed from the store's usage ledger (SQL aggregates per step, never
row by row), the summary covers a run across all its resumes. Money is a decimal string
in JSON, ratios are decimal strings with four places, token counts are integers. A run
still marked ``running`` (its process died, or it is being summarised mid-run) is
reported as ``interrupted``.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from decimal import ROUND_HALF_EVEN, Decimal
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Literal

from pydantic import BaseModel, ConfigDict, PlainSerializer

from llmflow.catalog import ZERO, ModelInfo, TokenUsage, cost, format_usd

if TYPE_CHECKING:
    from llmflow.tracker.records import StepTotals
    from llmflow.tracker.store import RunStore


def _ratio_text(value: Decimal) -> str:
    return format(value.quantize(Decimal("0.0001"), rounding=ROUND_HALF_EVEN), "f")


Money = Annotated[Decimal, PlainSerializer(format_usd, return_type=str, when_used="json")]
Ratio = Annotated[Decimal, PlainSerializer(_ratio_text, return_type=str, when_used="json")]
SummaryStatus = Literal[
    "succeeded", "partial", "budget_stopped", "failed", "interrupted", "pending"
]


class _Model(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class UsageSummary(_Model):
    """Tokens by billing category; ``thinking`` is the part of ``output`` spent thinking."""

    input: int
    cache_write_5m: int
    cache_write_1h: int
    cache_read: int
    output: int
    thinking: int

    @classmethod
    def of(cls, usage: TokenUsage) -> UsageSummary:
        return cls.model_validate(usage.model_dump())


class StepSummary(_Model):
    id: str
    requests: int
    succeeded: int
    failed: int
    skipped: int
    usage: UsageSummary
    cost: Money
    plan_cost_expected: Money | None
    cache_hit_ratio: Ratio


class TotalSummary(_Model):
    cost: Money
    plan_cost_expected: Money | None
    plan_cost_max: Money | None
    cost_baseline: Money | None
    savings_pct: Decimal | None
    cache_hit_ratio: Ratio
    thinking: int


class AlertSummary(_Model):
    limit_name: str
    limit: Money
    threshold: Money
    spent: Money
    at: datetime
    message: str


class BudgetSummary(_Model):
    limit: Money | None
    spent: Money
    alerts: list[AlertSummary]


class RunSummary(_Model):
    """``summary.json``: what a run did and cost, across every session."""

    run_id: str
    pipeline: str
    policy: str
    status: SummaryStatus
    started_at: datetime
    ended_at: datetime | None
    steps: list[StepSummary]
    total: TotalSummary
    budget: BudgetSummary

    def to_json(self) -> str:
        return self.model_dump_json(indent=2) + "\n"


def baseline_cost(usage: TokenUsage, baseline: ModelInfo) -> Decimal:
    """The same tokens priced naively: every input token plain, sync, no cache, base band.

    Thinking stays in ``output`` (billed as output, never twice).
    """
    return cost(TokenUsage(input=usage.total_input, output=usage.output), baseline)


def savings_pct(*, actual: Decimal, baseline: Decimal) -> Decimal | None:
    """Percent saved against the baseline, one decimal place (half-even); None when the
    baseline is zero (a share of nothing is undefined, not 0%)."""
    if baseline <= 0:
        return None
    pct = (baseline - actual) / baseline * 100
    return pct.quantize(Decimal("0.1"), rounding=ROUND_HALF_EVEN)


def build_summary(
    store: RunStore,
    run_id: str,
    *,
    baseline: ModelInfo | None,
    steps: Sequence[StepTotals] | None = None,
) -> RunSummary:
    """The summary of ``run_id`` from the store; ``baseline`` prices ``cost_baseline``.

    ``steps`` are the run's :meth:`~llmflow.tracker.store.RunStore.step_totals` when the
    caller has them already (a report reads them once for everything it shows).
    """
    run = store.get_run(run_id)
    if steps is None:
        steps = store.step_totals(run_id)
    usage = sum((s.usage for s in steps), TokenUsage())
    spent = sum((s.cost for s in steps), ZERO)
    base = baseline_cost(usage, baseline) if baseline is not None else None
    return RunSummary(
        run_id=run.run_id,
        pipeline=run.pipeline,
        policy=run.policy,
        status="interrupted" if run.status == "running" else run.status,
        started_at=run.started_at,
        ended_at=run.ended_at,
        steps=[
            StepSummary(
                id=s.step_id,
                requests=s.requests,
                succeeded=s.succeeded,
                failed=s.failed,
                skipped=s.skipped,
                usage=UsageSummary.of(s.usage),
                cost=s.cost,
                plan_cost_expected=s.plan_cost_expected,
                cache_hit_ratio=s.usage.cache_hit_ratio,
            )
            for s in steps
        ],
        total=TotalSummary(
            cost=spent,
            plan_cost_expected=run.plan_cost_expected,
            plan_cost_max=run.plan_cost_max,
            cost_baseline=base,
            savings_pct=savings_pct(actual=spent, baseline=base) if base is not None else None,
            cache_hit_ratio=usage.cache_hit_ratio,
            thinking=usage.thinking,
        ),
        budget=BudgetSummary(
            limit=run.budget_limit,
            spent=spent,
            alerts=[
                AlertSummary(
                    limit_name=a.limit_name,
                    limit=a.limit,
                    threshold=a.threshold,
                    spent=a.spent,
                    at=a.at,
                    message=a.message,
                )
                for a in store.alerts(run_id)
            ],
        ),
    )


def write_summary(
    store: RunStore,
    run_id: str,
    *,
    baseline: ModelInfo | None,
    summary: RunSummary | None = None,
) -> Path:
    """Write ``<state_dir>/runs/<run_id>/summary.json`` atomically; returns its path."""
    summary = summary or build_summary(store, run_id, baseline=baseline)
    path = store.run_dir(run_id) / "summary.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(summary.to_json(), encoding="utf-8")
    tmp.replace(path)
    return path
