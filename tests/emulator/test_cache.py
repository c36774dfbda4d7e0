"""Prompt-cache mechanics through the SDK, with an injected clock."""

from __future__ import annotations

import asyncio
from typing import Any

import anthropic
import pytest

from llmflow.emulator.tokenizer import BLOCK_OVERHEAD

pytestmark = pytest.mark.filterwarnings("ignore:The model .* is deprecated:DeprecationWarning")

SONNET45 = "claude-sonnet-4-5"  # min cacheable 1024
SONNET46 = "claude-sonnet-4-6"  # min cacheable 2048


def words(n: int, word: str = "word") -> str:
    """Exactly ``n`` tokens of text."""
    return " ".join([word] * n)


def cached_system(n: int, ttl: str = "5m") -> list[Any]:
    return [{"type": "text", "text": words(n), "cache_control": {"type": "ephemeral", "ttl": ttl}}]


def ask(text: str) -> list[Any]:
    return [{"role": "user", "content": text}]


async def total(client: anthropic.AsyncAnthropic, **kwargs: Any) -> int:
    kwargs.pop("max_tokens", None)
    counted = await client.messages.count_tokens(**kwargs)
    return counted.input_tokens


def billed(usage: Any) -> int:
    return int(
        usage.input_tokens + usage.cache_creation_input_tokens + usage.cache_read_input_tokens
    )


async def test_write_then_read(aclient: anthropic.AsyncAnthropic) -> None:
    system = cached_system(1500)
    first = await aclient.messages.create(
        model=SONNET45, max_tokens=5, system=system, messages=ask("first question")
    )
    prefix = 1500 + BLOCK_OVERHEAD
    assert first.usage.cache_creation_input_tokens == prefix
    assert first.usage.cache_creation is not None
    assert first.usage.cache_creation.ephemeral_5m_input_tokens == prefix
    assert first.usage.cache_read_input_tokens == 0
    second = await aclient.messages.create(
        model=SONNET45, max_tokens=5, system=system, messages=ask("another question entirely")
    )
    assert second.usage.cache_read_input_tokens == prefix
    assert second.usage.cache_creation_input_tokens == 0
    assert billed(second.usage) == await total(
        aclient, model=SONNET45, system=system, messages=ask("another question entirely")
    )


async def test_below_minimum_caches_nothing(aclient: anthropic.AsyncAnthropic) -> None:
    system = cached_system(1000)  # 1001 < 1024
    for _ in range(2):
        message = await aclient.messages.create(
            model=SONNET45, max_tokens=5, system=system, messages=ask("q")
        )
        assert message.usage.cache_creation_input_tokens == 0
        assert message.usage.cache_read_input_tokens == 0
    # The same prefix is cacheable for a model with a lower minimum only.
    sonnet46 = await aclient.messages.create(
        model=SONNET46, max_tokens=5, system=cached_system(2000), messages=ask("q")
    )
    assert sonnet46.usage.cache_creation_input_tokens == 0


async def test_ttl_5m_refreshed_on_hit(aclient: anthropic.AsyncAnthropic, clock: Any) -> None:
    system = cached_system(1500)
    kw: dict[str, Any] = {
        "model": SONNET45,
        "max_tokens": 5,
        "system": system,
        "messages": ask("q"),
    }
    assert (await aclient.messages.create(**kw)).usage.cache_creation_input_tokens > 0
    clock.advance(299)
    assert (await aclient.messages.create(**kw)).usage.cache_read_input_tokens > 0
    clock.advance(299)  # 598 s after the write, but the hit at 299 s refreshed it
    assert (await aclient.messages.create(**kw)).usage.cache_read_input_tokens > 0
    clock.advance(301)
    expired = await aclient.messages.create(**kw)
    assert expired.usage.cache_read_input_tokens == 0
    assert expired.usage.cache_creation_input_tokens == 1500 + BLOCK_OVERHEAD


async def test_ttl_1h(aclient: anthropic.AsyncAnthropic, clock: Any) -> None:
    system = cached_system(1500, ttl="1h")
    kw: dict[str, Any] = {
        "model": SONNET45,
        "max_tokens": 5,
        "system": system,
        "messages": ask("q"),
    }
    first = await aclient.messages.create(**kw)
    assert first.usage.cache_creation is not None
    assert first.usage.cache_creation.ephemeral_1h_input_tokens == 1501
    assert first.usage.cache_creation.ephemeral_5m_input_tokens == 0
    clock.advance(3599)
    assert (await aclient.messages.create(**kw)).usage.cache_read_input_tokens == 1501
    clock.advance(3601)
    assert (await aclient.messages.create(**kw)).usage.cache_read_input_tokens == 0


