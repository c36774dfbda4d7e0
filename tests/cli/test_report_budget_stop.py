"""A report of a budget-stopped run says what stopped it and how to finish it."""

from __future__ import annotations

import shlex
from pathlib import Path

from typer.testing import CliRunner

from llmflow.cli import app

runner = CliRunner()


def test_report_of_a_budget_stop_gives_the_command_that_finishes_the_run(tmp_path: Path) -> None:
    state = str(tmp_path / "state")
    run = ["run", "pipelines/support-triage.yaml", "--policy", "policies/default.yaml"]
    stopped = runner.invoke(
        app,
        [*run, "--backend", "emulator", "--budget", "0.05", "--run-id", "bs", "--state-dir", state],
    )
    assert stopped.exit_code == 3, stopped.output
    report = runner.invoke(app, ["report", "bs", "--state-dir", state, "--format", "html"])
    assert report.exit_code == 0
    assert "the run stopped at its budget before overspending" in report.output
    text = report.output.replace("\n", " ")
    command = text.split("worst case: ", 1)[1].split(" (add --state-dir", 1)[0]
    args = shlex.split(command)[1:]  # drop the program name
    assert args[:4] == ["run", "pipelines/support-triage.yaml", "--policy", "policies/default.yaml"]
    finished = runner.invoke(app, [*args, "--backend", "emulator", "--state-dir", state])
    assert finished.exit_code == 0, finished.output
