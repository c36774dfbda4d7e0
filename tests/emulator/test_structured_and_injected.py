"""Structured outputs (``output_config.format``) and the system prompt the API injects
for tools and structured output, billed as uncached input."""

from __future__ import annotations

import json
from typing import Any

import anthropic
import jsonschema
import pytest

from llmflow.catalog import load_catalog
from llmflow.emulator.tokenizer import TOOL_OVERHEAD, count_tokens

HELLO: list[Any] = [{"role": "user", "content": "Classify: the invoice is wrong"}]
CATALOG = load_catalog()

SCHEMAS: list[dict[str, Any]] = [
    {
        "type": "object",
        "properties": {
            "label": {"type": "string", "enum": ["bug", "billing", "other"]},
            "confidence": {"type": "number"},
            "urgent": {"type": "boolean"},
        },
        "required": ["label", "confidence", "urgent"],
        "additionalProperties": False,
    },
    {
        "type": "object",
        "properties": {
            "items": {
                "type": "array",
                "items": {
                    "type": "object",
                    "properties": {"name": {"type": "string"}, "qty": {"type": "integer"}},
                    "required": ["name", "qty"],
                    "additionalProperties": False,
                },
            },
            "note": {"anyOf": [{"type": "string"}, {"type": "null"}]},
        },
        "required": ["items", "note"],
        "additionalProperties": False,
    },
]


def fmt(schema: dict[str, Any]) -> Any:
    return {"format": {"type": "json_schema", "schema": schema}}


@pytest.mark.parametrize("schema", SCHEMAS)
@pytest.mark.parametrize("model", ["claude-sonnet-5-5", "claude-opus-4-7", "claude-haiku-4-5"])
async def test_answer_is_json_valid_for_the_schema(
    aclient: anthropic.AsyncAnthropic, model: str, schema: dict[str, Any]
) -> None:
    message = await aclient.messages.create(
        model=model, max_tokens=16_000, messages=HELLO, output_config=fmt(schema)
    )
    text = message.content[-1]
    assert text.type == "text" and message.stop_reason == "end_turn"
    jsonschema.validate(json.loads(text.text), schema)
    details = message.usage.output_tokens_details
    thinking = details.thinking_tokens if details else 0
    family = CATALOG.models[model].tokenizer
    assert message.usage.output_tokens == thinking + count_tokens(text.text, family)
    async with aclient.messages.stream(
        model=model, max_tokens=16_000, messages=HELLO, output_config=fmt(schema)
    ) as stream:
        final = await stream.get_final_message()
    assert final.content[-1].type == "text" and final.content[-1].text == text.text


async def test_cut_at_max_tokens(aclient: anthropic.AsyncAnthropic) -> None:
    kw: Any = {"model": "claude-opus-4-7", "messages": HELLO, "output_config": fmt(SCHEMAS[1])}
    full = await aclient.messages.create(max_tokens=16_000, **kw)
    whole = full.content[0].text  # type: ignore[union-attr]
    cut = await aclient.messages.create(max_tokens=7, **kw)
    assert cut.stop_reason == "max_tokens" and cut.usage.output_tokens == 7
    part = cut.content[0]
    assert part.type == "text" and count_tokens(part.text, "new") == 7
    assert whole.startswith(part.text) and part.text != whole


async def test_forced_tool_and_format_on_a_model_that_takes_both(
    aclient: anthropic.AsyncAnthropic,
) -> None:
    tool: Any = {"name": "record", "input_schema": SCHEMAS[0]}
    message = await aclient.messages.create(
        model="claude-haiku-5-5",
        max_tokens=16_000,
        messages=HELLO,
        tools=[tool],
        tool_choice={"type": "tool", "name": "record"},
    )
    block = message.content[-1]
    assert block.type == "tool_use" and message.stop_reason == "tool_use"
    jsonschema.validate(block.input, SCHEMAS[0])


TOOLS: Any = [{"name": "lookup", "description": "Look it up.", "input_schema": SCHEMAS[0]}]


@pytest.mark.parametrize("model", ["claude-haiku-4-5", "claude-opus-5", "claude-haiku-5-5"])
async def test_injected_prompt_is_billed_and_counted(
    aclient: anthropic.AsyncAnthropic, model: str
) -> None:
    injected = CATALOG.models[model].injected_prompt_tokens

    async def count(**kw: Any) -> int:
        return (await aclient.messages.count_tokens(model=model, messages=HELLO, **kw)).input_tokens

    bare = await count()
    auto = await count(tools=TOOLS)
    forced = await count(tools=TOOLS, tool_choice={"type": "any"})
    none = await count(tools=TOOLS, tool_choice={"type": "none"})
    structured = await count(output_config=fmt(SCHEMAS[0]))
    assert auto == none
    assert auto - forced == injected.tools - injected.forced_tool
    assert structured - bare == injected.structured_output
    family = CATALOG.models[model].tokenizer
    tool = TOOL_OVERHEAD + sum(
        count_tokens(text, family)
        for text in ("lookup", "Look it up.", json.dumps(SCHEMAS[0], ensure_ascii=False))
    )
    assert auto - bare == injected.tools + tool
    message = await aclient.messages.create(
        model=model, max_tokens=16_000, messages=HELLO, tools=TOOLS, tool_choice={"type": "any"}
    )
    assert message.usage.input_tokens == forced


async def test_injected_prompt_is_never_cached(aclient: anthropic.AsyncAnthropic) -> None:
    model = "claude-haiku-5-5"  # minimum cacheable 512
    tools: Any = [{**TOOLS[0], "description": " ".join(["job"] * 600)}]
    tools[0]["cache_control"] = {"type": "ephemeral"}
    kw: Any = {"model": model, "max_tokens": 4000, "messages": HELLO, "tools": tools}
    first = await aclient.messages.create(**kw)
    second = await aclient.messages.create(**kw)
    injected = CATALOG.models[model].injected_prompt_tokens.tools
    assert second.usage.cache_read_input_tokens == first.usage.cache_creation_input_tokens > 600
    assert second.usage.input_tokens == first.usage.input_tokens >= injected
    counted = await aclient.messages.count_tokens(model=model, messages=HELLO, tools=tools)
    assert counted.input_tokens == (
        second.usage.input_tokens + (second.usage.cache_read_input_tokens or 0)
    )


async def test_malformed_output_config_is_a_400(aclient: anthropic.AsyncAnthropic) -> None:
    for config in (
        {"format": {"type": "json", "schema": SCHEMAS[0]}},
        {"format": {"type": "json_schema"}},
        {"verbosity": "low"},
    ):
        with pytest.raises(anthropic.BadRequestError, match="output_config"):
            await aclient.messages.create(
                model="claude-sonnet-5-5",
                max_tokens=100,
                messages=HELLO,
                output_config=config,  # type: ignore[arg-type]
            )
