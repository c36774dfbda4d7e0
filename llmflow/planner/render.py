"""The plan as a rich table: one row per step, totals, the budget line and the notes."""

from __future__ import annotations

import textwrap
from collections.abc import Iterator
from decimal import ROUND_HALF_EVEN, Decimal

from rich import box
from rich.console import Console, ConsoleOptions, RenderableType
from rich.measure import Measurement
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
    if value >= 1_000_000:
        return f"{value / 1_000_000:.1f}M"
    if value >= 100_000:
        return f"{value / 1_000:.0f}k"
    return f"{value:,}"


_TOKEN_COLUMNS = ("in", "cached", "out")


def plan_table(plan: Plan, *, tokens: bool = True) -> Table:
    """The per-step table with a totals row (tokens: expected; input is uncached).

    ``tokens=False`` leaves out the token columns (for narrow terminals).
    """
    table = Table(
        title=f"plan: {plan.pipeline} under policy {plan.policy}",
        title_justify="left",
        box=box.SIMPLE_HEAD,
        pad_edge=False,
        collapse_padding=True,
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
    keep = [tokens or name not in _TOKEN_COLUMNS for name, _ in columns]
    for (name, justify), kept in zip(columns, keep, strict=True):
        if kept:
            table.add_column(name, justify=justify, no_wrap=True, min_width=len(name))  # type: ignore[arg-type]
    for step in plan.steps:
        t = step.tokens
        row: list[RenderableType] = [
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
        ]
        table.add_row(*(cell for cell, kept in zip(row, keep, strict=True) if kept))
    total = plan.total
    table.add_section()
    totals: list[RenderableType] = [
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
    ]
    table.add_row(*(cell for cell, kept in zip(totals, keep, strict=True) if kept))
    legend = (
        "tokens (expected): in = uncached input, cached = cache writes + reads, out = output"
        if tokens
        else "token columns left out for this terminal width (see --format json)"
    )
    table.caption = Text(
        f"{legend}\nwaves: {' → '.join('[' + ', '.join(w) + ']' for w in plan.waves)}"
        f" · saves {total.savings_pct}% vs baseline"
    )
    table.caption_justify = "left"
    return table


def budget_line(plan: Plan) -> Text:
    """The limits that apply, what each period already spent, and whether the expected
    and max costs fit what is left."""
    budget = plan.budget
    if not budget.limits:
        return Text("budget: no limit in the policy")
    ok = budget.fits_expected and budget.fits_max
    style = "green" if ok else ("yellow" if budget.fits_expected else "red")
    parts = []
    for lim in budget.limits:
        held = ""
        if lim.name != "run":
            held = f" (spent {usd(lim.spent)}"
            held += f", reserved {usd(lim.reserved)}" if lim.reserved != "0" else ""
            held += ")"
        parts.append(f"{lim.name} {usd(lim.limit)}{held} [{lim.key}]")
    return Text(
        f"budget: {'; '.join(parts)} · expected {usd(plan.total.cost_expected)}"
        f" {'fits' if budget.fits_expected else 'DOES NOT FIT'}; max"
        f" {usd(plan.total.cost_max)} {'fits' if budget.fits_max else 'does not fit'}",
        style=style,
    )


class _Notes:
    """Each step's notes under its id; a long note wraps under its own text."""

    def __init__(self, plan: Plan) -> None:
        self.plan = plan

    def __rich_console__(self, console: Console, options: ConsoleOptions) -> Iterator[Text]:
        width = max(options.max_width - 4, 20)
        for step in self.plan.steps:
            heading = Text(step.id, style="bold")
            heading.append(f"  {step.tier} = {step.model}, max_tokens {step.max_tokens}")
            yield heading
            for note in step.notes:
                lines = textwrap.wrap(note, width, break_on_hyphens=False) or [""]
                yield Text(f"  - {lines[0]}")
                for line in lines[1:]:
                    yield Text(f"    {line}")


def notes_block(plan: Plan) -> RenderableType:
    """Each step's notes, indented under its id."""
    return _Notes(plan)


class _PlanView:
    """Table, budget line and notes; the table drops its token columns when it would not fit."""

    def __init__(self, plan: Plan) -> None:
        self.plan = plan

    def __rich_console__(
        self, console: Console, options: ConsoleOptions
    ) -> Iterator[RenderableType]:
        table = plan_table(self.plan)
        natural = Measurement.get(console, options.update_width(10_000), table).maximum
        if natural > options.max_width:
            table = plan_table(self.plan, tokens=False)
        yield table
        yield budget_line(self.plan)
        yield Text("")
        yield notes_block(self.plan)


def render_plan(plan: Plan) -> RenderableType:
    """Table, budget line and notes, ready for ``Console.print``."""
    return _PlanView(plan)
