"""Enforced rate limits (``--rate-limits``): token buckets, 429s, retry-after, headers."""

from __future__ import annotations

import asyncio
import math
from datetime import UTC, datetime
from typing import Any

import anthropic
import pytest
from typer.testing import CliRunner

from llmflow.cli import app as cli_app
from llmflow.emulator import RateLimits, RateLimitSpecError, parse_rate_limits

MODEL = "claude-haiku-4-5"
HELLO: list[Any] = [{"role": "user", "content": "hello"}]
KINDS = ("requests", "input-tokens", "output-tokens")


def rfc3339(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def limit_headers(headers: Any) -> dict[str, str]:
    return {k: v for k, v in headers.items() if k.startswith("anthropic-ratelimit-")}


def remaining(headers: Any, kind: str) -> int:
    return int(headers[f"anthropic-ratelimit-{kind}-remaining"])


async def create(client: anthropic.AsyncAnthropic, **params: Any) -> Any:
    """``messages.create`` through ``with_raw_response``: (message, headers)."""
    body: dict[str, Any] = {"model": MODEL, "max_tokens": 10, "messages": HELLO, **params}
    raw = await client.messages.with_raw_response.create(**body)
    return await raw.parse(), raw.headers


def test_parse_rate_limits_any_subset() -> None:
    assert parse_rate_limits("") is None and parse_rate_limits(None) is None
    assert parse_rate_limits("rpm=5") == RateLimits(rpm=5, itpm=2_000_000, otpm=400_000)
    assert parse_rate_limits(" otpm=8000 , itpm=30000,rpm=50") == RateLimits(50, 30000, 8000)


@pytest.mark.parametrize(
    "spec", ["rpm", "rps=5", "rpm=x", "rpm=0", "itpm=-3", "otpm=1.5", "rpm=1,rpm=2"]
)
def test_bad_rate_limit_specs(spec: str) -> None:
    with pytest.raises(RateLimitSpecError):
        parse_rate_limits(spec)


@pytest.mark.parametrize(
    ("option", "value"), [("--rate-limits", "rpm=lots"), ("--spend-cap-usd", "ten dollars")]
)
def test_cli_rejects_bad_limits_with_exit_2(option: str, value: str) -> None:
    result = CliRunner().invoke(cli_app, ["emulator", option, value])
    assert result.exit_code == 2
    assert result.output.startswith(f"error: {option}: ")
    assert len(result.output.strip().splitlines()) == 1


async def test_rpm_refuses_with_retry_after_until_refilled(make_emu: Any, clock: Any) -> None:
    emu = make_emu(clock=clock, rate_limits=RateLimits(rpm=2))
    client = emu.async_client()
    start = clock.now
    _, first = await create(client)
    assert remaining(first, "requests") == 1
    _, second = await create(client)
    assert remaining(second, "requests") == 0
    assert second["anthropic-ratelimit-requests-reset"] == rfc3339(start + 60)
    with pytest.raises(anthropic.RateLimitError) as refused:
        await create(client)
    response = refused.value.response
    assert response.status_code == 429
    assert response.headers["retry-after"] == "30"  # one request refills in 60/2 s
    body = response.json()
    assert body["type"] == "error" and body["error"]["type"] == "rate_limit_error"
    assert "2 requests per minute" in body["error"]["message"]
    assert body["request_id"] == response.headers["request-id"]
    for kind in KINDS:
        for part in ("limit", "remaining", "reset"):
            assert f"anthropic-ratelimit-{kind}-{part}" in response.headers
    assert response.headers["anthropic-ratelimit-requests-limit"] == "2"
    assert remaining(response.headers, "requests") == 0
    clock.advance(29)
    with pytest.raises(anthropic.RateLimitError) as again:
        await create(client)
    assert again.value.response.headers["retry-after"] == "1"
    clock.advance(1)
    _, third = await create(client)
    assert remaining(third, "requests") == 0
    assert len((await emu.ledger())["requests"]) == 3
    await client.close()


async def test_enforced_headers_are_the_three_buckets_only(make_emu: Any, clock: Any) -> None:
    emu = make_emu(clock=clock, rate_limits=RateLimits(rpm=10, itpm=1000, otpm=500))
    client = emu.async_client()
    message, headers = await create(client, max_tokens=400)
    found = limit_headers(headers)
    assert set(found) == {
        f"anthropic-ratelimit-{k}-{p}" for k in KINDS for p in ("limit", "remaining", "reset")
    }
    assert found["anthropic-ratelimit-input-tokens-limit"] == "1000"
    assert found["anthropic-ratelimit-output-tokens-limit"] == "500"
    usage = message.usage
    assert remaining(headers, "input-tokens") == 1000 - usage.input_tokens
    # Charged max_tokens at admission, corrected to the actual output once known.
    assert usage.output_tokens <= 300
    assert remaining(headers, "output-tokens") == 500 - usage.output_tokens
    refill = usage.output_tokens / (500 / 60)
    assert found["anthropic-ratelimit-output-tokens-reset"] == rfc3339(
        math.ceil(clock.now + refill)
    )
    await client.close()


async def test_every_response_carries_the_remaining_capacity(make_emu: Any, clock: Any) -> None:
    emu = make_emu(clock=clock, rate_limits=RateLimits(rpm=100))
    client = emu.async_client()
    seen = []
    for text in ("one", "two", "three"):
        _, headers = await create(client, messages=[{"role": "user", "content": text}])
        seen.append(remaining(headers, "requests"))
    assert seen == [99, 98, 97]
    clock.advance(1.2)  # 100/60 per second: two more requests' worth
    _, headers = await create(client)
    assert remaining(headers, "requests") == 98
    await client.close()


def _cached_system(word: str) -> list[dict[str, Any]]:
    text = " ".join([word] * 4200)
    return [{"type": "text", "text": text, "cache_control": {"type": "ephemeral"}}]


async def test_itpm_counts_uncached_input_and_cache_writes_not_reads(
    make_emu: Any, clock: Any
) -> None:
    emu = make_emu(clock=clock, rate_limits=RateLimits(itpm=5000))
    client = emu.async_client()
    system = _cached_system("word")
    cold, after_cold = await create(client, system=system)
    written = cold.usage.cache_creation_input_tokens
    assert written == 4201
    left = 5000 - cold.usage.input_tokens - written
    assert remaining(after_cold, "input-tokens") == left
    for i in range(5):  # reads do not count: these fit in what the write left
        warm, after_warm = await create(
            client, system=system, messages=[{"role": "user", "content": f"q{i}"}]
        )
        assert warm.usage.cache_read_input_tokens == 4201
        left -= warm.usage.input_tokens
        assert remaining(after_warm, "input-tokens") == left
    with pytest.raises(anthropic.RateLimitError) as refused:
        await create(client, system=_cached_system("else"))
    tokens = await client.messages.count_tokens(
        model=MODEL, system=_cached_system("else"), messages=HELLO
    )
    wait = (tokens.input_tokens - left) / (5000 / 60)
    assert refused.value.response.headers["retry-after"] == str(math.ceil(wait))
    assert "5,000 input tokens per minute" in refused.value.response.json()["error"]["message"]
    await client.close()


async def test_otpm_charges_max_tokens_while_in_flight(make_emu: Any, clock: Any) -> None:
    emu = make_emu(clock=clock, latency_ms=50, rate_limits=RateLimits(otpm=1000))
    client = emu.async_client()
    results = await asyncio.gather(
        create(client, max_tokens=600, messages=[{"role": "user", "content": "a"}]),
        create(client, max_tokens=600, messages=[{"role": "user", "content": "b"}]),
        return_exceptions=True,
    )
    refused = [r for r in results if isinstance(r, anthropic.RateLimitError)]
    served = [r for r in results if not isinstance(r, BaseException)]
    assert len(refused) == 1 and len(served) == 1
    message, headers = served[0]
    # The estimate (600) was held while the first was in flight; the actual output is
    # far less, so once corrected the same request fits again without any refill.
    assert message.usage.output_tokens <= 300
    assert remaining(headers, "output-tokens") == 1000 - message.usage.output_tokens
    await create(client, max_tokens=600, messages=[{"role": "user", "content": "b"}])
    await client.close()


async def test_need_above_the_limit_waits_for_a_full_bucket(make_emu: Any, clock: Any) -> None:
    emu = make_emu(clock=clock, rate_limits=RateLimits(otpm=60))
    client = emu.async_client()
    # A summary of a longer text: an answer of well over 60 tokens.
    ask = [{"role": "user", "content": "Summarise this: " + "the plan is safe. " * 100}]
    message, headers = await create(client, max_tokens=1000, messages=ask)
    debt = message.usage.output_tokens - 60
    assert debt > 0 and remaining(headers, "output-tokens") == 0
    with pytest.raises(anthropic.RateLimitError) as refused:
        await create(client, max_tokens=1000, messages=ask)
    assert refused.value.response.headers["retry-after"] == str(debt + 60)  # 1 token a second
    clock.advance(debt + 60)
    await create(client, max_tokens=1000, messages=ask)
    await client.close()


async def test_count_tokens_and_batches_are_not_limited(make_emu: Any, clock: Any) -> None:
    emu = make_emu(clock=clock, rate_limits=RateLimits(rpm=1))
    client = emu.async_client()
    await create(client)
    for _ in range(3):
        await client.messages.count_tokens(model=MODEL, messages=HELLO)
    params = {"model": MODEL, "max_tokens": 5, "messages": HELLO}
    batch = await client.messages.batches.create(
        requests=[{"custom_id": f"r{i}", "params": params} for i in range(3)]
    )
    assert batch.request_counts.succeeded == 3
    with pytest.raises(anthropic.RateLimitError):
        await create(client)
    await client.close()


async def test_streamed_requests_are_limited_too(make_emu: Any, clock: Any) -> None:
    emu = make_emu(clock=clock, rate_limits=RateLimits(rpm=1))
    client = emu.async_client()
    async with client.messages.stream(model=MODEL, max_tokens=5, messages=HELLO) as stream:
        await stream.get_final_message()
    with pytest.raises(anthropic.RateLimitError):
        async with client.messages.stream(model=MODEL, max_tokens=5, messages=HELLO) as stream:
            await stream.get_final_message()
    await client.close()


async def test_reset_fills_the_buckets(make_emu: Any, clock: Any) -> None:
    emu = make_emu(clock=clock, rate_limits=RateLimits(rpm=1))
    client = emu.async_client()
    await create(client)
    with pytest.raises(anthropic.RateLimitError):
        await create(client)
    async with emu.raw() as raw:
        await raw.post("/_emulator/reset")
    await create(client)
    await client.close()


async def test_without_rate_limits_nothing_is_refused(make_emu: Any, clock: Any) -> None:
    emu = make_emu(clock=clock, requests_per_minute=2)
    client = emu.async_client()
    for _ in range(4):
        _, headers = await create(client)
    assert remaining(headers, "requests") == 0
    assert "anthropic-ratelimit-tokens-limit" in headers  # the reported window's headers
    await client.close()


def test_rate_limits_over_http(make_http_server: Any, clock: Any) -> None:
    server = make_http_server(clock=clock, rate_limits=RateLimits(rpm=1))
    client = anthropic.Anthropic(api_key="k", base_url=server.url, max_retries=0)
    client.messages.create(model=MODEL, max_tokens=3, messages=HELLO)
    with pytest.raises(anthropic.RateLimitError) as refused:
        client.messages.create(model=MODEL, max_tokens=3, messages=HELLO)
    assert refused.value.response.headers["retry-after"] == "60"
    client.close()
