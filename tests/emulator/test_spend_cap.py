"""The organisation spend cap (``--spend-cap-usd``): 429 enforced_spend_limit_reached."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import anthropic
import pytest

from llmflow.emulator import SpendCapSpecError, parse_spend_cap
from llmflow.emulator.ledger import entry_cost

MODEL = "claude-haiku-4-5"
HELLO: list[Any] = [{"role": "user", "content": "hello"}]
CAP = Decimal("0.0001")  # one haiku-4-5 answer (>= 20 output tokens at $5/M) reaches it


def req(custom_id: str) -> dict[str, Any]:
    params = {"model": MODEL, "max_tokens": 50, "messages": HELLO}
    return {"custom_id": custom_id, "params": params}


async def ask(client: anthropic.AsyncAnthropic, text: str = "hello") -> anthropic.types.Message:
    return await client.messages.create(
        model=MODEL, max_tokens=50, messages=[{"role": "user", "content": text}]
    )


async def billed(emu: Any) -> Decimal:
    return sum((entry_cost(e) for e in (await emu.ledger())["requests"]), Decimal(0))


def assert_spend_limit(error: anthropic.APIStatusError) -> None:
    assert isinstance(error, anthropic.EnforcedSpendLimitReachedError)
    assert isinstance(error, anthropic.RateLimitError)
    assert error.status_code == 429 and error.error_code == "enforced_spend_limit_reached"
    assert "retry-after" not in error.response.headers
    assert "retry-after-ms" not in error.response.headers
    body = error.response.json()
    assert body["type"] == "error" and body["request_id"] == error.request_id
    assert body["error"]["type"] == "rate_limit_error"
    assert body["error"]["details"] == {"error_code": "enforced_spend_limit_reached"}
    assert "spend limit" in body["error"]["message"]


@pytest.mark.parametrize(
    ("text", "amount"), [("", None), ("12.50", Decimal("12.50")), (" 0 ", Decimal(0))]
)
def test_parse_spend_cap(text: str, amount: Decimal | None) -> None:
    assert parse_spend_cap(text) == amount


@pytest.mark.parametrize("text", ["-1", "nan", "inf", "$5", "5 USD"])
def test_bad_spend_caps(text: str) -> None:
    with pytest.raises(SpendCapSpecError):
        parse_spend_cap(text)


async def test_cap_refuses_messages_and_batch_creation(make_emu: Any, clock: Any) -> None:
    emu = make_emu(clock=clock, spend_cap_usd=CAP)
    client = emu.async_client()
    await ask(client)
    assert await billed(emu) >= CAP
    with pytest.raises(anthropic.EnforcedSpendLimitReachedError) as refused:
        await ask(client, "again")
    assert_spend_limit(refused.value)
    with pytest.raises(anthropic.EnforcedSpendLimitReachedError) as refused_batch:
        await client.messages.batches.create(requests=[req("late")])
    assert_spend_limit(refused_batch.value)
    # Free and read-only endpoints stay open.
    await client.messages.count_tokens(model=MODEL, messages=HELLO)
    assert [b async for b in await client.messages.batches.list()] == []
    assert len((await emu.ledger())["requests"]) == 1
    await client.close()


async def test_work_admitted_before_the_cap_still_runs(make_emu: Any, clock: Any) -> None:
    emu = make_emu(clock=clock, spend_cap_usd=CAP, batch_seconds=60)
    client = emu.async_client()
    batch = await client.messages.batches.create(requests=[req("a"), req("b"), req("c")])
    await ask(client)
    with pytest.raises(anthropic.EnforcedSpendLimitReachedError):
        await ask(client, "again")
    clock.advance(60)
    ended = await client.messages.batches.retrieve(batch.id)
    assert ended.processing_status == "ended" and ended.request_counts.succeeded == 3
    results = [r async for r in await client.messages.batches.results(batch.id)]
    assert sorted(r.custom_id for r in results) == ["a", "b", "c"]
    ledger = await emu.ledger()
    assert sorted(e.get("custom_id") or "" for e in ledger["requests"]) == ["", "a", "b", "c"]
    assert await billed(emu) > CAP
    await client.close()


async def test_batch_spend_counts_towards_the_cap(make_emu: Any, clock: Any) -> None:
    emu = make_emu(clock=clock, spend_cap_usd=CAP, batch_seconds=30)
    client = emu.async_client()
    await client.messages.batches.create(requests=[req(f"r{i}") for i in range(4)])
    await client.messages.count_tokens(model=MODEL, messages=HELLO)
    assert await billed(emu) == 0
    clock.advance(30)  # the batch ends (at batch prices) when next looked at
    with pytest.raises(anthropic.EnforcedSpendLimitReachedError):
        await ask(client)
    assert await billed(emu) >= CAP
    await client.close()


async def test_zero_cap_refuses_the_first_request(make_emu: Any, clock: Any) -> None:
    emu = make_emu(clock=clock, spend_cap_usd=Decimal(0))
    client = emu.async_client()
    with pytest.raises(anthropic.EnforcedSpendLimitReachedError):
        await ask(client)
    async with emu.raw() as raw:
        response = await raw.post(
            "/v1/messages/batches",
            headers={"x-api-key": "k"},
            json={"requests": [req("x")]},
        )
    assert response.status_code == 429 and "retry-after" not in response.headers
    assert response.json()["error"]["details"]["error_code"] == "enforced_spend_limit_reached"
    await client.close()


async def test_reset_clears_the_ledger_and_lifts_the_cap(make_emu: Any, clock: Any) -> None:
    emu = make_emu(clock=clock, spend_cap_usd=CAP)
    client = emu.async_client()
    await ask(client)
    with pytest.raises(anthropic.EnforcedSpendLimitReachedError):
        await ask(client)
    async with emu.raw() as raw:
        await raw.post("/_emulator/reset")
    await ask(client)
    await client.close()


async def test_no_cap_by_default(aclient: anthropic.AsyncAnthropic) -> None:
    for i in range(5):
        await ask(aclient, f"q{i}")


def test_spend_cap_over_http(make_http_server: Any, clock: Any) -> None:
    server = make_http_server(clock=clock, spend_cap_usd=CAP)
    client = anthropic.Anthropic(api_key="k", base_url=server.url, max_retries=0)
    client.messages.create(model=MODEL, max_tokens=50, messages=HELLO)
    with pytest.raises(anthropic.EnforcedSpendLimitReachedError) as refused:
        client.messages.create(model=MODEL, max_tokens=50, messages=HELLO)
    assert_spend_limit(refused.value)
    client.close()