async def test_concurrent_cold_requests_all_write(make_emu: Any, clock: Any) -> None:
    emu = make_emu(clock=clock, latency_ms=50)
    client = emu.async_client()
    kw: dict[str, Any] = {"model": SONNET45, "max_tokens": 5, "system": cached_system(1500)}
    # The clock stands still: every request arrives before the first response begins.
    cold = await asyncio.gather(
        *(client.messages.create(messages=ask(f"q{i}"), **kw) for i in range(4))
    )
    assert [m.usage.cache_creation_input_tokens for m in cold] == [1501] * 4
    assert all(m.usage.cache_read_input_tokens == 0 for m in cold)
    clock.advance(0.05)  # the first writer's response has begun
    warm = await client.messages.create(messages=ask("later"), **kw)
    assert warm.usage.cache_read_input_tokens == 1501
    ledger = await emu.ledger()
    assert ledger["totals"]["cache_creation_input_tokens"] == 4 * 1501
    await client.close()


async def test_not_readable_before_response_begins(make_emu: Any, clock: Any) -> None:
    emu = make_emu(clock=clock, latency_ms=100)
    client = emu.async_client()
    kw: dict[str, Any] = {"model": SONNET45, "max_tokens": 5, "system": cached_system(1500)}
    await client.messages.create(messages=ask("a"), **kw)
    clock.advance(0.099)
    assert (
        await client.messages.create(messages=ask("b"), **kw)
    ).usage.cache_read_input_tokens == 0
    clock.advance(0.002)
    assert (await client.messages.create(messages=ask("c"), **kw)).usage.cache_read_input_tokens > 0
    await client.close()


def blocks(k: int, breakpoint_at: int) -> list[Any]:
    content: list[dict[str, Any]] = [{"type": "text", "text": words(1500)}]
    content += [{"type": "text", "text": f"note {i}"} for i in range(1, k + 1)]
    content[breakpoint_at]["cache_control"] = {"type": "ephemeral"}
    return [{"role": "user", "content": content}]


async def test_lookback_20_blocks(aclient: anthropic.AsyncAnthropic) -> None:
    base = await aclient.messages.create(model=SONNET45, max_tokens=5, messages=blocks(0, 0))
    written = base.usage.cache_creation_input_tokens
    assert written > 0
    within = await aclient.messages.create(model=SONNET45, max_tokens=5, messages=blocks(20, 20))
    assert within.usage.cache_read_input_tokens == written
    assert within.usage.cache_creation_input_tokens == 20 * (2 + BLOCK_OVERHEAD)


async def test_lookback_misses_beyond_20_blocks(aclient: anthropic.AsyncAnthropic) -> None:
    await aclient.messages.create(model=SONNET45, max_tokens=5, messages=blocks(0, 0))
    beyond = await aclient.messages.create(model=SONNET45, max_tokens=5, messages=blocks(21, 21))
    assert beyond.usage.cache_read_input_tokens == 0
    assert (
        beyond.usage.cache_creation_input_tokens == billed(beyond.usage) - beyond.usage.input_tokens
    )
    assert beyond.usage.cache_creation_input_tokens > 1500


async def test_different_model_misses(aclient: anthropic.AsyncAnthropic) -> None:
    kw: dict[str, Any] = {"max_tokens": 5, "system": cached_system(2500), "messages": ask("q")}
    await aclient.messages.create(model=SONNET45, **kw)
    other = await aclient.messages.create(model=SONNET46, **kw)
    assert other.usage.cache_read_input_tokens == 0
    assert other.usage.cache_creation_input_tokens == 2501


async def test_tool_change_invalidates_system_change_keeps_tools(
    aclient: anthropic.AsyncAnthropic,
) -> None:
    def tools(desc: str) -> list[Any]:
        return [
            {
                "name": "lookup",
                "description": desc + " " + words(1200),
                "input_schema": {"type": "object", "properties": {"q": {"type": "string"}}},
                "cache_control": {"type": "ephemeral"},
            }
        ]

    def system(text: str) -> list[Any]:
        return [
            {
                "type": "text",
                "text": text + " " + words(300),
                "cache_control": {"type": "ephemeral"},
            }
        ]

    first = await aclient.messages.create(
        model=SONNET45, max_tokens=5, tools=tools("A"), system=system("S1"), messages=ask("q")
    )
    tool_tokens = first.usage.cache_creation_input_tokens - (301 + BLOCK_OVERHEAD)
    assert tool_tokens > 1024
    new_system = await aclient.messages.create(
        model=SONNET45, max_tokens=5, tools=tools("A"), system=system("S2"), messages=ask("q")
    )
    assert new_system.usage.cache_read_input_tokens == tool_tokens
    new_tools = await aclient.messages.create(
        model=SONNET45, max_tokens=5, tools=tools("B"), system=system("S1"), messages=ask("q")
    )
    assert new_tools.usage.cache_read_input_tokens == 0


