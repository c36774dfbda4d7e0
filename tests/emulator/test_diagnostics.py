"""Cache diagnostics through the SDK: ``diagnostics.previous_message_id`` →
``diagnostics.cache_miss_reason``."""

from __future__ import annotations

import json
from typing import Any

import anthropic
import pytest

from llmflow.emulator.diagnostics import FingerprintStore
from llmflow.emulator.tokenizer import (
    BLOCK_OVERHEAD,
    MESSAGE_OVERHEAD,
    TOOL_OVERHEAD,
    count_tokens,
)
from llmflow.emulator.validation import parse_request

MODEL = "claude-haiku-5-5"


def words(n: int, word: str = "job") -> str:
    return " ".join([word] * n)


SYSTEM: Any = [{"type": "text", "text": words(700), "cache_control": {"type": "ephemeral"}}]
TOOLS: Any = [
    {"name": "lookup", "description": words(40, "key"), "input_schema": {"type": "object"}}
]
TOOL_TOKENS = TOOL_OVERHEAD + sum(
    count_tokens(text, "new")
    for text in ("lookup", words(40, "key"), json.dumps({"type": "object"}))
)
SYSTEM_TOKENS = 700 + BLOCK_OVERHEAD
ASK: Any = [{"role": "user", "content": words(50, "map")}]
ASK_TOKENS = 50 + BLOCK_OVERHEAD + MESSAGE_OVERHEAD


async def first_turn(client: anthropic.AsyncAnthropic, **kw: Any) -> Any:
    params: Any = {
        "model": MODEL,
        "max_tokens": 4000,
        "system": SYSTEM,
        "tools": TOOLS,
        "messages": ASK,
    }
    message = await client.messages.create(
        **{**params, **kw}, diagnostics={"previous_message_id": None}
    )
    assert message.diagnostics is None
    return message


async def next_turn(client: anthropic.AsyncAnthropic, previous: Any, **kw: Any) -> Any:
    history: Any = [
        *ASK,
        {
            "role": "assistant",
            "content": [b.model_dump(exclude_none=True) for b in previous.content],
        },
        {"role": "user", "content": "and then?"},
    ]
    params: Any = {
        "model": MODEL,
        "max_tokens": 4000,
        "system": SYSTEM,
        "tools": TOOLS,
        "messages": history,
    }
    return await client.messages.create(
        **{**params, **kw}, diagnostics={"previous_message_id": previous.id}
    )


async def test_appended_turn_is_no_divergence(aclient: anthropic.AsyncAnthropic) -> None:
    first = await first_turn(aclient)
    second = await next_turn(aclient, first)
    assert second.diagnostics is None
    assert second.usage.cache_read_input_tokens == TOOL_TOKENS + SYSTEM_TOKENS


async def test_system_changed(aclient: anthropic.AsyncAnthropic) -> None:
    first = await first_turn(aclient)
    other: Any = [{**SYSTEM[0], "text": "Today is Monday. " + words(700)}]
    second = await next_turn(aclient, first, system=other)
    assert second.diagnostics is not None
    reason = second.diagnostics.cache_miss_reason
    assert reason is not None and reason.type == "system_changed"
    assert reason.cache_missed_input_tokens == SYSTEM_TOKENS + ASK_TOKENS
    assert second.usage.cache_read_input_tokens == 0


async def test_tools_changed(aclient: anthropic.AsyncAnthropic) -> None:
    first = await first_turn(aclient)
    second = await next_turn(aclient, first, tools=[{**TOOLS[0], "name": "search"}])
    reason = second.diagnostics.cache_miss_reason
    assert reason.type == "tools_changed"
    assert reason.cache_missed_input_tokens == TOOL_TOKENS + SYSTEM_TOKENS + ASK_TOKENS


