"""Listing batches as the API does, and a batch create the client gives up on
(``--batch-create-delay-ms``): the batch exists anyway, found by listing."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from typing import Any

import anthropic
import pytest

MODEL = "claude-haiku-4-5"


def req(custom_id: str, text: str = "hi") -> Any:
    params = {"model": MODEL, "max_tokens": 10, "messages": [{"role": "user", "content": text}]}
    return {"custom_id": custom_id, "params": params}


async def make_batches(client: anthropic.AsyncAnthropic, clock: Any, n: int) -> list[str]:
    """``n`` batches of ``i + 1`` requests each, a second apart; ids oldest first."""
    ids = []
    for i in range(n):
        clock.advance(1)
        requests = [req(f"b{i}-r{j}") for j in range(i % 3 + 1)]
        ids.append((await client.messages.batches.create(requests=requests)).id)
    return ids


async def test_auto_pagination_lists_every_batch_newest_first(make_emu: Any, clock: Any) -> None:
    emu = make_emu(clock=clock, batch_seconds=3600)
    client = emu.async_client()
    ids = await make_batches(client, clock, 45)
    first = await client.messages.batches.list()
    assert len(first.data) == 20 and first.has_more  # default limit 20
    assert first.first_id == ids[-1] and first.last_id == ids[-20]
    listed = [b async for b in await client.messages.batches.list()]
    assert [b.id for b in listed] == list(reversed(ids))
    created = [b.created_at for b in listed]
    assert created == sorted(created, reverse=True)
    assert created[0] == datetime.fromtimestamp(clock.now, UTC)
    for i, batch in enumerate(reversed(listed)):
        assert batch.processing_status == "in_progress"
        assert batch.request_counts.processing == i % 3 + 1
        assert batch.request_counts.succeeded == 0
    small_pages = [b.id async for b in await client.messages.batches.list(limit=7)]
    assert small_pages == list(reversed(ids))
    await client.close()


async def test_limit_bounds(make_emu: Any, clock: Any) -> None:
    emu = make_emu(clock=clock)
    client = emu.async_client()
    ids = await make_batches(client, clock, 3)
    everything = await client.messages.batches.list(limit=1000)
    assert [b.id for b in everything.data] == list(reversed(ids)) and not everything.has_more
    for bad in (0, 1001):
        with pytest.raises(anthropic.BadRequestError):
            await client.messages.batches.list(limit=bad)
    await client.close()


async def test_cursors_in_both_directions(make_emu: Any, clock: Any) -> None:
    emu = make_emu(clock=clock)
    client = emu.async_client()
    ids = await make_batches(client, clock, 9)
    newest_first = list(reversed(ids))
    after = await client.messages.batches.list(after_id=newest_first[2], limit=3)
    assert [b.id for b in after.data] == newest_first[3:6] and after.has_more
    assert after.first_id == newest_first[3] and after.last_id == newest_first[5]
    tail = await client.messages.batches.list(after_id=newest_first[5], limit=3)
    assert [b.id for b in tail.data] == newest_first[6:] and not tail.has_more
    # before_id pages towards newer batches; the SDK follows first_id.
    before = await client.messages.batches.list(before_id=newest_first[-1], limit=3)
    assert [b.id for b in before.data] == newest_first[5:8] and before.has_more
    newer = [b.id async for b in await client.messages.batches.list(before_id=ids[0], limit=3)]
    assert sorted(newer) == sorted(newest_first[:-1])
    empty = await client.messages.batches.list(before_id=newest_first[0])
    assert empty.data == [] and not empty.has_more
    assert empty.first_id is None and empty.last_id is None
    await client.close()


async def test_deleted_batches_leave_the_list(make_emu: Any, clock: Any) -> None:
    emu = make_emu(clock=clock)
    client = emu.async_client()
    ids = await make_batches(client, clock, 3)
    await client.messages.batches.delete(ids[1])
    assert [b.id async for b in await client.messages.batches.list()] == [ids[2], ids[0]]
    await client.close()


async def test_counts_and_results_once_ended(make_emu: Any, clock: Any) -> None:
    emu = make_emu(clock=clock, batch_seconds=60)
    client = emu.async_client()
    submitted = ["alpha", "beta", "gamma-1", "delta_2"]
    batch = await client.messages.batches.create(requests=[req(c, c) for c in submitted])
    clock.advance(60)
    (listed,) = [b async for b in await client.messages.batches.list()]
    assert listed.id == batch.id and listed.processing_status == "ended"
    assert listed.request_counts.succeeded == 4 and listed.request_counts.processing == 0
    results = [r async for r in await client.messages.batches.results(batch.id)]
    assert sorted(r.custom_id for r in results) == sorted(submitted)
    await client.close()


async def reconcile(client: anthropic.AsyncAnthropic, since: datetime) -> list[Any]:
    """Batches created at or after ``since``, found by listing (no metadata on a batch)."""
    found = []
    async for batch in await client.messages.batches.list():
        if batch.created_at < since:
            break
        found.append(batch)
    return found


async def test_abandoned_create_in_process_still_creates(make_emu: Any, clock: Any) -> None:
    emu = make_emu(clock=clock, batch_create_delay_ms=5000)
    client = emu.async_client()
    since = datetime.fromtimestamp(clock.now, UTC)
    submitted = [f"item-{i}" for i in range(4)]
    with pytest.raises(TimeoutError):
        await asyncio.wait_for(
            client.messages.batches.create(requests=[req(c) for c in submitted]),
            timeout=0.2,
        )
    (batch,) = await reconcile(client, since)
    assert batch.processing_status == "ended"  # batch_seconds=0: processed at creation
    assert batch.request_counts.succeeded == 4
    results = [r async for r in await client.messages.batches.results(batch.id)]
    assert sorted(r.custom_id for r in results) == submitted
    assert len((await emu.ledger())["requests"]) == 4
    await client.close()


def test_client_timeout_during_create_over_http(make_http_server: Any, clock: Any) -> None:
    server = make_http_server(clock=clock, batch_seconds=60, batch_create_delay_ms=1000)
    impatient = anthropic.Anthropic(api_key="k", base_url=server.url, max_retries=0, timeout=0.2)
    submitted = ["one", "two", "three"]
    with pytest.raises(anthropic.APITimeoutError):
        impatient.messages.batches.create(requests=[req(c) for c in submitted])
    impatient.close()
    client = anthropic.Anthropic(api_key="k", base_url=server.url, max_retries=0)
    (batch,) = list(client.messages.batches.list())
    assert batch.processing_status == "in_progress"
    assert batch.request_counts.processing == 3
    assert batch.created_at == datetime.fromtimestamp(clock.now, UTC)
    clock.advance(60)
    results = list(client.messages.batches.results(batch.id))
    assert sorted(r.custom_id for r in results) == sorted(submitted)
    client.close()


async def test_delay_applies_only_to_batch_creation(make_emu: Any, clock: Any) -> None:
    emu = make_emu(clock=clock, batch_create_delay_ms=150)
    client = emu.async_client()
    loop = asyncio.get_running_loop()
    started = loop.time()
    batch = await client.messages.batches.create(requests=[req("x")])
    assert loop.time() - started >= 0.15
    await client.messages.batches.retrieve(batch.id)
    await client.messages.create(
        model=MODEL, max_tokens=3, messages=[{"role": "user", "content": "x"}]
    )
    listed = [b.id async for b in client.messages.batches.list()]
    with pytest.raises(anthropic.BadRequestError):  # refused before anything is created
        await client.messages.batches.create(requests=[])
    assert [b.id async for b in client.messages.batches.list()] == listed == [batch.id]
    await client.close()
