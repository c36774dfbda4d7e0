"""``llmflow schema pipeline|policy``: JSON Schema for editors (yaml-language-server)."""

from __future__ import annotations

import json
from enum import StrEnum
from typing import Any

import typer

from llmflow.cli._app import app


class SchemaKind(StrEnum):
    pipeline = "pipeline"
    policy = "policy"


def json_schema(kind: SchemaKind) -> dict[str, Any]:
    """The JSON Schema of a pipeline or policy file."""
    from llmflow.spec.pipeline import Pipeline
    from llmflow.spec.policy import Policy

    model = Pipeline if kind is SchemaKind.pipeline else Policy
    schema = model.model_json_schema(by_alias=True)
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "$id": f"https://llmflow.dev/schemas/{kind.value}.json",
        **schema,
    }


def schema_text(kind: SchemaKind) -> str:
    """The schema as the committed ``schemas/<kind>.json`` file holds it."""
    return json.dumps(json_schema(kind), indent=2, sort_keys=True) + "\n"


@app.command("schema")
def schema(kind: SchemaKind = typer.Argument(..., help="pipeline or policy")) -> None:
    """Print the JSON Schema of pipeline or policy files.

    Point yaml-language-server at it with a first line such as
    `# yaml-language-server: $schema=../schemas/pipeline.json`.
    """
    typer.echo(schema_text(kind), nl=False)
