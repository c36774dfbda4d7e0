"""``llmflow report [RUN_ID|--last]`` and ``llmflow runs``: what runs cost, and why.

Both read the run store of ``--store`` (a directory, alias ``--state-dir``, or a
``postgresql://`` URL: the one ``llmflow run`` writes) and never change it.
Exit 0, or 2 when there is no store, no run, or no such run id.
"""

from __future__ import annotations

from decimal import Decimal, InvalidOperation
from enum import StrEnum
from typing import TYPE_CHECKING

import typer

from llmflow.cli._app import app
from llmflow.cli._errors import reported_errors
from llmflow.cli._inputs import table_console
from llmflow.cli._store import open_store, shown, store_option
from llmflow.errors import RunStoreError

if TYPE_CHECKING:
    from rich.console import Console


class ReportFormat(StrEnum):
    table = "table"
    json = "json"
    csv = "csv"
    html = "html"


class RunsFormat(StrEnum):
    table = "table"
    json = "json"


def _ratio(text: str | None) -> Decimal | None:
    if text is None:
        return None
    try:
        value = Decimal(text)
    except InvalidOperation:
        value = Decimal(-1)
    if not value.is_finite() or not 0 <= value <= 1:
        raise typer.BadParameter(
            f"expected a ratio between 0 and 1, got {text!r}", param_hint="--min-hit-ratio"
        )
    return value


def _console() -> Console:
    return table_console()


@app.command("report")
def report(
    run_id: str | None = typer.Argument(None, help="Run id (see `llmflow runs`)."),
    last: bool = typer.Option(False, "--last", help="Report the newest run (the default)."),
    store_spec: str = store_option(),
    output_format: ReportFormat = typer.Option(
        ReportFormat.table,
        "--format",
        help="table (terminal), json (the run summary, as summary.json), csv (one row per"
        " step) or html (a self-contained page for mail).",
    ),
    min_hit_ratio: str | None = typer.Option(
        None,
        "--min-hit-ratio",
        metavar="RATIO",
        help="Warn below this cache hit ratio (default: the policy's"
        " cache.min_hit_ratio_warning, else 0.30).",
    ),
) -> None:
    """What a run cost and why: per step and tier, plan, baseline, budget, warnings.

    Exit 0, or 2 when the store, the run or the run id is unknown. Examples:

      llmflow report --last

      llmflow report 20261124T101500Z-3f9a1c --format json

      llmflow report --last --format html > report.html
    """
    # each format imports what it renders with (a JSON report never loads rich)
    from llmflow.catalog import load_catalog
    from llmflow.cli._logging import quiet_logging
    from llmflow.reporting.settings import load_settings

    quiet_logging()  # stdout is the report's: an upgrade of the store logs nothing there
    if run_id is not None and last:
        raise typer.BadParameter("give a RUN_ID or --last, not both", param_hint="--last")
    threshold = _ratio(min_hit_ratio)
    with reported_errors(), open_store(store_spec, existing=True) as store:
        if run_id is None:
            newest = store.last_run()
            if newest is None:
                raise RunStoreError(f"no runs in {shown(store_spec)}; `llmflow runs` lists them")
            run_id = newest.run_id
        record = store.find_run(run_id)
        if record is None:
            where = shown(store_spec)
            raise RunStoreError(
                f"no run {run_id!r} in {where}; `llmflow runs --store {where}` lists the run ids"
            )
        settings = load_settings(
            record.policy_path, load_catalog(), min_hit_ratio=threshold,
            stored=record.report_settings,
        )  # fmt: skip
        if output_format is ReportFormat.json:
            typer.echo(store.summary(run_id, baseline=settings.baseline).to_json(), nl=False)
            return
        from llmflow.reporting.model import build_report

        data = build_report(store, run_id, settings, series=output_format is ReportFormat.html)
    if output_format is ReportFormat.csv:
        from llmflow.reporting.csv_format import render_csv

        typer.echo(render_csv(data), nl=False)
    elif output_format is ReportFormat.html:
        from llmflow.reporting.html import render_html

        typer.echo(render_html(data), nl=False)
    else:
        from llmflow.reporting.table import render_table

        _console().print(render_table(data))


@app.command("runs")
def runs(
    store_spec: str = store_option(),
    output_format: RunsFormat = typer.Option(
        RunsFormat.table, "--format", help="table (terminal) or json (one object per run)."
    ),
    limit: int | None = typer.Option(None, "--limit", min=1, help="Show only the newest N."),
) -> None:
    """The runs in the store with status, cost and date, newest first.

    Exit 0, or 2 when there is no run store. Examples:

      llmflow runs

      llmflow runs --state-dir /var/lib/llmflow --format json
    """
    from llmflow.cli._logging import quiet_logging
    from llmflow.reporting.runs import list_run_rows, runs_json, runs_table

    quiet_logging()
    with reported_errors(), open_store(store_spec, existing=True) as store:
        rows = list_run_rows(store, limit=limit)
    if output_format is RunsFormat.json:
        typer.echo(runs_json(rows), nl=False)
    elif not rows:
        typer.echo(f"no runs in {shown(store_spec)}")
    else:
        _console().print(runs_table(rows))
