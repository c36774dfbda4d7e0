"""Usage fields of today's API (speed, inference_geo, thinking) and the ledger's prices."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import anthropic

from llmflow.catalog import load_catalog, request_cost
from llmflow.emulator.ledger import entry_cost, entry_usage

CATALOG = load_catalog()
HELLO: list[Any] = [{"role": "user", "content": "Hello there."}]
MTOK = Decimal(1_000_000)


async def test_fast_regional_request_is_priced_with_both(
    aclient: anthropic.AsyncAnthropic, emu: Any
) -> None:
    message = await aclient.messages.create(
        model="claude-opus-5-5", max_tokens=16_000, messages=HELLO, speed="fast", inference_geo="us"
    )
    assert message.usage.speed == "fast" and message.usage.inference_geo == "us"
    (entry,) = (await emu.ledger())["requests"]
    assert entry["speed"] == "fast" and entry["inference_geo"] == "us"
    u = message.usage
    # Opus 5.5 fast: 8 / 40 per MTok, times 1.1 for data residency.
    expected = (u.input_tokens * Decimal(8) + u.output_tokens * Decimal(40)) / MTOK * Decimal("1.1")
    assert entry_cost(entry) == expected


async def test_band_is_decided_by_the_entrys_own_prompt(
    aclient: anthropic.AsyncAnthropic, emu: Any
) -> None:
    model = CATALOG.models["claude-haiku-5-5"]
    small = await aclient.messages.create(model=model.id, max_tokens=16_000, messages=HELLO)
    big_text = " ".join(["job"] * 120_000)
    big = await aclient.messages.create(
        model=model.id, max_tokens=16_000, messages=[{"role": "user", "content": big_text}]
    )
    assert big.usage.input_tokens > 100_000
    small_entry, big_entry = (await emu.ledger())["requests"]
    s, b = small.usage, big.usage
    assert (
        entry_cost(small_entry)
        == (s.input_tokens * Decimal("0.10") + s.output_tokens * Decimal("0.50")) / MTOK
    )
    assert (
        entry_cost(big_entry)
        == (b.input_tokens * Decimal("0.50") + b.output_tokens * Decimal("2.50")) / MTOK
    )


async def test_batch_entry_at_half_price_with_thinking(
    aclient: anthropic.AsyncAnthropic, emu: Any
) -> None:
    params = {"model": "claude-sonnet-5-5", "max_tokens": 16_000, "messages": HELLO}
    batch = await aclient.messages.batches.create(requests=[{"custom_id": "a", "params": params}])
    (result,) = [r async for r in await aclient.messages.batches.results(batch.id)]
    assert result.result.type == "succeeded"
    usage = result.result.message.usage
    assert usage.service_tier == "batch" and usage.speed == "standard"
    assert (
        usage.output_tokens_details is not None and usage.output_tokens_details.thinking_tokens > 0
    )
    ledger = await emu.ledger()
    (entry,) = ledger["requests"]
    assert ledger["totals"]["thinking_tokens"] == usage.output_tokens_details.thinking_tokens
    model = CATALOG.models["claude-sonnet-5-5"]
    full = request_cost(entry_usage(entry), model)
    assert entry_cost(entry) == full / 2
    assert full == (usage.input_tokens * Decimal(2) + usage.output_tokens * Decimal(10)) / MTOK


async def test_totals_add_up(aclient: anthropic.AsyncAnthropic, emu: Any) -> None:
    messages = [
        await aclient.messages.create(model=m, max_tokens=16_000, messages=HELLO)
        for m in ("claude-haiku-4-5", "claude-opus-5-5", "claude-haiku-5-5")
    ]
    totals = (await emu.ledger())["totals"]
    assert totals["requests"] == 3
    assert totals["output_tokens"] == sum(m.usage.output_tokens for m in messages)
    thinking = sum(
        m.usage.output_tokens_details.thinking_tokens
        for m in messages
        if m.usage.output_tokens_details is not None
    )
    assert totals["thinking_tokens"] == thinking > 0
    assert messages[0].usage.output_tokens_details is None
