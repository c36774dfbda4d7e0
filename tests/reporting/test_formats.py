"""The table, CSV and HTML formats agree with the run summary JSON."""

from __future__ import annotations

import csv
import io
import json
import xml.etree.ElementTree as ET
from html.parser import HTMLParser
from types import ModuleType
from typing import Any

from rich.console import Console

from llmflow.catalog import load_catalog
from llmflow.reporting import (
    CSV_COLUMNS,
    build_report,
    load_settings,
    render_csv,
    render_html,
    render_table,
)
from llmflow.tracker import RunStore

POLICY = "tests/fixtures/policies/basic.yaml"


class Collector(HTMLParser):
    """Every start tag with its attributes, and the cell texts of each table by id."""

    def __init__(self) -> None:
        super().__init__()
        self.tags: list[tuple[str, dict[str, str | None]]] = []
        self.tables: dict[str, list[list[str]]] = {}
        self._table: str | None = None
        self._cell: list[str] | None = None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        found = dict(attrs)
        self.tags.append((tag, found))
        if tag == "table":
            self._table = found.get("id") or "?"
            self.tables[self._table] = []
        elif tag == "tr" and self._table is not None:
            self.tables[self._table].append([])
        elif tag in ("td", "th"):
            self._cell = []

    def handle_endtag(self, tag: str) -> None:
        if tag in ("td", "th") and self._cell is not None and self._table is not None:
            self.tables[self._table][-1].append("".join(self._cell))
            self._cell = None
        elif tag == "table":
            self._table = None

    def handle_data(self, data: str) -> None:
        if self._cell is not None:
            self._cell.append(data)


def _report(store: RunStore, clock: Any, builders: ModuleType) -> Any:
    summary = builders.triage_run(store, clock, policy_path=POLICY)
    settings = load_settings(POLICY, load_catalog())
    return build_report(store, summary.run_id, settings, now=clock.now)


def test_csv_has_a_header_and_one_row_per_step_with_the_summary_strings(
    store: RunStore, clock: Any, builders: ModuleType
) -> None:
    report = _report(store, clock, builders)
    rows = list(csv.reader(io.StringIO(render_csv(report))))
    assert tuple(rows[0]) == CSV_COLUMNS
    assert len(rows) == 1 + len(report.steps)
    contract = json.loads(report.summary.to_json())["steps"]
    for row, step in zip(rows[1:], contract, strict=True):
        got = dict(zip(CSV_COLUMNS, row, strict=True))
        assert got["id"] == step["id"]
        for key in ("requests", "succeeded", "failed", "skipped"):
            assert int(got[key]) == step[key]
        for key, value in step["usage"].items():
            assert int(got[key]) == value
        assert "thinking" in step["usage"]
        assert got["cost"] == step["cost"]
        assert got["plan_cost_expected"] == (step["plan_cost_expected"] or "")
        assert got["cache_hit_ratio"] == step["cache_hit_ratio"]
    assert rows[1][1:4] == ["haiku", "claude-haiku-4-5", "batch"]
    assert CSV_COLUMNS[-1] == "thinking"  # appended: earlier columns keep their positions
    assert CSV_COLUMNS.index("cost") == 13
    assert [row[-1] for row in rows[1:]] == ["0", "240", "180"]


def test_html_is_self_contained_and_well_formed(
    store: RunStore, clock: Any, builders: ModuleType
) -> None:
    document = render_html(_report(store, clock, builders))
    ET.fromstring(document.split("\n", 1)[1])  # well-formed XML after the doctype
    lowered = document.lower()
    for forbidden in ("<script", "<link", "@import", "http://", "https://", "<style"):
        if forbidden == "http://":  # only the SVG namespace may name a URL
            lowered = lowered.replace('xmlns="http://www.w3.org/2000/svg"', "")
        assert forbidden not in lowered


