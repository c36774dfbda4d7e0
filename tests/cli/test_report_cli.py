"""`llmflow report` and `llmflow runs` as a user runs them, on stores the Tracker wrote."""

from __future__ import annotations

import csv
import io
import json
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from llmflow.cli import app
from llmflow.reporting import CSV_COLUMNS
from llmflow.tracker import RunStore

from .conftest import load_builders  # type: ignore[import-not-found]

runner = CliRunner()
POLICY = "tests/fixtures/policies/basic.yaml"
SUMMARY_KEYS = ["run_id", "pipeline", "policy", "status", "started_at", "ended_at", "steps",
                "total", "budget"]  # fmt: skip
STEP_KEYS = ["id", "requests", "succeeded", "failed", "skipped", "usage", "cost",
             "plan_cost_expected", "cache_hit_ratio"]  # fmt: skip


@pytest.fixture
def state(tmp_path: Path) -> Iterator[Path]:
    """A state dir with an older run of another pipeline and the triage run (newest)."""
    builders = load_builders()
    clock = builders.Clock()
    root = tmp_path / "state"
    with RunStore.open(root, clock=clock) as store:
        builders.simple_run(store, clock, "run-older", pipeline="elsewhere", responses=2)
        clock.tick(60)
        builders.triage_run(store, clock, "run-newest", policy_path=POLICY)
    yield root


def _invoke(*args: Any) -> Any:
    return runner.invoke(app, [str(a) for a in args])


def test_report_last_is_the_default_and_shows_a_table(state: Path) -> None:
    result = _invoke("report", "--state-dir", state)
    assert result.exit_code == 0, result.output
    assert "Run run-newest · pipeline triage" in result.output
    assert "Budget: spent $0.0444 of $0.06 per-run limit" in result.output
    assert "Spend of pipeline triage" in result.output
    assert "stopped at max_tokens" in result.output
    assert _invoke("report", "--last", "--state-dir", state).output == result.output


def test_report_json_is_exactly_the_run_summary(state: Path) -> None:
    result = _invoke("report", "run-newest", "--state-dir", state, "--format", "json")
    assert result.exit_code == 0, result.output
    data = json.loads(result.output)
    assert list(data) == SUMMARY_KEYS
    assert [list(s) for s in data["steps"]] == [STEP_KEYS] * 3
    assert list(data["total"]) == ["cost", "plan_cost_expected", "plan_cost_max",
                                   "cost_baseline", "savings_pct", "cache_hit_ratio",
                                   "thinking"]  # fmt: skip
    assert list(data["budget"]) == ["limit", "spent", "alerts"]
    written = (state / "runs" / "run-newest" / "summary.json").read_text()
    assert result.output == written  # the baseline tier of basic.yaml is sonnet, as the run's


def test_report_csv_and_html(state: Path) -> None:
    result = _invoke("report", "run-newest", "--state-dir", state, "--format", "csv")
    assert result.exit_code == 0, result.output
    rows = list(csv.reader(io.StringIO(result.output)))
    assert tuple(rows[0]) == CSV_COLUMNS and [r[0] for r in rows[1:]] == [
        "classify", "extract", "digest",
    ]  # fmt: skip
    html = _invoke("report", "run-newest", "--state-dir", state, "--format", "html")
    assert html.exit_code == 0
    assert html.output.startswith("<!DOCTYPE html>")
    ET.fromstring(html.output.split("\n", 1)[1])


def test_min_hit_ratio_option_overrides_the_policy(state: Path) -> None:
    loose = _invoke("report", "--state-dir", state, "--min-hit-ratio", "0.05")
    assert loose.exit_code == 0
    assert "classify: cache hit ratio" not in loose.output
    assert "extract: cache hit ratio" in loose.output
    bad = _invoke("report", "--state-dir", state, "--min-hit-ratio", "1.5")
    assert bad.exit_code == 2
    assert "Traceback" not in bad.output


