"""The committed JSON Schemas are what `llmflow schema` prints, and they accept the examples."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from ruamel.yaml import YAML

from llmflow.cli.cmd_schema import SchemaKind, schema_text

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize("kind", list(SchemaKind))
def test_committed_schema_is_in_sync(kind: SchemaKind) -> None:
    committed = (ROOT / "schemas" / f"{kind.value}.json").read_text(encoding="utf-8")
    assert committed == schema_text(kind), (
        f"run: llmflow schema {kind.value} > schemas/{kind.value}.json"
    )


@pytest.mark.parametrize(
    ("kind", "folder"), [(SchemaKind.pipeline, "pipelines"), (SchemaKind.policy, "policies")]
)
def test_examples_point_at_and_satisfy_the_schema(kind: SchemaKind, folder: str) -> None:
    jsonschema = pytest.importorskip("jsonschema")
    schema = json.loads(schema_text(kind))
    files = sorted((ROOT / folder).glob("*.yaml"))
    if not files:
        pytest.skip(f"no example files under {folder}/ yet")
    for path in files:
        text = path.read_text(encoding="utf-8")
        assert text.startswith(f"# yaml-language-server: $schema=../schemas/{kind.value}.json"), (
            path
        )
        jsonschema.validate(YAML(typ="safe").load(text), schema)
