"""Forced tools (structured output), the tokenizer contract, count_tokens, faults, CLI."""

from __future__ import annotations

import json
import random
from typing import Any

import anthropic
import jsonschema
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

from llmflow.catalog import load_catalog
from llmflow.cli import app as cli_app
from llmflow.emulator.config import FaultSpecError, parse_faults
from llmflow.emulator.generation import SchemaInstance
from llmflow.emulator.tokenizer import count_tokens, tokenize
from llmflow.emulator.validation import parse_request

MODEL = "claude-haiku-4-5"

SCHEMAS: list[dict[str, Any]] = [
    {
        "type": "object",
        "properties": {
            "label": {"type": "string", "enum": ["bug", "billing", "other"]},
            "confidence": {"type": "number", "minimum": 0, "maximum": 1},
            "priority": {"type": "integer", "minimum": 1, "maximum": 5},
            "urgent": {"type": "boolean"},
        },
        "required": ["label", "confidence", "priority", "urgent"],
        "additionalProperties": False,
    },
    {
        "type": "object",
        "properties": {
            "items": {
                "type": "array",
                "minItems": 2,
                "maxItems": 4,
                "items": {
                    "type": "object",
                    "properties": {
                        "name": {"type": "string", "minLength": 3, "maxLength": 8},
                        "qty": {"type": "integer", "exclusiveMinimum": 0, "exclusiveMaximum": 10},
                        "tags": {"type": "array", "items": {"type": "string"}},
                    },
                    "required": ["name", "qty"],
                },
            },
            "note": {"type": ["string", "null"]},
            "ref": {"$ref": "#/$defs/ref"},
        },
        "required": ["items", "ref"],
        "$defs": {
            "ref": {
                "type": "object",
                "properties": {
                    "id": {"type": "integer", "multipleOf": 7, "minimum": 10, "maximum": 60}
                },
                "required": ["id"],
            }
        },
    },
    {"type": "object", "properties": {}},
    {
        "type": "object",
        "properties": {
            "when": {"type": "string", "format": "date"},
            "score": {"type": "number", "exclusiveMinimum": -1.5, "exclusiveMaximum": -1.0},
            "kind": {"const": "fixed"},
            "choice": {"anyOf": [{"type": "integer", "maximum": -3}, {"type": "string"}]},
        },
        "required": ["when", "score", "kind", "choice"],
    },
]


@pytest.mark.parametrize("schema", SCHEMAS)
async def test_forced_tool_input_conforms(
    aclient: anthropic.AsyncAnthropic, schema: dict[str, Any]
) -> None:
    tools: Any = [
        {"name": "record", "description": "Record the answer.", "input_schema": schema},
        {"name": "other", "input_schema": {"type": "object"}},
    ]
    kw: dict[str, Any] = {
        "model": MODEL,
        "max_tokens": 1000,
        "tools": tools,
        "messages": [{"role": "user", "content": "Classify: the invoice is wrong"}],
    }
    message = await aclient.messages.create(tool_choice={"type": "tool", "name": "record"}, **kw)
    assert message.stop_reason == "tool_use"
    block = message.content[0]
    assert block.type == "tool_use" and block.name == "record" and block.id.startswith("toolu_")
    jsonschema.validate(block.input, schema)
    again = await aclient.messages.create(tool_choice={"type": "tool", "name": "record"}, **kw)
    assert again.content[0].input == block.input  # type: ignore[union-attr]
    async with aclient.messages.stream(
        tool_choice={"type": "tool", "name": "record"}, **kw
    ) as stream:
        final = await stream.get_final_message()
    assert final.content[0].input == block.input  # type: ignore[union-attr]
    anyone = await aclient.messages.create(tool_choice={"type": "any"}, **kw)
    assert anyone.stop_reason == "tool_use" and anyone.content[0].type == "tool_use"


@settings(max_examples=200, deadline=None)
@given(st.integers(0, 2**32), st.sampled_from(SCHEMAS))
def test_schema_instances_always_conform(seed: int, schema: dict[str, Any]) -> None:
    jsonschema.validate(SchemaInstance(schema, random.Random(seed)).build(), schema)


@given(st.text())
def test_tokenizer_covers_text_and_every_token_has_a_byte(text: str) -> None:
    tokens = tokenize(text)
    assert "".join(tokens) == text
    assert all(len(t.encode()) >= 1 for t in tokens)
    assert count_tokens(text) == len(tokens) <= len(text.encode())


def test_tokenizer_is_about_four_bytes_per_token_on_prose() -> None:
    prose = (
        "Customer support tickets should be classified by urgency and routed to the right"
        " team. The planner prices every request before anything is sent, and the tracker"
        " records what each step actually cost so budgets hold under concurrency."
    )
    ratio = len(prose.encode()) / count_tokens(prose)
    assert 3.0 <= ratio <= 5.0


