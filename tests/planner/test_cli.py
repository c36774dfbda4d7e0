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
    assert "classify" in result.output and "budget $2 per run" in result.output


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