def test_unknown_run_id_exits_two_naming_llmflow_runs(state: Path) -> None:
    result = _invoke("report", "no-such-run", "--state-dir", state)
    assert result.exit_code == 2
    assert "no run 'no-such-run'" in result.output and "llmflow runs" in result.output
    assert "Traceback" not in result.output
    assert len(result.output.strip().splitlines()) == 1


def test_no_store_and_empty_store_exit_two(tmp_path: Path) -> None:
    missing = _invoke("report", "--state-dir", tmp_path / "nothing")
    assert missing.exit_code == 2 and "no run store" in missing.output
    assert "llmflow runs" in missing.output
    assert not (tmp_path / "nothing").exists()  # reporting never creates a store
    RunStore.open(tmp_path / "empty").close()
    empty = _invoke("report", "--last", "--state-dir", tmp_path / "empty")
    assert empty.exit_code == 2 and "no runs in" in empty.output
    assert "llmflow runs" in empty.output
    assert _invoke("runs", "--state-dir", tmp_path / "nothing").exit_code == 2
    listed = _invoke("runs", "--state-dir", tmp_path / "empty")
    assert listed.exit_code == 0 and "no runs" in listed.output


def test_run_id_and_last_together_is_a_usage_error(state: Path) -> None:
    result = _invoke("report", "run-newest", "--last", "--state-dir", state)
    assert result.exit_code == 2


def test_runs_newest_first_with_status_cost_and_date(state: Path) -> None:
    table = _invoke("runs", "--state-dir", state)
    assert table.exit_code == 0, table.output
    assert table.output.index("run-newest") < table.output.index("run-older")
    assert "partial" in table.output and "succeeded" in table.output
    data = json.loads(_invoke("runs", "--state-dir", state, "--format", "json").output)
    runs = data["runs"]
    assert [r["run_id"] for r in runs] == ["run-newest", "run-older"]
    assert runs[0]["status"] == "partial" and runs[0]["cost"] == "0.044425"
    assert runs[0]["started_at"].startswith("2026-05-20T12:")
    limited = json.loads(
        _invoke("runs", "--state-dir", state, "--format", "json", "--limit", 1).output
    )
    assert [r["run_id"] for r in limited["runs"]] == ["run-newest"]


def test_every_format_on_a_real_emulator_run(tmp_path: Path) -> None:
    state = tmp_path / "state"
    ran = _invoke(
        "run", "pipelines/support-triage.yaml", "--policy", "policies/default.yaml",
        "--backend", "emulator", "--state-dir", state,
    )  # fmt: skip
    assert ran.exit_code == 0, ran.output
    summary_file = next((state / "runs").glob("*/summary.json"))
    as_json = _invoke("report", "--last", "--state-dir", state, "--format", "json")
    assert as_json.exit_code == 0
    data = json.loads(as_json.output)
    assert data == json.loads(summary_file.read_text())
    assert data["pipeline"] == "support-triage" and data["status"] == "succeeded"

    table = _invoke("report", "--state-dir", state)
    assert table.exit_code == 0 and "support-triage" in table.output
    for step in data["steps"]:
        assert step["id"] in table.output

    rows = list(
        csv.reader(io.StringIO(_invoke("report", "--state-dir", state, "--format", "csv").output))
    )
    assert tuple(rows[0]) == CSV_COLUMNS
    assert [r[0] for r in rows[1:]] == [s["id"] for s in data["steps"]]
    assert [r[13] for r in rows[1:]] == [s["cost"] for s in data["steps"]]

    html = _invoke("report", "--state-dir", state, "--format", "html").output
    root = ET.fromstring(html.split("\n", 1)[1])
    svg = "{http://www.w3.org/2000/svg}"
    bars = [r for r in root.iter(f"{svg}rect") if r.get("class") == "bar"]
    assert [b.get("data-cost") for b in bars] == [f"${s['cost']}" for s in data["steps"]]
    (line,) = list(root.iter(f"{svg}polyline"))
    assert line.get("data-total") == f"${data['total']['cost']}"

    runs = json.loads(_invoke("runs", "--state-dir", state, "--format", "json").output)["runs"]
    assert [r["run_id"] for r in runs] == [data["run_id"]]
    assert runs[0]["cost"] == data["total"]["cost"]
