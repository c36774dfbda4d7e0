"""``llmflow report --format html``: one self-contained document for a mail client.

Inline styles only, no script, no external CSS, fonts or images; charts are inline
SVG (:mod:`llmflow.reporting.svg`). The document is well-formed XML. Money in the
tables is the summary JSON's exact strings, so the report and ``summary.json`` agree.
"""

from __future__ import annotations

from collections.abc import Sequence
from html import escape

from llmflow.reporting.fmt import TOKEN_COLUMNS, moment, percent, savings, tokens, usd, vs_plan
from llmflow.reporting.lines import (
    alert_lines,
    budget_line,
    header_line,
    spend_line,
    totals_line,
)
from llmflow.reporting.model import ReportData
from llmflow.reporting.svg import Bar, bar_chart, line_chart

BODY = (
    "font-family:Helvetica,Arial,sans-serif;font-size:14px;color:#222;"
    "max-width:980px;margin:16px auto;padding:0 12px"
)
TABLE = "border-collapse:collapse;margin:8px 0 16px 0;font-size:13px"
TH = "text-align:left;border-bottom:2px solid #888;padding:4px 8px;background:#f2f2f2"
TD = "border-bottom:1px solid #ddd;padding:4px 8px"
NUM = TD + ";text-align:right;font-variant-numeric:tabular-nums"
H2 = "font-size:16px;margin:20px 0 6px 0;border-bottom:1px solid #ccc"


def _table(table_id: str, head: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    """A table whose first column is text and the others are numbers (right-aligned)."""
    out = [f'<table id="{table_id}" style="{TABLE}"><thead><tr>']
    out += [f'<th style="{TH}">{escape(h)}</th>' for h in head]
    out.append("</tr></thead><tbody>")
    for row in rows:
        cells = [
            f'<td style="{TD if i == 0 or not _numeric(c) else NUM}">{escape(c)}</td>'
            for i, c in enumerate(row)
        ]
        out.append("<tr>" + "".join(cells) + "</tr>")
    out.append("</tbody></table>")
    return "".join(out)


def _numeric(cell: str) -> bool:
    return cell[:1].isdigit() or cell[:1] in ("$", "+", "-")


def _steps_rows(report: ReportData) -> list[list[str]]:
    rows = [
        [
            s.id, s.tier, s.model, s.mode, str(s.requests), str(s.succeeded), str(s.failed),
            str(s.skipped), tokens(s.usage.thinking), usd(s.cost), usd(s.plan_cost_expected),
            vs_plan(s.cost, s.plan_cost_expected), percent(s.cache_hit_ratio),
            usd(s.cost_baseline), savings(s.savings_pct),
        ]
        for s in report.steps
    ]  # fmt: skip
    t = report.summary.total
    rows.append(
        [
            "total", "", "", "", str(sum(s.requests for s in report.steps)),
            str(sum(s.succeeded for s in report.steps)), str(sum(s.failed for s in report.steps)),
            str(sum(s.skipped for s in report.steps)), tokens(t.thinking), usd(t.cost),
            usd(t.plan_cost_expected), vs_plan(t.cost, t.plan_cost_expected),
            percent(t.cache_hit_ratio), usd(t.cost_baseline), savings(t.savings_pct),
        ]
    )  # fmt: skip
    return rows


def _tokens_rows(report: ReportData) -> list[list[str]]:
    return [
        [s.id, *(tokens(getattr(s.usage, field)) for _, field in TOKEN_COLUMNS)]
        for s in report.steps
    ]


def _tier_rows(report: ReportData) -> list[list[str]]:
    return [
        [r.tier, r.model, r.mode, ", ".join(r.steps), str(r.responses),
         tokens(r.usage.total_input), tokens(r.usage.output), percent(r.usage.cache_hit_ratio),
         usd(r.cost), usd(r.cost_baseline), savings(r.savings_pct)]
        for r in report.tiers
    ]  # fmt: skip


def render_html(report: ReportData) -> str:
    """The report as a standalone HTML document (UTF-8 text)."""
    s = report.summary
    title = f"llmflow report {s.run_id}"
    body: list[str] = [
        f'<h1 style="font-size:20px;margin:0 0 4px 0">{escape(title)}</h1>',
        f'<p style="margin:0 0 12px 0;color:#555">{escape(header_line(report))}</p>',
        f'<p id="totals" style="margin:4px 0;font-weight:bold">{escape(totals_line(report))}</p>',
        f'<p id="budget" style="margin:4px 0">{escape(budget_line(report))}</p>',
        f'<p id="spend" style="margin:4px 0">{escape(spend_line(report))}</p>',
    ]
    body += [
        f'<p class="alert" style="margin:4px 0;color:#b00020">{escape(line)}</p>'
        for line in alert_lines(report)
    ]
    if report.warnings:
        body.append(f'<h2 style="{H2};color:#8a5a00">Warnings</h2><ul id="warnings">')
        body += [
            f'<li style="color:#8a5a00;margin:2px 0">{escape(w.message)}</li>'
            for w in report.warnings
        ]
        body.append("</ul>")
    body.append(f'<h2 style="{H2}">Cost by step</h2>')
    body.append(bar_chart([Bar(st.id, st.cost, st.plan_cost_expected) for st in report.steps]))
    body.append(f'<h2 style="{H2}">Cumulative spend over the run</h2>')
    body.append(line_chart([(p.at, p.cumulative) for p in report.series]))
    body.append(f'<h2 style="{H2}">Steps</h2>')
    steps_head = ["step", "tier", "model", "mode", "requests", "succeeded", "failed", "skipped",
                  "thinking", "cost", "plan", "vs plan", "cache hit", "baseline",
                  "saved"]  # fmt: skip
    body.append(_table("steps", steps_head, _steps_rows(report)))
    body.append(f'<h2 style="{H2}">Tokens</h2>')
    tokens_head = ["step", *(header for header, _ in TOKEN_COLUMNS)]
    body.append(_table("tokens", tokens_head, _tokens_rows(report)))
    if report.tiers:
        body.append(f'<h2 style="{H2}">By tier</h2>')
        tier_head = ["tier", "model", "mode", "steps", "responses", "input (all)", "output",
                     "cache hit", "cost", "baseline", "saved"]  # fmt: skip
        body.append(_table("tiers", tier_head, _tier_rows(report)))
    footer = f"Generated {moment(report.generated_at)} by llmflow report."
    body += [f'<p style="color:#777;font-size:12px">note: {escape(n)}</p>' for n in report.notes]
    body.append(f'<p style="color:#777;font-size:12px">{escape(footer)}</p>')
    return (
        "<!DOCTYPE html>\n"
        '<html lang="en"><head><meta charset="utf-8"/>'
        f"<title>{escape(title)}</title></head>"
        f'<body style="{BODY}">' + "\n".join(body) + "</body></html>\n"
    )
