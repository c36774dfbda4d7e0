"""``llmflow report`` as rich tables for a terminal."""

from __future__ import annotations

from rich.console import Group, RenderableType
from rich.table import Table
from rich.text import Text

from llmflow.reporting.fmt import percent, savings, tokens, usd_short, vs_plan
from llmflow.reporting.lines import (
    alert_lines,
    budget_line,
    header_line,
    spend_line,
    totals_line,
)
from llmflow.reporting.model import ReportData


def steps_table(report: ReportData) -> Table:
    """Per step: requests, cost against plan and baseline, cache hit ratio."""
    table = Table(title="Steps", title_justify="left", header_style="bold")
    for name in ("step", "tier", "model", "mode", "req", "ok", "fail", "skip"):
        table.add_column(
            name, justify="left" if name in ("step", "tier", "model", "mode") else "right"
        )
    for name in ("cost", "plan", "vs plan", "hit", "baseline", "saved"):
        table.add_column(name, justify="right")
    for s in report.steps:
        low = s.cache_hit_ratio < report.min_hit_ratio and s.usage.total_input > 0
        table.add_row(
            s.id, s.tier, s.model, s.mode, str(s.requests), str(s.succeeded),
            str(s.failed), str(s.skipped), usd_short(s.cost), usd_short(s.plan_cost_expected),
            vs_plan(s.cost, s.plan_cost_expected),
            Text(percent(s.cache_hit_ratio), style="yellow" if low else ""),
            usd_short(s.cost_baseline), savings(s.savings_pct),
        )  # fmt: skip
    t = report.summary.total
    table.add_section()
    table.add_row(
        "total", "", "", "",
        str(sum(s.requests for s in report.steps)), str(sum(s.succeeded for s in report.steps)),
        str(sum(s.failed for s in report.steps)), str(sum(s.skipped for s in report.steps)),
        usd_short(t.cost), usd_short(t.plan_cost_expected), vs_plan(t.cost, t.plan_cost_expected),
        percent(t.cache_hit_ratio), usd_short(t.cost_baseline), savings(t.savings_pct),
        style="bold",
    )  # fmt: skip
    return table


def tokens_table(report: ReportData) -> Table:
    """Per step: tokens by billing category."""
    table = Table(title="Tokens", title_justify="left", header_style="bold")
    table.add_column("step")
    for name in ("input", "cache write 5m", "cache write 1h", "cache read", "output"):
        table.add_column(name, justify="right")
    for s in report.steps:
        u = s.usage
        table.add_row(
            s.id, tokens(u.input), tokens(u.cache_write_5m), tokens(u.cache_write_1h),
            tokens(u.cache_read), tokens(u.output),
        )  # fmt: skip
    total = report.summary.steps
    table.add_section()
    table.add_row(
        "total",
        *(tokens(sum(getattr(s.usage, f) for s in total)) for f in
          ("input", "cache_write_5m", "cache_write_1h", "cache_read", "output")),
        style="bold",
    )  # fmt: skip
    return table


def tiers_table(report: ReportData) -> Table:
    """Billed responses per tier, model and mode."""
    table = Table(title="By tier", title_justify="left", header_style="bold")
    for name in ("tier", "model", "mode", "steps"):
        table.add_column(name)
    for name in ("responses", "input (all)", "output", "hit", "cost", "baseline", "saved"):
        table.add_column(name, justify="right")
    for r in report.tiers:
        table.add_row(
            r.tier, r.model, r.mode, ", ".join(r.steps), str(r.responses),
            tokens(r.usage.total_input), tokens(r.usage.output),
            percent(r.usage.cache_hit_ratio), usd_short(r.cost), usd_short(r.cost_baseline),
            savings(r.savings_pct),
        )  # fmt: skip
    return table


def render_table(report: ReportData) -> RenderableType:
    """The whole report as one rich renderable."""
    parts: list[RenderableType] = [Text(header_line(report), style="bold"), steps_table(report)]
    parts.append(tokens_table(report))
    if report.tiers:
        parts.append(tiers_table(report))
    parts += [Text(totals_line(report)), Text(budget_line(report)), Text(spend_line(report))]
    parts += [Text(line, style="red") for line in alert_lines(report)]
    if report.warnings:
        parts.append(Text("Warnings", style="bold yellow"))
        parts += [Text(f"  ! {w.message}", style="yellow") for w in report.warnings]
    parts += [Text(f"note: {n}", style="dim") for n in report.notes]
    return Group(*parts)
