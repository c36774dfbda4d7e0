"""Which budget limits apply to a run, and whether a plan fits what they have left.

:func:`policy_limits` is the one place that turns a policy's ``budget`` (and
``--budget``) into limits: the executor reserves against them, ``plan`` shows them.
:func:`budget_plan` prices the plan against each limit with what was already spent,
reserved or left unrecorded in its period (read from the store by the caller).
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from decimal import Decimal

from llmflow.catalog import ZERO, format_usd
from llmflow.planner.plan import BudgetPlan, LimitPlan, Plan
from llmflow.spec.policy import Policy
from llmflow.tracker import LimitSpec
from llmflow.tracker.tracker import resets_at

#: ``(period, tag) -> (spent incl. unrecorded, reserved)`` of the limit's scope now.
SpendOf = Callable[[LimitSpec], tuple[Decimal, Decimal]]


def policy_limits(policy: Policy, budget_usd: Decimal | None = None) -> list[LimitSpec]:
    """The limits of a run under ``policy`` (``--budget`` replaces the per-run one)."""
    budget = policy.budget
    tag = None
    if budget.scope_tag is not None and budget.scope_tag in policy.tags:
        tag = (budget.scope_tag, policy.tags[budget.scope_tag])
    limits: list[LimitSpec] = []
    if budget_usd is not None:
        limits.append(LimitSpec(budget_usd, key="--budget"))
    elif budget.per_run_usd is not None:
        limits.append(LimitSpec(budget.per_run_usd, key="budget.per_run_usd"))
    if budget.per_day_usd is not None:
        limits.append(LimitSpec(budget.per_day_usd, "day", tag, key="budget.per_day_usd"))
    if budget.per_month_usd is not None:
        limits.append(LimitSpec(budget.per_month_usd, "month", tag, key="budget.per_month_usd"))
    return limits


def budget_plan(
    plan: Plan,
    limits: list[LimitSpec],
    *,
    spend_of: SpendOf | None = None,
    now: datetime,
) -> BudgetPlan:
    """Every limit with its period's spend so far, and whether expected and max fit
    what is left of each (no limit always fits)."""
    expected, maximum = Decimal(plan.total.cost_expected), Decimal(plan.total.cost_max)
    shown: list[LimitPlan] = []
    left: list[Decimal] = []
    for spec in limits:
        spent, reserved = ZERO, ZERO
        if spend_of is not None and spec.period != "run":
            spent, reserved = spend_of(spec)
        when = resets_at(spec.period, now)
        limit = LimitPlan(
            name=spec.name, key=spec.key or "", limit=format_usd(spec.amount),
            spent=format_usd(spent), reserved=format_usd(reserved),
            resets_at=None if when is None else when.isoformat(),
        )  # fmt: skip
        shown.append(limit)
        left.append(spec.amount - spent - reserved)
    room = min(left, default=None)
    return BudgetPlan(
        limits=shown,
        fits_expected=room is None or expected <= room,
        fits_max=room is None or maximum <= room,
    )
