"""`llmflow report` starts light: each format imports only what it renders with, and a
store upgraded on the way still prints nothing but the report on stdout."""

from __future__ import annotations

import json
import subprocess
import sys
from decimal import Decimal
from pathlib import Path

import pytest

from llmflow.tracker import RunStore

from .conftest import load_builders  # type: ignore[import-not-found]

#: Never needed to report a run (the recording side, the API client, templates, logs).
HEAVY = ("structlog", "anthropic", "httpx2", "jinja2", "llmflow.tracker.tracker",
         "llmflow.executor", "llmflow.planner", "psycopg")  # fmt: skip
PROBE = """
import json, sys
from llmflow.cli import main
sys.argv = ["llmflow", *sys.argv[1:]]
try:
    main()
except SystemExit as exc:
    code = exc.code
else:
    code = 0
print(json.dumps({"code": code, "modules": sorted(sys.modules)}), file=sys.stderr)
"""


@pytest.fixture
def state(tmp_path: Path) -> Path:
    builders = load_builders()
    clock = builders.Clock()
    with RunStore.open(tmp_path / "state", clock=clock) as store:
        builders.triage_run(store, clock, "run-1", policy_path="tests/fixtures/policies/basic.yaml")
    return tmp_path / "state"


def _report(state: Path, fmt: str) -> tuple[str, str, set[str]]:
    """stdout, the log lines on stderr, and the modules the report imported."""
    done = subprocess.run(
        [sys.executable, "-c", PROBE, "report", "--state-dir", str(state), "--format", fmt],
        capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    *logs, last = done.stderr.splitlines()
    probe = json.loads(last)
    assert probe["code"] == 0, done.stderr
    return done.stdout, "\n".join(logs), set(probe["modules"])


@pytest.mark.parametrize("fmt", ["json", "table", "csv", "html"])
def test_a_report_imports_only_what_its_format_needs(state: Path, fmt: str) -> None:
    out, logs, modules = _report(state, fmt)
    assert ("run-1" in out or fmt == "csv") and "digest" in out and logs == ""
    assert not modules & set(HEAVY)
    assert ("rich" in modules) == (fmt == "table")


def test_a_store_upgraded_by_a_report_keeps_stdout_the_reports(state: Path) -> None:
    with RunStore.open(state) as store, store.db.transaction() as c:
        c.execute("DROP TABLE usage_totals")
        c.execute("DROP TABLE usage_seconds")
        c.execute("UPDATE meta SET value = '4' WHERE key = 'schema_version'")
    out, logs, modules = _report(state, "json")
    assert json.loads(out)["run_id"] == "run-1"  # stdout holds the summary alone
    assert "structlog" in modules  # the upgrade logged (info: below the quiet level)
    assert logs == ""
    with RunStore.open(state) as store:
        assert store.run_spent("run-1") == Decimal(json.loads(out)["total"]["cost"]) > 0