def test_html_charts_and_tables_show_the_summary_numbers(
    store: RunStore, clock: Any, builders: ModuleType
) -> None:
    report = _report(store, clock, builders)
    parser = Collector()
    parser.feed(render_html(report))
    contract = json.loads(report.summary.to_json())
    steps = contract["steps"]
    tags = [t for t, _ in parser.tags]
    assert tags.count("svg") == 2
    bars = [a for t, a in parser.tags if t == "rect" and a.get("class") == "bar"]
    assert [b["data-step"] for b in bars] == [s["id"] for s in steps]
    assert [b["data-cost"] for b in bars] == [f"${s['cost']}" for s in steps]
    widths = [float(b["width"] or 0) for b in bars]
    assert widths[0] == max(widths)  # classify cost the most
    plans = [a for t, a in parser.tags if t == "line" and a.get("class") == "plan"]
    assert len(plans) == len(steps)
    (line,) = [a for t, a in parser.tags if t == "polyline"]
    assert line["data-total"] == f"${contract['total']['cost']}"
    points = (line["points"] or "").split()
    assert len(points) == len(report.series)
    ys = [float(p.split(",")[1]) for p in points]
    assert ys == sorted(ys, reverse=True)  # spend only grows (SVG y points down)

    table = parser.tables["steps"]
    assert table[0][:2] == ["step", "tier"] and table[0][8] == "thinking"
    body = table[1:-1]
    assert [r[0] for r in body] == [s["id"] for s in steps]
    for row, step in zip(body, steps, strict=True):
        assert row[4:8] == [str(step[k]) for k in ("requests", "succeeded", "failed", "skipped")]
        assert int(row[8].replace(",", "")) == step["usage"]["thinking"]
        assert row[9] == f"${step['cost']}"
        assert row[10] == f"${step['plan_cost_expected']}"
    assert [r[8] for r in body] == ["0", "240", "180"]
    total = table[-1]
    assert total[0] == "total" and total[9] == f"${contract['total']['cost']}"
    assert int(total[8]) == contract["total"]["thinking"] == 420
    assert total[13] == f"${contract['total']['cost_baseline']}"
    assert total[14] == f"{contract['total']['savings_pct']}%"
    tokens = parser.tables["tokens"]
    assert tokens[0][1:] == ["input", "cache write 5m", "cache write 1h", "cache read", "output",
                             "thinking"]  # fmt: skip
    for row, step in zip(tokens[1:], steps, strict=True):
        assert [int(c.replace(",", "")) for c in row[1:]] == list(step["usage"].values())
    assert "tiers" in parser.tables
    warnings = [a for t, a in parser.tags if t == "ul" and a.get("id") == "warnings"]
    assert warnings


def test_table_shows_steps_totals_budget_spend_and_warnings(
    store: RunStore, clock: Any, builders: ModuleType
) -> None:
    report = _report(store, clock, builders)
    console = Console(record=True, width=200, color_system=None)
    console.print(render_table(report))
    text = console.export_text()
    for step in ("classify", "extract", "digest"):
        assert step in text
    assert "Total $0.0444 · plan expected $0.0400 (+11.1%)" in text
    assert "Budget: spent $0.0444 of $0.06 per-run limit (74.0%)" in text
    assert "Spend of pipeline triage (all runs, UTC): today $0.0444" in text
    assert "Alert " in text and "crossed the alert threshold" in text
    assert "batch cache reads fell short of plan" in text


def test_table_fits_100_columns_without_cutting_an_amount(
    store: RunStore, clock: Any, builders: ModuleType
) -> None:
    report = _report(store, clock, builders)
    wide = Console(record=True, width=200, color_system=None)
    wide.print(render_table(report))
    assert "claude-haiku-4-5" in wide.export_text().split("Tokens")[0]  # model column when room
    console = Console(record=True, width=100, color_system=None)
    console.print(render_table(report))
    text = console.export_text()
    assert "…" not in text and max(len(line) for line in text.splitlines()) <= 100
    assert "$0.0444" in text and "claude-haiku-4-5" in text  # the tier table names the model
    steps = text.split("Tokens")[0]
    assert "thinking" in steps  # the steps' thinking tokens still fit
    assert [line.split()[7] for line in steps.splitlines() if line.startswith(" extract")] == [
        "240"
    ]


def test_huge_amounts_give_the_steps_thinking_column_up_before_cutting_one(
    store: RunStore, clock: Any, builders: ModuleType
) -> None:
    from decimal import Decimal

    report = _report(store, clock, builders)
    big = Decimal("123456.7891")
    steps = [
        s.model_copy(
            update={"cost": big, "plan_cost_expected": big, "cost_baseline": big,
                    "usage": s.usage.model_copy(update={"thinking": 12_345_678})}
        )
        for s in report.steps
    ]  # fmt: skip
    report = report.model_copy(update={"steps": steps})
    console = Console(record=True, width=100, color_system=None)
    console.print(render_table(report))
    text = console.export_text()
    assert "…" not in text and max(len(line) for line in text.splitlines()) <= 100
    steps_text, tokens_text = text.split("Tokens")[:2]
    assert "$123456.7891" in steps_text and "thinking" not in steps_text
    assert "thinking" in tokens_text.splitlines()[2] and "12,345,678" in tokens_text


def test_a_run_that_billed_nothing_still_renders(store: RunStore, clock: Any) -> None:
    from llmflow.tracker import RunInfo, StepPlan

    store.start_run("empty", RunInfo(pipeline="p", policy="x", steps=(StepPlan("a", 3),)))
    report = build_report(store, "empty", load_settings(None, load_catalog()), now=clock.now)
    assert report.warnings == [] and len(report.series) == 1
    assert report.summary.status == "interrupted"  # still marked running
    ET.fromstring(render_html(report).split("\n", 1)[1])
    assert render_csv(report).splitlines()[1].startswith("a,-,-,-,3,0,0,0,")
    console = Console(record=True, width=200, color_system=None)
    console.print(render_table(report))
    assert "note: the run recorded no policy file" in console.export_text()
