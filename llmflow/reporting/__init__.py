"""Reporting: what a run cost and why, from the run store (``llmflow report``).

:func:`build_report` turns a run into :class:`ReportData`; ``render_table``,
``render_csv`` and ``render_html`` format it (``--format json`` is the tracker's
run summary itself). This package imports only the tracker, catalog, spec and errors.
"""

from llmflow.reporting.csv_format import CSV_COLUMNS, render_csv
from llmflow.reporting.html import render_html
from llmflow.reporting.model import ReportData, SpendPoint, StepRow, TierRow, build_report
from llmflow.reporting.runs import RunRow, list_run_rows, runs_json, runs_table
from llmflow.reporting.settings import ReportSettings, load_settings
from llmflow.reporting.table import render_table
from llmflow.reporting.warnings import ReportWarning

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