async def test_1h_then_5m_split(aclient: anthropic.AsyncAnthropic) -> None:
    system = [
        {"type": "text", "text": words(1500), "cache_control": {"type": "ephemeral", "ttl": "1h"}},
        {"type": "text", "text": words(200), "cache_control": {"type": "ephemeral", "ttl": "5m"}},
    ]
    message = await aclient.messages.create(
        model=SONNET45, max_tokens=5, system=system, messages=ask("q")
    )
    creation = message.usage.cache_creation
    assert creation is not None
    assert creation.ephemeral_1h_input_tokens == 1501
    assert creation.ephemeral_5m_input_tokens == 201
    assert message.usage.cache_creation_input_tokens == 1702


async def test_top_level_cache_control(aclient: anthropic.AsyncAnthropic) -> None:
    kw: dict[str, Any] = {
        "model": SONNET45,
        "max_tokens": 5,
        "messages": ask(words(1500)),
        "extra_body": {"cache_control": {"type": "ephemeral"}},
    }
    first = await aclient.messages.create(**kw)
    second = await aclient.messages.create(**kw)
    assert first.usage.cache_creation_input_tokens > 0
    assert second.usage.cache_read_input_tokens == first.usage.cache_creation_input_tokens


async def test_prewarm_with_max_tokens_zero(aclient: anthropic.AsyncAnthropic) -> None:
    system = cached_system(1500)
    warm = await aclient.messages.create(
        model=SONNET45, max_tokens=0, system=system, messages=ask("w")
    )
    assert warm.usage.output_tokens == 0 and warm.usage.cache_creation_input_tokens == 1501
    hit = await aclient.messages.create(
        model=SONNET45, max_tokens=5, system=system, messages=ask("x")
    )
    assert hit.usage.cache_read_input_tokens == 1501


async def test_ledger_has_every_billed_request(emu: Any, aclient: anthropic.AsyncAnthropic) -> None:
    system = cached_system(1500)
    usages = []
    for i in range(3):
        m = await aclient.messages.create(
            model=SONNET45, max_tokens=7, system=system, messages=ask(str(i))
        )
        usages.append(m.usage)
    await aclient.messages.count_tokens(model=SONNET45, messages=ask("free"))
    ledger = await emu.ledger()
    assert len(ledger["requests"]) == 3
    totals = ledger["totals"]
    assert totals["input_tokens"] == sum(u.input_tokens for u in usages)
    assert totals["cache_read_input_tokens"] == sum(u.cache_read_input_tokens for u in usages)
    assert totals["cache_creation_input_tokens"] == sum(
        u.cache_creation_input_tokens for u in usages
    )
    assert totals["output_tokens"] == 21
    assert {e["service_tier"] for e in ledger["requests"]} == {"standard"}
    async with emu.raw() as raw:
        await raw.post("/_emulator/reset")
    assert (await emu.ledger())["requests"] == []


async def test_two_breakpoints_partial_hit(aclient: anthropic.AsyncAnthropic) -> None:
    def turn(question: str) -> list[Any]:
        block = {"type": "text", "text": question, "cache_control": {"type": "ephemeral"}}
        return [{"role": "user", "content": [block]}]

    system = cached_system(1500)
    first = await aclient.messages.create(
        model=SONNET45, max_tokens=5, system=system, messages=turn(words(100, "ask"))
    )
    # system (1501) + the message block (100 + block + message framing)
    assert first.usage.cache_creation_input_tokens == 1501 + 100 + BLOCK_OVERHEAD + 3
    second = await aclient.messages.create(
        model=SONNET45, max_tokens=5, system=system, messages=turn(words(50, "new"))
    )
    assert second.usage.cache_read_input_tokens == 1501
    assert second.usage.cache_creation_input_tokens == 50 + BLOCK_OVERHEAD + 3
    assert second.usage.input_tokens == 3  # request framing, never cached
