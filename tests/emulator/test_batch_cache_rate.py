"""Cache hits inside Message Batches are best effort: ``batch_cache_hit_rate``."""

from __future__ import annotations

from typing import Any

import anthropic
import pytest

from llmflow.emulator import EmulatorConfig
from llmflow.emulator.tokenizer import BLOCK_OVERHEAD

pytestmark = pytest.mark.filterwarnings("ignore:The model .* is deprecated:DeprecationWarning")

MODEL = "claude-sonnet-4-5"  # min cacheable 1024
PREFIX = 1500 + BLOCK_OVERHEAD
N = 400


def system(words: int = 1500) -> list[Any]:
    text = " ".join(["word"] * words)
    return [{"type": "text", "text": text, "cache_control": {"type": "ephemeral"}}]


def requests(n: int = N, words: int = 1500, prefix: str = "r") -> list[Any]:
    return [
        {
            "custom_id": f"{prefix}{i}",
            "params": {
                "model": MODEL,
                "max_tokens": 8,
                "system": system(words),
                "messages": [{"role": "user", "content": f"Question {i}: one word?"}],
            },
        }
        for i in range(n)
    ]


async def usages(client: anthropic.AsyncAnthropic, batch: list[Any]) -> dict[str, Any]:
    created = await client.messages.batches.create(requests=batch)
    assert created.processing_status == "ended"
    out: dict[str, Any] = {}
    async for line in await client.messages.batches.results(created.id):
        assert line.result.type == "succeeded"
        out[line.custom_id] = line.result.message.usage
    return out


def readers(found: dict[str, Any]) -> set[str]:
    """custom_ids that read the whole prefix; every other one wrote all of it."""
    read = {cid for cid, u in found.items() if u.cache_read_input_tokens == PREFIX}
    for cid, usage in found.items():
        if cid in read:
            assert usage.cache_creation_input_tokens == 0
        else:
            assert usage.cache_read_input_tokens == 0
            assert usage.cache_creation_input_tokens == PREFIX
    return read


@pytest.mark.parametrize("rate", [0.3, 0.6, 0.9])
async def test_hit_rate_over_400_batched_requests(make_emu: Any, rate: float) -> None:
    client = make_emu(batch_cache_hit_rate=rate).async_client()
    read = readers(await usages(client, requests()))
    await client.close()
    # The first request finds nothing cached; each later one reads with probability
    # ``rate``: 399 draws have a standard deviation under 0.025, so 0.05 is two of them,
    # and the three rates' bands do not overlap.
    assert "r0" not in read
    assert abs(len(read) / (N - 1) - rate) <= 0.05


@pytest.mark.parametrize(("rate", "expected"), [(0.0, 0), (1.0, N - 1)])
async def test_rate_bounds(make_emu: Any, rate: float, expected: int) -> None:
    client = make_emu(batch_cache_hit_rate=rate).async_client()
    assert len(readers(await usages(client, requests()))) == expected
    await client.close()


async def test_deterministic_per_seed_and_custom_id(make_emu: Any) -> None:
    found = []
    for seed in (7, 7, 8):
        client = make_emu(seed=seed).async_client()
        found.append(readers(await usages(client, requests(100))))
        await client.close()
    assert found[0] == found[1]
    assert found[0] != found[2]


async def test_uncacheable_prefix_stays_plain_input(make_emu: Any) -> None:
    client = make_emu(batch_cache_hit_rate=0.5).async_client()
    found = await usages(client, requests(50, words=500))  # under the 1024 minimum
    await client.close()
    assert all(
        u.cache_read_input_tokens == u.cache_creation_input_tokens == 0 for u in found.values()
    )


async def test_sync_requests_always_read(make_emu: Any) -> None:
    """Sync requests keep exact cache semantics, whatever the batch rate."""
    client = make_emu(batch_cache_hit_rate=0.0).async_client()
    await usages(client, requests(20))
    for i in range(20):
        message = await client.messages.create(
            model=MODEL,
            max_tokens=8,
            system=system(),
            messages=[{"role": "user", "content": f"Sync question {i}"}],
        )
        assert message.usage.cache_read_input_tokens == PREFIX
        assert message.usage.cache_creation_input_tokens == 0
    await client.close()


def test_default_rate_is_inside_the_reported_range() -> None:
    assert 0.3 <= EmulatorConfig().batch_cache_hit_rate <= 0.98


@pytest.mark.parametrize("rate", [-0.1, 1.5])
def test_rate_must_be_a_probability(rate: float) -> None:
    with pytest.raises(ValueError, match="batch_cache_hit_rate"):
        EmulatorConfig(batch_cache_hit_rate=rate)
