"""``llmflow plan --budget --store``: every limit that applies, with its period's spend."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path

from typer.testing import CliRunner

from llmflow.catalog import TokenUsage
from llmflow.cli import app
from llmflow.tracker import RunInfo, RunStore
from llmflow.tracker.records import Response

PIPELINE = "tests/fixtures/planner/triage.yaml"
POLICY = "tests/fixtures/planner/policy-periods.yaml"
runner = CliRunner()


def _plan(*args: str) -> dict[str, object]:
    result = runner.invoke(app, ["plan", PIPELINE, "--policy", POLICY, "--format", "json", *args])
    assert result.exit_code == 0, result.output
    data: dict[str, object] = json.loads(result.stdout)
    return data


def _spend(state: Path, amount: str) -> None:
    """A run of the same pipeline and team that spent ``amount`` today."""
    with RunStore.open(state, clock=lambda: datetime.now(UTC)) as store:
        store.start_run("earlier", RunInfo("triage", "fixture-periods", tags={"team": "support"}))
        store.record_success(
            "earlier",
            Response("classify", "classify-0", 0, "claude-haiku-4-5", "haiku", "sync",
                     TokenUsage(input=10), Decimal(amount)),
        )  # fmt: skip


def test_every_limit_with_what_its_period_spent(tmp_path: Path) -> None:
    state = tmp_path / "state"
    fresh = _plan("--store", str(state), "--budget", "5")
    budget = fresh["budget"]
    assert isinstance(budget, dict)
    names = [(lim["name"], lim["key"], lim["limit"], lim["spent"]) for lim in budget["limits"]]
    assert names == [
        ("run", "--budget", "5", "0"),
        ("day[team=support]", "budget.per_day_usd", "1", "0"),
        ("month[team=support]", "budget.per_month_usd", "20", "0"),
    ]
    assert not state.exists()  # planning never creates a store

    _spend(state, "0.99")
    spent = _plan("--store", str(state))["budget"]
    assert isinstance(spent, dict)
    day = spent["limits"][1]
    assert (day["spent"], day["reserved"]) == ("0.99", "0")
    assert day["resets_at"].endswith("T00:00:00+00:00")
    assert spent["fits_expected"] is False  # $0.01 left today: the plan's $0.10 cannot fit


def test_the_table_names_every_limit(tmp_path: Path) -> None:
    _spend(tmp_path / "state", "0.25")
    result = runner.invoke(
        app, ["plan", PIPELINE, "--policy", POLICY, "--store", str(tmp_path / "state")]
    )
    assert result.exit_code == 0, result.output
    text = " ".join(result.stdout.split())
    assert "day[team=support] $1.0000 (spent $0.2500) [budget.per_day_usd]" in text
