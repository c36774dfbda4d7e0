"""Caching on today's models: minimum lengths, automatic caching, and the settings that
invalidate cached prefixes (speed, thinking, effort, tool_choice, output format)."""

from __future__ import annotations

from typing import Any

import anthropic
import pytest

from llmflow.catalog import load_catalog
from llmflow.emulator.tokenizer import BLOCK_OVERHEAD, MESSAGE_OVERHEAD

pytestmark = pytest.mark.filterwarnings("ignore:Using Claude with .* is deprecated:UserWarning")

CATALOG = load_catalog()
OPUS = "claude-opus-5-5"  # min 512, fast offered, effort default medium, always thinks


def words(n: int, word: str = "job") -> str:
    """``n`` tokens of text in either family (three-letter words are one token)."""
    return " ".join([word] * n)


def system(n: int) -> list[Any]:
    return [{"type": "text", "text": words(n), "cache_control": {"type": "ephemeral"}}]


def turn(n: int) -> list[Any]:
    block = {"type": "text", "text": words(n, "map"), "cache_control": {"type": "ephemeral"}}
    return [{"role": "user", "content": [block]}]


SYSTEM = 700 + BLOCK_OVERHEAD
MESSAGE = 300 + BLOCK_OVERHEAD + MESSAGE_OVERHEAD


@pytest.mark.parametrize(
    ("model", "cached"),
    [
        ("claude-haiku-5-5", True),  # 512
        ("claude-opus-5-5", True),  # 512
        ("claude-sonnet-5", False),  # 1024
        ("claude-opus-4-7", False),  # 2048
    ],
)
async def test_minimum_cacheable_length_per_model(
    aclient: anthropic.AsyncAnthropic, model: str, cached: bool
) -> None:
    assert (CATALOG.models[model].min_cacheable_tokens <= SYSTEM) == cached
    message = await aclient.messages.create(
        model=model,
        max_tokens=16_000,
        system=system(700),
        messages=[{"role": "user", "content": "q"}],
    )
    assert message.usage.cache_creation_input_tokens == (SYSTEM if cached else 0)


async def test_automatic_caching_uses_one_of_the_four_breakpoints(
    aclient: anthropic.AsyncAnthropic,
) -> None:
    blocks = [
        {"type": "text", "text": words(200), "cache_control": {"type": "ephemeral"}}
        for _ in range(4)
    ]
    auto: Any = {"cache_control": {"type": "ephemeral"}}
    with pytest.raises(anthropic.BadRequestError, match="maximum of 4"):
        await aclient.messages.create(
            model=OPUS,
            max_tokens=16_000,
            system=blocks,
            messages=[{"role": "user", "content": words(100, "map")}],
            extra_body=auto,
        )
    kw: Any = {
        "model": OPUS,
        "max_tokens": 16_000,
        "system": blocks[:3],
        "messages": [{"role": "user", "content": words(100, "map")}],
        "extra_body": auto,
    }
    first = await aclient.messages.create(**kw)
    whole = 3 * (200 + BLOCK_OVERHEAD) + 100 + BLOCK_OVERHEAD + MESSAGE_OVERHEAD
    assert first.usage.cache_creation_input_tokens == whole
    second = await aclient.messages.create(**kw)
    assert second.usage.cache_read_input_tokens == whole


async def _pair(
    client: anthropic.AsyncAnthropic, first: dict[str, Any], second: dict[str, Any]
) -> Any:
    base: dict[str, Any] = {"max_tokens": 16_000, "system": system(700), "messages": turn(300)}
    await client.messages.create(**{**base, **first})
    return (await client.messages.create(**{**base, **second})).usage