_text = st.text(min_size=1, max_size=40)
_block = st.fixed_dictionaries({"type": st.just("text"), "text": _text})
_content = st.one_of(_text, st.lists(_block, min_size=1, max_size=3))
_message = st.fixed_dictionaries(
    {"role": st.sampled_from(["user", "assistant"]), "content": _content}
)
_tool = st.builds(
    lambda name, desc, props: {
        "name": name,
        "description": desc,
        "input_schema": {"type": "object", "properties": {p: {"type": "string"} for p in props}},
    },
    st.from_regex(r"[a-z]{1,10}", fullmatch=True),
    st.text(max_size=30),
    st.lists(st.from_regex(r"[a-z]{1,6}", fullmatch=True), max_size=3),
)
_request = st.fixed_dictionaries(
    {"messages": st.lists(_message, min_size=1, max_size=4)},
    optional={
        "system": st.one_of(_text, st.lists(_block, min_size=1, max_size=2)),
        "tools": st.lists(_tool, min_size=1, max_size=2, unique_by=lambda t: t["name"]),
    },
)


def _planner_bound(body: dict[str, Any], model: str = MODEL) -> int:
    """The planner's upper bound: bytes of all text + 64/request + 8/message + 8/block +
    16/tool, plus the system prompt the API injects for tools."""
    size, blocks = 0, 0
    system = body.get("system")
    if isinstance(system, str):
        size, blocks = len(system.encode()), 1
    elif system:
        size += sum(len(b["text"].encode()) for b in system)
        blocks += len(system)
    for message in body["messages"]:
        content = message["content"]
        if isinstance(content, str):
            size, blocks = size + len(content.encode()), blocks + 1
        else:
            size += sum(len(b["text"].encode()) for b in content)
            blocks += len(content)
    tools = body.get("tools") or []
    for tool in tools:
        size += len(
            (tool["name"] + tool["description"] + json.dumps(tool["input_schema"])).encode()
        )
    injected = load_catalog().models[model].injected_prompt_tokens.tools if tools else 0
    return size + 64 + 8 * len(body["messages"]) + 8 * blocks + 16 * len(tools) + injected


@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(body=_request)
async def test_count_tokens_equals_total_billed(make_emu: Any, body: dict[str, Any]) -> None:
    emu = make_emu()
    client = emu.async_client()
    counted = await client.messages.count_tokens(model=MODEL, **body)
    message = await client.messages.create(model=MODEL, max_tokens=3, **body)
    u = message.usage
    assert counted.input_tokens == u.input_tokens + (u.cache_creation_input_tokens or 0) + (
        u.cache_read_input_tokens or 0
    )
    assert counted.input_tokens <= _planner_bound(body)
    await client.close()


@settings(max_examples=200, deadline=None)
@given(body=_request)
def test_input_tokens_within_planner_bound(body: dict[str, Any]) -> None:
    parsed = parse_request({"model": MODEL, "max_tokens": 1, **body})
    assert parsed.total_input_tokens <= _planner_bound(body)


async def test_faults_are_seeded_and_bill_nothing(make_emu: Any) -> None:
    def run_kinds(seed: int) -> Any:
        return make_emu(
            faults=parse_faults("rate_limit=0.3,overloaded=0.2,server_error=0.1"), seed=seed
        )

    async def kinds(emu: Any) -> list[str]:
        client = emu.async_client()
        seen = []
        for _ in range(30):
            try:
                await client.messages.create(
                    model=MODEL, max_tokens=2, messages=[{"role": "user", "content": "x"}]
                )
                seen.append("ok")
            except anthropic.RateLimitError as exc:
                assert exc.status_code == 429 and exc.response.headers["retry-after"]
                seen.append("rate_limit")
            except anthropic.APIStatusError as exc:
                seen.append(exc.body["error"]["type"])  # type: ignore[index]
                assert exc.status_code in (500, 529)
        await client.messages.count_tokens(model=MODEL, messages=[{"role": "user", "content": "x"}])
        await client.close()
        return seen

    emu_a = run_kinds(7)
    first = await kinds(emu_a)
    assert await kinds(run_kinds(7)) == first
    assert {"ok", "rate_limit", "overloaded_error", "api_error"} <= set(first)
    ledger = await emu_a.ledger()
    assert len(ledger["requests"]) == first.count("ok")


async def test_sdk_retries_through_faults(make_emu: Any) -> None:
    emu = make_emu(faults=parse_faults("overloaded=0.5"), seed=3)
    client = emu.async_client(max_retries=8)
    for _ in range(3):
        await client.messages.create(
            model=MODEL, max_tokens=2, messages=[{"role": "user", "content": "x"}]
        )
    assert len((await emu.ledger())["requests"]) == 3


@pytest.mark.parametrize(
    "spec",
    [
        "bogus=0.1",
        "rate_limit",
        "rate_limit=x",
        "rate_limit=1.5",
        "rate_limit=0.6,overloaded=0.6",
        "rate_limit=0.1,rate_limit=0.2",
    ],
)
def test_bad_fault_specs(spec: str) -> None:
    with pytest.raises(FaultSpecError):
        parse_faults(spec)


def test_cli_rejects_bad_faults_with_exit_2() -> None:
    result = CliRunner().invoke(cli_app, ["emulator", "--faults", "nope=1"])
    assert result.exit_code == 2
    assert "--faults" in result.output and len(result.output.strip().splitlines()) == 1
