"""A report prices with what the run ran under: moving or editing the policy file
afterwards changes nothing in it."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from typer.testing import CliRunner

from llmflow.cli import app

runner = CliRunner()
FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "run"


def test_report_json_equals_the_summary_after_the_policy_moves_or_changes(tmp_path: Path) -> None:
    pipeline, policy = tmp_path / "chain.yaml", tmp_path / "policy.yaml"
    shutil.copy(FIXTURES / "small_chain.yaml", pipeline)
    shutil.copy(FIXTURES / "policy.yaml", policy)
    for data in (FIXTURES / "data").iterdir():
        (tmp_path / "data").mkdir(exist_ok=True)
        shutil.copy(data, tmp_path / "data" / data.name)
    store = str(tmp_path / "state")
    ran = runner.invoke(
        app, ["run", str(pipeline), "--policy", str(policy), "--backend", "emulator",
              "--store", store],
    )  # fmt: skip
    assert ran.exit_code == 0, ran.output

    def report() -> dict[str, object]:
        shown = runner.invoke(app, ["report", "--last", "--store", store, "--format", "json"])
        assert shown.exit_code == 0, shown.output
        return dict(json.loads(shown.stdout))

    summary_path = next((tmp_path / "state" / "runs").glob("*/summary.json"))
    summary = json.loads(summary_path.read_text())
    assert report() == summary
    # the baseline tier now names a dearer model, then the file is gone
    policy.write_text(policy.read_text().replace("claude-sonnet-4-6", "claude-opus-4-1"))
    assert report() == summary
    policy.rename(tmp_path / "moved.yaml")
    assert report() == summary
