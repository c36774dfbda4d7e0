"""``llmflow report`` as rich tables for a terminal."""

from __future__ import annotations

from collections.abc import Callable, Iterator

from rich import box
from rich.console import Console, ConsoleOptions, Group, RenderableType
from rich.measure import Measurement
from rich.table import Table
from rich.text import Text

from llmflow.reporting.fmt import TOKEN_COLUMNS, percent, savings, tokens, usd_short, vs_plan
from llmflow.reporting.lines import (
    alert_lines,
    budget_line,
    header_line,
    spend_line,
    totals_line,
)
from llmflow.reporting.model import ReportData


def _table(title: str, *, tight: bool = False) -> Table:
    """A light table, two spaces between columns (``tight``: one), to fit 100 columns."""
    return Table(
        title=title,
        title_justify="left",
        header_style="bold",
        box=box.SIMPLE_HEAD,
        padding=(0, 0) if tight else (0, 1),
        pad_edge=False,
        collapse_padding=True,
    )


def _add_columns(table: Table, left: tuple[str, ...], right: tuple[str, ...]) -> None:
    """Text columns (left-aligned), then numbers (right-aligned); no cell wraps."""
    for name in left:
        table.add_column(name, no_wrap=True)
    for name in right:
        table.add_column(name, justify="right", no_wrap=True)


class _Fit:
    """The first of several renderings of a table that fits the console width (else the last)."""

    def __init__(self, *variants: Callable[[], Table]) -> None:
        self.variants = variants

    def __rich_console__(self, console: Console, options: ConsoleOptions) -> Iterator[Table]:
        wide = options.update_width(10_000)
        for variant in self.variants[:-1]:
            table = variant()
            if Measurement.get(console, wide, table).maximum <= options.max_width:
                yield table
                return
        yield self.variants[-1]()


def steps_table(
    report: ReportData, *, model: bool = True, thinking: bool = True, tight: bool = False
) -> Table:
    """Per step: requests, thinking tokens, cost against plan and baseline, cache hit ratio.

    ``model=False`` leaves out the model column (the tier table names it),
    ``thinking=False`` the thinking tokens (the Tokens table has them), and ``tight``
    puts one space between columns instead of two.
    """
    table = _table("Steps", tight=tight)
    left = ("step", "tier", "model", "mode") if model else ("step", "tier", "mode")
    counts = ("req", "ok", "fail", "skip", *(("thinking",) if thinking else ()))
    money = ("cost", "plan", "vs plan", "hit", "baseline", "saved")
    _add_columns(table, left, (*counts, *money))
    for s in report.steps:
        low = s.cache_hit_ratio < report.min_hit_ratio and s.usage.total_input > 0
        names = (s.id, s.tier, s.model, s.mode) if model else (s.id, s.tier, s.mode)
        thought = (tokens(s.usage.thinking),) if thinking else ()
        table.add_row(
            *names, str(s.requests), str(s.succeeded), str(s.failed), str(s.skipped), *thought,
            usd_short(s.cost), usd_short(s.plan_cost_expected),
            vs_plan(s.cost, s.plan_cost_expected),
            Text(percent(s.cache_hit_ratio), style="yellow" if low else ""),
            usd_short(s.cost_baseline), savings(s.savings_pct),
        )  # fmt: skip
    t = report.summary.total
    table.add_section()
    table.add_row(
        "total", *([""] * (len(left) - 1)),
        str(sum(s.requests for s in report.steps)), str(sum(s.succeeded for s in report.steps)),
        str(sum(s.failed for s in report.steps)), str(sum(s.skipped for s in report.steps)),
        *((tokens(t.thinking),) if thinking else ()),
        usd_short(t.cost), usd_short(t.plan_cost_expected), vs_plan(t.cost, t.plan_cost_expected),
        percent(t.cache_hit_ratio), usd_short(t.cost_baseline), savings(t.savings_pct),
        style="bold",
    )  # fmt: skip
    return table


def tokens_table(report: ReportData) -> Table:
    """Per step: tokens by billing category, and the thinking part of the output."""
    table = _table("Tokens")
    _add_columns(table, ("step",), tuple(header for header, _ in TOKEN_COLUMNS))
    for s in report.steps:
        table.add_row(s.id, *(tokens(getattr(s.usage, f)) for _, f in TOKEN_COLUMNS))
    total = report.summary.steps
    table.add_section()
    table.add_row(
        "total",
        *(tokens(sum(getattr(s.usage, f) for s in total)) for _, f in TOKEN_COLUMNS),
        style="bold",
    )
    return table


def tiers_table(report: ReportData, *, token_columns: bool = True) -> Table:
    """Billed responses per tier, model and mode.

    ``token_columns=False`` leaves out input and output tokens (the Tokens table has them).
    """
    table = _table("By tier")
    counts = ("responses", "input (all)", "output") if token_columns else ("responses",)
    _add_columns(
        table, ("tier", "model", "mode", "steps"), (*counts, "hit", "cost", "baseline", "saved")
    )
    for r in report.tiers:
        amounts = (tokens(r.usage.total_input), tokens(r.usage.output)) if token_columns else ()
        table.add_row(
            r.tier, r.model, r.mode, ", ".join(r.steps), str(r.responses), *amounts,
            percent(r.usage.cache_hit_ratio), usd_short(r.cost), usd_short(r.cost_baseline),
            savings(r.savings_pct),
        )  # fmt: skip
    return table


def render_table(report: ReportData) -> RenderableType:
    """The whole report as one rich renderable."""
    # On a narrow terminal the model column (named in "By tier") gives way, then the
    # steps' spacing, then their thinking tokens and the per-tier token counts (both in
    # "Tokens"), so that no amount is cut short.
    steps = _Fit(
        lambda: steps_table(report),
        lambda: steps_table(report, model=False),
        lambda: steps_table(report, model=False, tight=True),
        lambda: steps_table(report, model=False, thinking=False, tight=True),
    )
    parts: list[RenderableType] = [Text(header_line(report), style="bold"), steps]
    parts.append(tokens_table(report))
    if report.tiers:
        parts.append(
            _Fit(lambda: tiers_table(report), lambda: tiers_table(report, token_columns=False))
        )
    parts += [Text(totals_line(report)), Text(budget_line(report)), Text(spend_line(report))]
    parts += [Text(line, style="red") for line in alert_lines(report)]
    if report.warnings:
        parts.append(Text("Warnings", style="bold yellow"))
        parts += [Text(f"  ! {w.message}", style="yellow") for w in report.warnings]
    parts += [Text(f"note: {n}", style="dim") for n in report.notes]
    return Group(*parts)