@pytest.mark.parametrize(
    ("first", "second", "read"),
    [
        ({"model": OPUS}, {"model": OPUS}, SYSTEM + MESSAGE),
        # naming the model's default effort changes nothing
        ({"model": OPUS}, {"model": OPUS, "output_config": {"effort": "medium"}}, SYSTEM + MESSAGE),
        # another effort misses the messages, keeps tools and system
        ({"model": OPUS}, {"model": OPUS, "output_config": {"effort": "high"}}, SYSTEM),
        # speed and output format start a new cache
        ({"model": OPUS}, {"model": OPUS, "speed": "fast"}, 0),
        (
            {"model": OPUS},
            {
                "model": OPUS,
                "output_config": {
                    "format": {
                        "type": "json_schema",
                        "schema": {
                            "type": "object",
                            "properties": {},
                            "additionalProperties": False,
                        },
                    }
                },
            },
            0,
        ),
        # thinking: Haiku 5.5 thinks adaptively by default, so naming that is no change
        (
            {"model": "claude-haiku-5-5"},
            {"model": "claude-haiku-5-5", "thinking": {"type": "adaptive"}},
            SYSTEM + MESSAGE,
        ),
        (
            {"model": "claude-haiku-5-5"},
            {"model": "claude-haiku-5-5", "thinking": {"type": "disabled"}},
            SYSTEM,
        ),
        # the display of thinking does not change the prompt
        (
            {"model": OPUS, "thinking": {"type": "adaptive"}},
            {"model": OPUS, "thinking": {"type": "adaptive", "display": "summarized"}},
            SYSTEM + MESSAGE,
        ),
    ],
)
async def test_settings_that_invalidate(
    aclient: anthropic.AsyncAnthropic, first: dict[str, Any], second: dict[str, Any], read: int
) -> None:
    usage = await _pair(aclient, first, second)
    assert usage.cache_read_input_tokens == read
    assert usage.cache_creation_input_tokens == SYSTEM + MESSAGE - read


async def test_tool_choice_change_misses_messages_only(aclient: anthropic.AsyncAnthropic) -> None:
    tools: Any = [
        {"name": "lookup", "input_schema": {"type": "object"}, "description": words(600, "key")}
    ]
    tools[0]["cache_control"] = {"type": "ephemeral"}
    tool_tokens = (
        await aclient.messages.create(
            model="claude-haiku-5-5", max_tokens=16_000, tools=tools, messages=turn(300)
        )
    ).usage.cache_creation_input_tokens - MESSAGE
    assert tool_tokens > 600
    kw: Any = {
        "model": "claude-haiku-5-5",
        "max_tokens": 16_000,
        "tools": tools,
        "messages": turn(300),
    }
    same = await aclient.messages.create(tool_choice={"type": "auto"}, **kw)
    assert same.usage.cache_read_input_tokens == tool_tokens + MESSAGE  # auto is the default
    forced = await aclient.messages.create(tool_choice={"type": "any"}, **kw)
    assert forced.usage.cache_read_input_tokens == tool_tokens
    assert forced.usage.cache_creation_input_tokens == MESSAGE


async def test_enabled_budget_change_invalidates_messages(
    aclient: anthropic.AsyncAnthropic,
) -> None:
    model = "claude-haiku-4-5"  # min 4096, old tokenizer
    kw: Any = {
        "model": model,
        "max_tokens": 8000,
        "system": system(4200),
        "messages": turn(100),
    }
    sys_tokens = 4200 + BLOCK_OVERHEAD
    msg_tokens = 100 + BLOCK_OVERHEAD + MESSAGE_OVERHEAD
    await aclient.messages.create(thinking={"type": "enabled", "budget_tokens": 2000}, **kw)
    same = await aclient.messages.create(thinking={"type": "enabled", "budget_tokens": 2000}, **kw)
    assert same.usage.cache_read_input_tokens == sys_tokens + msg_tokens
    other = await aclient.messages.create(thinking={"type": "enabled", "budget_tokens": 3000}, **kw)
    assert other.usage.cache_read_input_tokens == sys_tokens
    off = await aclient.messages.create(**kw)
    assert off.usage.cache_read_input_tokens == sys_tokens
    explicit_off = await aclient.messages.create(thinking={"type": "disabled"}, **kw)
    assert explicit_off.usage.cache_read_input_tokens == sys_tokens + msg_tokens
