"""The one-line texts every format shows: header, totals, budget, spend over time."""

from __future__ import annotations

from llmflow.reporting.fmt import moment, percent, savings, usd, usd_short, vs_plan
from llmflow.reporting.model import ReportData


def header_line(report: ReportData) -> str:
    """Run id, pipeline, policy, status and when."""
    s = report.summary
    text = f"Run {s.run_id} · pipeline {s.pipeline} · policy {s.policy} · {s.status}"
    text += f" · started {moment(s.started_at)} · ended {moment(s.ended_at)}"
    if report.sessions > 1:
        text += f" · {report.sessions} sessions"
    return text


def totals_line(report: ReportData) -> str:
    """Total cost against plan and baseline, with the run's cache hit ratio."""
    t = report.summary.total
    text = f"Total {usd_short(t.cost)}"
    if t.plan_cost_expected is not None:
        text += f" · plan expected {usd_short(t.plan_cost_expected)}"
        text += f" ({vs_plan(t.cost, t.plan_cost_expected)})"
    if t.plan_cost_max is not None:
        text += f" · plan max {usd_short(t.plan_cost_max)}"
    if t.cost_baseline is not None:
        text += f" · baseline {usd_short(t.cost_baseline)}"
        if report.baseline_model:
            text += f" ({report.baseline_model}, sync, no cache)"
        text += f" · saved {savings(t.savings_pct)}"
    return text + f" · cache hit ratio {percent(t.cache_hit_ratio)}"


def budget_line(report: ReportData) -> str:
    """Spend against the run's budget limit."""
    b = report.summary.budget
    if b.limit is None:
        text = f"Budget: no per-run limit · spent {usd_short(b.spent)}"
    else:
        used = percent(b.spent / b.limit) if b.limit else "-"
        text = f"Budget: spent {usd_short(b.spent)} of {usd(b.limit)} per-run limit ({used})"
    if report.unrecorded_usd:
        text += (
            f" · up to {usd_short(report.unrecorded_usd)} more possibly billed but unrecorded"
            " (requests in flight when a session died)"
        )
    return text


def alert_lines(report: ReportData) -> list[str]:
    """One line per budget alert fired during the run."""
    return [f"Alert {moment(a.at)}: {a.message}" for a in report.summary.budget.alerts]


def spend_line(report: ReportData) -> str:
    """Spend of the run's pipeline today and this month (UTC), every run counted."""
    p = report.spend
    return (
        f"Spend of pipeline {p.pipeline} (all runs, UTC): today {usd_short(p.today)}"
        f" (since {p.day_start:%Y-%m-%d}) · this month {usd_short(p.month)}"
        f" (since {p.month_start:%Y-%m-%d})"
    )