@pytest.mark.parametrize(
    "change", [{"model": "claude-sonnet-5"}, {"model": "claude-opus-5", "speed": "fast"}]
)
async def test_model_or_speed_changed(make_emu: Any, change: dict[str, Any]) -> None:
    client = make_emu().async_client()
    first = await first_turn(client, model="claude-opus-5")
    second = await next_turn(client, first, **change)
    reason = second.diagnostics.cache_miss_reason
    assert reason.type == "model_changed"
    assert reason.cache_missed_input_tokens == TOOL_TOKENS + SYSTEM_TOKENS + ASK_TOKENS
    await client.close()


async def test_messages_changed(aclient: anthropic.AsyncAnthropic) -> None:
    first = await first_turn(aclient)
    edited: Any = [{"role": "user", "content": words(50, "run")}]
    second = await aclient.messages.create(
        model=MODEL,
        max_tokens=4000,
        system=SYSTEM,
        tools=TOOLS,
        messages=[
            *edited,
            {"role": "assistant", "content": "ok"},
            {"role": "user", "content": "x"},
        ],
        diagnostics={"previous_message_id": first.id},
    )
    reason = second.diagnostics.cache_miss_reason
    assert reason.type == "messages_changed"
    assert reason.cache_missed_input_tokens == ASK_TOKENS
    assert second.usage.cache_read_input_tokens == TOOL_TOKENS + SYSTEM_TOKENS


@pytest.mark.parametrize(
    "change",
    [
        {"output_config": {"effort": "high"}},
        {"thinking": {"type": "disabled"}},
        {"tool_choice": {"type": "any"}},
    ],
)
async def test_other_settings_are_unavailable(
    aclient: anthropic.AsyncAnthropic, change: dict[str, Any]
) -> None:
    first = await first_turn(aclient)
    second = await next_turn(aclient, first, **change)
    reason = second.diagnostics.cache_miss_reason
    assert reason.type == "unavailable"
    assert "cache_missed_input_tokens" not in second.diagnostics.model_dump()["cache_miss_reason"]


async def test_previous_message_not_found(aclient: anthropic.AsyncAnthropic) -> None:
    unknown = await aclient.messages.create(
        model=MODEL,
        max_tokens=100,
        messages=ASK,
        diagnostics={"previous_message_id": "msg_nope"},
    )
    assert unknown.diagnostics.cache_miss_reason.type == "previous_message_not_found"
    untracked = await aclient.messages.create(model=MODEL, max_tokens=100, messages=ASK)
    assert untracked.diagnostics is None
    after = await next_turn(aclient, untracked)
    assert after.diagnostics.cache_miss_reason.type == "previous_message_not_found"


async def test_diagnostics_survive_streaming(aclient: anthropic.AsyncAnthropic) -> None:
    first = await first_turn(aclient)
    other: Any = [{**SYSTEM[0], "text": words(699)}]
    async with aclient.messages.stream(
        model=MODEL,
        max_tokens=4000,
        system=other,
        tools=TOOLS,
        messages=ASK,
        diagnostics={"previous_message_id": first.id},
    ) as stream:
        final = await stream.get_final_message()
    assert final.diagnostics is not None
    assert final.diagnostics.cache_miss_reason.type == "system_changed"


def test_store_is_bounded() -> None:
    store = FingerprintStore(limit=2)
    body = {
        "model": MODEL,
        "max_tokens": 5,
        "messages": ASK,
        "diagnostics": {"previous_message_id": None},
    }
    request = parse_request(body)
    for i in range(3):
        assert store.diagnostics(request, f"msg_{i}") is None
    assert len(store) == 2
    gone = parse_request({**body, "diagnostics": {"previous_message_id": "msg_0"}})
    assert store.diagnostics(gone, "msg_3") == {
        "cache_miss_reason": {"type": "previous_message_not_found"}
    }
    kept = parse_request({**body, "diagnostics": {"previous_message_id": "msg_2"}})
    assert store.diagnostics(kept, "msg_4") is None
    untracked = parse_request({"model": MODEL, "max_tokens": 5, "messages": ASK})
    assert store.diagnostics(untracked, "msg_5") is None and len(store) == 2
