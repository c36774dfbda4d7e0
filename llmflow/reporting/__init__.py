"""Reporting: what a run cost and why, from the run store (``llmflow report``).

:func:`build_report` turns a run into :class:`ReportData`; ``render_table``,
``render_csv`` and ``render_html`` format it (``--format json`` is the tracker's
run summary itself). This package imports only the tracker, catalog, spec and errors.

Names are imported from their modules on first use (PEP 562): a JSON report never
loads rich, nor the HTML and table renderers.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from llmflow.lazy import exports

if TYPE_CHECKING:
    from llmflow.reporting.csv_format import CSV_COLUMNS, render_csv
    from llmflow.reporting.html import render_html
    from llmflow.reporting.model import ReportData, SpendPoint, StepRow, TierRow, build_report
    from llmflow.reporting.runs import RunRow, list_run_rows, runs_json, runs_table
    from llmflow.reporting.settings import ReportSettings, load_settings
    from llmflow.reporting.table import render_table
    from llmflow.reporting.warnings import ReportWarning

#: Submodule → the names it exports (as imported above).
_EXPORTS = {
    "csv_format": ("CSV_COLUMNS", "render_csv"),
    "html": ("render_html",),
    "model": ("ReportData", "SpendPoint", "StepRow", "TierRow", "build_report"),
    "runs": ("RunRow", "list_run_rows", "runs_json", "runs_table"),
    "settings": ("ReportSettings", "load_settings"),
    "table": ("render_table",),
    "warnings": ("ReportWarning",),
}

__getattr__ = exports(__name__, _EXPORTS)


__all__ = [
    "CSV_COLUMNS",
    "ReportData",
    "ReportSettings",
    "ReportWarning",
    "RunRow",
    "SpendPoint",
    "StepRow",
    "TierRow",
    "build_report",
    "list_run_rows",
    "load_settings",
    "render_csv",
    "render_html",
    "render_table",
    "runs_json",
    "runs_table",
]
