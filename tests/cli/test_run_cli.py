"""`llmflow run` as a user runs it: the closing lines and the resume command."""

from __future__ import annotations

import shlex
from pathlib import Path

from typer.testing import CliRunner

from llmflow.cli import app

runner = CliRunner()
PIPELINE = "tests/fixtures/run/small_chain.yaml"
POLICY = "tests/fixtures/run/policy.yaml"


def _run(*args: str) -> tuple[int, str, str]:
    result = runner.invoke(app, ["run", PIPELINE, "--policy", POLICY, *args])
    return result.exit_code, result.stdout, result.stderr


def test_budget_stop_explains_and_the_resume_command_finishes_the_run(tmp_path: Path) -> None:
    state = str(tmp_path / "state")
    code, out, err = _run("--backend", "emulator", "--state-dir", state, "--budget", "0.001")
    assert code == 3, out + err
    assert "budget_stopped" in out and "saved None" not in out
    assert "stopped by the budget after $" in err
    assert (
        "the per-run budget (--budget = $0.001) would be passed" in err and "raise --budget" in err
    )
    resume = next(line for line in err.splitlines() if line.startswith("resume with: "))
    argv = shlex.split(resume.removeprefix("resume with: "))
    assert argv[:2] == ["llmflow", "run"] and argv[argv.index("--store") + 1] == state
    assert argv[argv.index("--budget") + 1] == "0.07"  # the plan's max, rounded up to cents

    resumed = runner.invoke(app, argv[1:])
    assert resumed.exit_code == 0, resumed.output
    assert ": succeeded" in resumed.stdout and "resume with" not in resumed.stderr


def test_an_interrupted_style_resume_keeps_the_given_budget_and_log_format() -> None:
    from llmflow.cli.cmd_run import ResumeArgs

    args = ResumeArgs(
        Path("p.yaml"), Path("q.yaml"), "emulator", "r1", ".llmflow", ["week=W1"],
        budget="2.50", log_format="json",
    )  # fmt: skip
    assert args.command() == (
        "llmflow run p.yaml --policy q.yaml --backend emulator --run-id r1"
        " --input week=W1 --budget 2.50 --log-format json"
    )
