"""`llmflow validate` and `llmflow schema` as a user runs them."""

from __future__ import annotations

import json

from typer.testing import CliRunner

from llmflow.cli import app

runner = CliRunner()


def test_valid_pair_exits_zero() -> None:
    result = runner.invoke(
        app,
        [
            "validate",
            "tests/fixtures/pipelines/valid/triage.yaml",
            "--policy",
            "tests/fixtures/policies/basic.yaml",
        ],
    )
    assert result.exit_code == 0, result.output
    assert "ok  tests/fixtures/pipelines/valid/triage.yaml: 5 steps" in result.output


def test_invalid_file_exits_two_with_every_error_and_no_traceback() -> None:
    result = runner.invoke(app, ["validate", "tests/fixtures/pipelines/invalid/unknown_refs.yaml"])
    assert result.exit_code == 2
    assert "Traceback" not in result.output
    assert "7 errors" in result.output
    assert "unknown_refs.yaml:8:15: steps.classify.for_each" in result.output


def test_missing_file_is_a_config_error() -> None:
    result = runner.invoke(app, ["validate", "no/such/pipeline.yaml"])
    assert result.exit_code == 2
    assert "no/such/pipeline.yaml:1:1: cannot read file" in result.output


def test_schema_prints_json_schema() -> None:
    result = runner.invoke(app, ["schema", "policy"])
    assert result.exit_code == 0
    schema = json.loads(result.output)
    assert schema["title"] == "Policy" and "routes" in schema["properties"]


def test_version() -> None:
    result = runner.invoke(app, ["--version"])
    assert result.exit_code == 0 and result.output.startswith("llmflow ")
