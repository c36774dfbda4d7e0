"""Hand-built inline SVG charts (no script, no external resources).

Money stays Decimal until a coordinate is computed; only coordinates are floats.
Every element is well-formed XML, so the HTML around it parses as XHTML too.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from html import escape

from llmflow.reporting.fmt import usd, usd_short

FONT = "font-family:Helvetica,Arial,sans-serif;font-size:12px"
BAR_COLOR = "#4a7bd0"
PLAN_COLOR = "#d0664a"
LINE_COLOR = "#2e8b57"


@dataclass(frozen=True, slots=True)
class Bar:
    """One bar: a step's actual cost, and its planned cost as a marker."""

    label: str
    value: Decimal
    plan: Decimal | None = None


def _attr(value: object) -> str:
    return escape(str(value), quote=True)


def _x(value: Decimal, top: Decimal, span: float) -> float:
    return 0.0 if top <= 0 else round(float(value / top) * span, 2)


def bar_chart(bars: Sequence[Bar], *, width: int = 720, label_width: int = 160) -> str:
    """Horizontal bars, one per step, with a dashed marker at the plan's expected cost."""
    row, pad = 26, 8
    plot = width - label_width - 110
    height = pad * 2 + row * max(len(bars), 1) + 18
    top = max([b.value for b in bars] + [b.plan for b in bars if b.plan is not None] + [Decimal(0)])
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}"'
        f' viewBox="0 0 {width} {height}" role="img" aria-label="Cost by step"'
        f' style="{FONT}">'
    ]
    for i, bar in enumerate(bars):
        y = pad + i * row
        w = max(_x(bar.value, top, plot), 1.0)
        title = f"<title>{escape(bar.label)}: {escape(usd(bar.value))}</title>"
        parts.append(
            f'<text x="{label_width - 6}" y="{y + 15}" text-anchor="end">{escape(bar.label)}</text>'
        )
        parts.append(
            f'<rect class="bar" data-step="{_attr(bar.label)}" data-cost="{_attr(usd(bar.value))}"'
            f' x="{label_width}" y="{y + 3}" width="{w}" height="{row - 8}"'
            f' fill="{BAR_COLOR}">{title}</rect>'
        )
        parts.append(
            f'<text x="{label_width + w + 6}" y="{y + 15}">{escape(usd_short(bar.value))}</text>'
        )
        if bar.plan is not None:
            px = label_width + _x(bar.plan, top, plot)
            parts.append(
                f'<line class="plan" x1="{px}" y1="{y}" x2="{px}" y2="{y + row - 2}"'
                f' stroke="{PLAN_COLOR}" stroke-width="2" stroke-dasharray="3,2">'
                f"<title>{escape(bar.label)} plan: {escape(usd(bar.plan))}</title></line>"
            )
    legend_y = height - 6
    parts.append(
        f'<rect x="{label_width}" y="{legend_y - 9}" width="10" height="10" fill="{BAR_COLOR}"/>'
        f'<text x="{label_width + 14}" y="{legend_y}">actual</text>'
        f'<line x1="{label_width + 70}" y1="{legend_y - 10}" x2="{label_width + 70}"'
        f' y2="{legend_y + 1}" stroke="{PLAN_COLOR}" stroke-width="2" stroke-dasharray="3,2"/>'
        f'<text x="{label_width + 76}" y="{legend_y}">plan (expected)</text>'
    )
    parts.append("</svg>")
    return "".join(parts)


def line_chart(
    points: Sequence[tuple[datetime, Decimal]], *, width: int = 720, height: int = 240
) -> str:
    """Cumulative spend against time: a polyline from the first to the last point."""
    left, right, top_pad, bottom = 70, 20, 14, 36
    plot_w, plot_h = width - left - right, height - top_pad - bottom
    start = points[0][0] if points else None
    span = (points[-1][0] - start).total_seconds() if points and start else 0.0
    top = max([v for _, v in points] + [Decimal(0)])
    coords = []
    for at, value in points:
        offset = (at - start).total_seconds() if start else 0.0
        x = left + (round(offset / span * plot_w, 2) if span > 0 else 0.0)
        y = top_pad + plot_h - _x(value, top, plot_h)
        coords.append(f"{x},{round(y, 2)}")
    if len(coords) == 1:  # a single point still draws a visible (flat) line
        coords.append(f"{left + plot_w},{coords[0].split(',')[1]}")
    base_y = top_pad + plot_h
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}"'
        f' viewBox="0 0 {width} {height}" role="img" aria-label="Cumulative spend"'
        f' style="{FONT}">',
        f'<line x1="{left}" y1="{top_pad}" x2="{left}" y2="{base_y}" stroke="#999"/>',
        f'<line x1="{left}" y1="{base_y}" x2="{left + plot_w}" y2="{base_y}" stroke="#999"/>',
        f'<text x="{left - 6}" y="{top_pad + 4}" text-anchor="end">{escape(usd_short(top))}</text>',
        f'<text x="{left - 6}" y="{base_y + 4}" text-anchor="end">$0</text>',
    ]
    if start is not None:
        end = points[-1][0]
        parts.append(
            f'<text x="{left}" y="{base_y + 18}">{start:%H:%M:%S}Z</text>'
            f'<text x="{left + plot_w}" y="{base_y + 18}" text-anchor="end">{end:%H:%M:%S}Z'
            f"{escape(f' (+{_duration(span)})')}</text>"
        )
    if coords:
        parts.append(
            f'<polyline class="cumulative" data-total="{_attr(usd(top))}" fill="none"'
            f' stroke="{LINE_COLOR}" stroke-width="2" points="{" ".join(coords)}">'
            f"<title>cumulative spend, {escape(usd(top))} in total</title></polyline>"
        )
    parts.append("</svg>")
    return "".join(parts)


def _duration(seconds: float) -> str:
    whole = int(seconds)
    h, rest = divmod(whole, 3600)
    m, s = divmod(rest, 60)
    return f"{h}h{m:02d}m{s:02d}s" if h else f"{m}m{s:02d}s"
