"""The report's warnings: low cache hit ratio, truncated outputs, batch cache shortfall."""

from __future__ import annotations

import os
import shlex
from collections.abc import Sequence
from decimal import ROUND_CEILING, ROUND_FLOOR, Decimal
from typing import Literal

from pydantic import BaseModel, ConfigDict

from llmflow.catalog import TokenUsage, format_usd
from llmflow.tracker.store import UsageGroup
from llmflow.tracker.summary import RunSummary

#: A step warns when at least this share of its succeeded outputs hit max_tokens.
MAX_TOKENS_SHARE = Decimal("0.10")
#: A batch step warns when its cache reads are under this share of what was planned.
BATCH_SHORTFALL_SHARE = Decimal("0.5")

WarningKind = Literal["low_cache_hit_ratio", "max_tokens", "batch_cache_shortfall", "budget_stop"]


class ReportWarning(BaseModel):
    """One thing in a run worth a look, with the step it concerns."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    kind: WarningKind
    step_id: str
    message: str


def pct(value: Decimal) -> str:
    """``0.1234`` → ``"12.3%"``."""
    return f"{(value * 100).quantize(Decimal('0.1'))}%"


def low_hit_ratio(
    step_id: str, usage: TokenUsage, responses: int, threshold: Decimal
) -> ReportWarning | None:
    """Warn when a step with at least two billed responses reads too little from cache.

    A single response can never read a prefix it writes itself, so one-request steps
    are not judged.
    """
    if responses < 2 or usage.total_input == 0 or usage.cache_hit_ratio >= threshold:
        return None
    message = (
        f"{step_id}: cache hit ratio {pct(usage.cache_hit_ratio)} is under {pct(threshold)}"
        f" (cache.min_hit_ratio_warning) over {responses} responses"
    )
    if usage.cache_read == 0 and usage.cache_write == 0:
        message += (
            "; nothing was cached: the shared prefix may be under the model's minimum"
            " cacheable length, or caching is off"
        )
    elif usage.cache_read == 0:
        message += "; the prefix was written but never read (expired, or changed per request)"
    return ReportWarning(kind="low_cache_hit_ratio", step_id=step_id, message=message)


def max_tokens_stops(step_id: str, stops: int, succeeded: int) -> ReportWarning | None:
    """Warn when ≥ 10% of a step's succeeded outputs stopped at max_tokens (truncated)."""
    if succeeded == 0 or stops == 0 or Decimal(stops) / succeeded < MAX_TOKENS_SHARE:
        return None
    share = pct(Decimal(stops) / succeeded)
    return ReportWarning(
        kind="max_tokens",
        step_id=step_id,
        message=(
            f"{step_id}: {stops} of {succeeded} outputs ({share}) stopped at max_tokens"
            " and are truncated; raise max_tokens for this step or its route"
        ),
    )


def batch_shortfall(
    step_id: str, groups: Sequence[UsageGroup], hit_rate: Decimal
) -> ReportWarning | None:
    """Warn when a batch step read from cache well under what the planner assumed.

    The run store keeps each step's planned cost, not its planned cache reads, so the
    plan is rebuilt the way the planner prices batches: of ``n`` batch requests,
    ``min(n - 1, floor(hit_rate · n))`` read the cached prefix (the policy's
    ``cache.batch_hit_rate``). Planned tokens are that count times the average cached
    prefix the step actually wrote or read. Steps that never touched the cache were
    planned without one and are not judged.
    """
    batch = [g for g in groups if g.mode == "batch"]
    n = sum(g.responses for g in batch)
    reading = sum(g.reading for g in batch)
    touching = reading + sum(g.writing for g in batch)
    usage = sum((g.usage for g in batch), TokenUsage())
    if n < 2 or touching == 0:
        return None
    planned = min(n - 1, int((hit_rate * n).to_integral_value(rounding=ROUND_FLOOR)))
    if planned <= 0 or Decimal(reading) >= BATCH_SHORTFALL_SHARE * planned:
        return None
    prefix = (usage.cache_read + usage.cache_write) // touching
    return ReportWarning(
        kind="batch_cache_shortfall",
        step_id=step_id,
        message=(
            f"{step_id}: batch cache reads fell short of plan: {usage.cache_read:,} cache_read"
            f" tokens vs ~{planned * prefix:,} planned ({reading} of {n} batch requests hit,"
            f" plan expected {planned} at cache.batch_hit_rate {hit_rate}); cache hits in"
            " batches are best effort: lower batch_hit_rate or warm the prefix first"
        ),
    )


def step_warnings(
    step_id: str,
    *,
    usage: TokenUsage,
    succeeded: int,
    groups: Sequence[UsageGroup],
    max_tokens: int,
    min_hit_ratio: Decimal,
    batch_hit_rate: Decimal,
) -> list[ReportWarning]:
    """Every warning about one step, in a fixed order."""
    responses = sum(g.responses for g in groups)
    found = [
        low_hit_ratio(step_id, usage, responses, min_hit_ratio),
        max_tokens_stops(step_id, max_tokens, succeeded),
        batch_shortfall(step_id, groups, batch_hit_rate),
    ]
    return [w for w in found if w is not None]


def budget_stop(
    summary: RunSummary, *, pipeline_path: str | None, policy_path: str | None
) -> ReportWarning | None:
    """For a run the budget stopped: what it spent, what did not run, how to finish it."""
    if summary.status != "budget_stopped":
        return None
    planned = sum(s.requests for s in summary.steps)
    done = sum(s.succeeded for s in summary.steps)
    unfinished = [s.id for s in summary.steps if s.succeeded < s.requests]
    limit = summary.budget.limit
    spent = f"spent ${format_usd(summary.budget.spent)}"
    spent += f" of the ${format_usd(limit)} per-run limit" if limit is not None else ""
    message = (
        f"the run stopped at its budget before overspending ({spent}; a per-day or"
        f" per-month budget of the policy may be what stopped it): {planned - done} of"
        f" {planned} requests did not run (steps: {', '.join(unfinished) or '-'})."
    )
    needed = summary.total.plan_cost_max
    if needed is not None and pipeline_path and policy_path:
        enough = needed.quantize(Decimal("0.01"), rounding=ROUND_CEILING)
        command = shlex.join(
            ["llmflow", "run", _shown(pipeline_path), "--policy", _shown(policy_path),
             "--run-id", summary.run_id, "--budget", format_usd(enough)]
        )  # fmt: skip
        message += (
            f" Finished requests are never paid twice; to finish, resume with a budget that"
            f" covers the plan's worst case: {command} (add --state-dir if you used one),"
            " or raise the policy's budget."
        )
    return ReportWarning(kind="budget_stop", step_id="run", message=message)


def _shown(path: str) -> str:
    try:
        return os.path.relpath(path)
    except ValueError:
        return path
