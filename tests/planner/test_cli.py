"""``llmflow plan``: table, JSON, errors without tracebacks, --exact-tokens on the emulator."""

from __future__ import annotations

import json
from pathlib import Path

from typer.testing import CliRunner

from llmflow.cli import app

FIXTURES = Path(__file__).parents[1] / "fixtures" / "planner"
ARGS = [str(FIXTURES / "triage.yaml"), "--policy", str(FIXTURES / "policy.yaml")]


def test_table() -> None:
    result = CliRunner().invoke(app, ["plan", *ARGS])
    assert result.exit_code == 0, result.output
    assert (
        "classify" in result.output and "budget: run $2.0000 [budget.per_run_usd]" in result.output
    )


def test_json_is_the_contract() -> None:
    result = CliRunner().invoke(app, ["plan", *ARGS, "--format", "json"])
    assert result.exit_code == 0
    data = json.loads(result.stdout)
    assert data["pipeline"] == "triage" and data["currency"] == "USD"
    assert [s["id"] for s in data["steps"]] == ["classify", "extract", "digest"]


def test_bad_input_exits_2_without_traceback() -> None:
    result = CliRunner().invoke(app, ["plan", *ARGS, "--input", "nope=1"])
    assert result.exit_code == 2
    assert "--input nope: unknown scalar input" in result.stderr
    assert "Traceback" not in result.output + result.stderr


def test_dataset_error_exits_2(tmp_path: Path) -> None:
    (tmp_path / "d.jsonl").write_text('{"a": 1}\nnot json\n')
    (tmp_path / "p.yaml").write_text(
        "name: x\ninputs: {d: {type: jsonl, path: d.jsonl}}\n"
        "steps: {s: {task: classification, for_each: inputs.d, prompt: '{{ item.a }}'}}\n"
    )
    result = CliRunner().invoke(
        app, ["plan", str(tmp_path / "p.yaml"), "--policy", str(FIXTURES / "policy.yaml")]
    )
    assert result.exit_code == 2
    assert "not a JSON line" in result.stderr and "Traceback" not in result.stderr


def test_exact_tokens_against_the_emulator() -> None:
    result = CliRunner().invoke(
        app, ["plan", *ARGS, "--format", "json", "--exact-tokens", "--backend", "emulator"]
    )
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    classify = data["steps"][0]
    assert any("exact tokens: count_tokens" in n for n in classify["notes"])
    estimated = json.loads(CliRunner().invoke(app, ["plan", *ARGS, "--format", "json"]).stdout)
    # the offline estimator tracks the emulator's tokenizer closely on this prose
    exact_prefix = classify["cache"]["prefix_tokens"]
    assert abs(exact_prefix - estimated["steps"][0]["cache"]["prefix_tokens"]) <= exact_prefix // 20


def test_table_never_truncates_money_on_a_narrow_terminal() -> None:
    from rich.console import Console

    from llmflow.cli._config import load_config
    from llmflow.planner import build_plan
    from llmflow.planner.render import render_plan, usd

    pipeline_file, policy_file, catalog = load_config(
        FIXTURES / "triage.yaml", FIXTURES / "policy.yaml"
    )
    assert policy_file is not None
    plan = build_plan(pipeline_file, policy_file, catalog=catalog).plan
    for width, token_columns in ((200, True), (80, False)):
        console = Console(record=True, width=width, color_system=None)
        console.print(render_plan(plan))
        text = console.export_text()
        assert max(len(line.rstrip()) for line in text.splitlines()) <= width
        assert usd(plan.total.cost_max) in text and "…" not in text
        assert ("cached = cache writes + reads" in text) is token_columns
        for note in plan.steps[0].notes:  # wrapped notes keep every word
            assert note.split()[-1] in text
