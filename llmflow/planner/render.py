"""The plan as a rich table: one row per step, totals, the budget line and the notes."""

from __future__ import annotations

from decimal import ROUND_HALF_EVEN, Decimal

from rich import box
from rich.console import Group, RenderableType
from rich.table import Table
from rich.text import Text

from llmflow.planner.plan import Plan, StepPlan

_CENT_FRACTION = Decimal("0.0001")


def usd(amount: str) -> str:
    """A plan amount for display: dollars to 4 decimals (the JSON keeps every digit)."""
    value = Decimal(amount)
    if value and abs(value) < _CENT_FRACTION:
        return "<$0.0001"
    return f"${value.quantize(_CENT_FRACTION, ROUND_HALF_EVEN)}"


def _cache_cell(step: StepPlan) -> str:
    cache = step.cache
    if not cache.enabled:
        return "off"
    return f"{cache.ttl} {cache.expected_writes:,}w/{cache.expected_reads:,}r"


def _count(value: int) -> str:
    if value >= 10_000_000:
        return f"{value / 1_000_000:.1f}M"
    if value >= 100_000:
        return f"{value / 1_000:.0f}k"
    return f"{value:,}"


def plan_table(plan: Plan) -> Table:
    """The per-step table with a totals row (tokens: expected; input is uncached)."""
    table = Table(
        title=f"plan: {plan.pipeline} under policy {plan.policy}",
        title_justify="left",
        box=box.SIMPLE_HEAD,
        pad_edge=False,
    )
    columns = [
        ("step", "left"),
        ("tier", "left"),
        ("mode", "left"),
        ("reqs", "right"),
        ("cache", "left"),
        ("in", "right"),
        ("cached", "right"),
        ("out", "right"),
        ("expected", "right"),
        ("max", "right"),
        ("baseline", "right"),
    ]
    for name, justify in columns:
        table.add_column(name, justify=justify, no_wrap=True, min_width=len(name))  # type: ignore[arg-type]
    for step in plan.steps:
        t = step.tokens
        table.add_row(
            step.id,
            step.tier,
            step.mode,
            _count(step.requests),
            _cache_cell(step),
            _count(t.input),
            _count(t.cache_write + t.cache_read),
            _count(t.output_expected),
            usd(step.cost.expected),
            usd(step.cost.max),
            usd(step.cost.baseline),
        )
    total = plan.total
    table.add_section()
    table.add_row(
        Text("total", style="bold"),
        "",
        "",
        _count(sum(s.requests for s in plan.steps)),
        "",
        _count(sum(s.tokens.input for s in plan.steps)),
        _count(sum(s.tokens.cache_write + s.tokens.cache_read for s in plan.steps)),
        _count(sum(s.tokens.output_expected for s in plan.steps)),
        Text(usd(total.cost_expected), style="bold"),
        usd(total.cost_max),
        usd(total.cost_baseline),
    )
    table.caption = Text(
        f"waves: {' → '.join('[' + ', '.join(w) + ']' for w in plan.waves)}"
        f" · saves {total.savings_pct}% vs baseline"
    )
    table.caption_justify = "left"
    return table


def budget_line(plan: Plan) -> Text:
    """One line: the budget and whether the expected and max costs fit it."""
    budget = plan.budget
    if budget.limit is None:
        return Text("budget: no per-run limit in the policy")
    ok = budget.fits_expected and budget.fits_max
    style = "green" if ok else ("yellow" if budget.fits_expected else "red")
    return Text(
        f"budget ${budget.limit} per run: expected {usd(plan.total.cost_expected)}"
        f" {'fits' if budget.fits_expected else 'DOES NOT FIT'}; max"
        f" {usd(plan.total.cost_max)} {'fits' if budget.fits_max else 'does not fit'}",
        style=style,
    )


def notes_block(plan: Plan) -> Text:
    """Each step's notes, indented under its id."""
    text = Text()
    for step in plan.steps:
        text.append(f"{step.id}", style="bold")
        text.append(f"  {step.tier} = {step.model}, max_tokens {step.max_tokens}\n")
        for note in step.notes:
            text.append(f"  - {note}\n")
    return text


def render_plan(plan: Plan) -> RenderableType:
    """Table, budget line and notes, ready for ``Console.print``."""
    return Group(plan_table(plan), budget_line(plan), Text(""), notes_block(plan))
