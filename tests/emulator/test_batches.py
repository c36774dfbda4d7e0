"""Message Batches through ``client.messages.batches.*``."""

from __future__ import annotations

from typing import Any

import anthropic
import pytest

MODEL = "claude-haiku-4-5"


def req(custom_id: str, text: str = "hi", **params: Any) -> dict[str, Any]:
    body = {"model": MODEL, "max_tokens": 10, "messages": [{"role": "user", "content": text}]}
    return {"custom_id": custom_id, "params": {**body, **params}}


async def test_batch_lifecycle(make_emu: Any, clock: Any, spec: Any) -> None:
    emu = make_emu(clock=clock, batch_seconds=60)
    client = emu.async_client()
    batch = await client.messages.batches.create(
        requests=[
            req("a"),
            req("b", "other"),
            req("bad", model="claude-nope"),
            req("neg", max_tokens=-1),
        ]
    )
    assert batch.processing_status == "in_progress" and batch.results_url is None
    assert batch.request_counts.processing == 4
    assert (batch.expires_at - batch.created_at).total_seconds() == 24 * 3600
    clock.advance(59)
    assert (await client.messages.batches.retrieve(batch.id)).processing_status == "in_progress"
    clock.advance(1)
    ended = await client.messages.batches.retrieve(batch.id)
    assert ended.processing_status == "ended" and ended.ended_at is not None
    assert ended.request_counts.succeeded == 2 and ended.request_counts.errored == 2
    assert ended.results_url == f"{spec.base}/v1/messages/batches/{batch.id}/results"
    results = {r.custom_id: r.result async for r in await client.messages.batches.results(batch.id)}
    assert set(results) == {"a", "b", "bad", "neg"}
    assert results["a"].type == "succeeded"
    assert results["a"].message.usage.service_tier == "batch"
    assert results["bad"].type == "errored"
    assert results["bad"].error.error.type == "not_found_error"
    assert results["neg"].type == "errored"
    assert results["neg"].error.error.type == "invalid_request_error"
    ledger = await emu.ledger()
    batch_entries = [e for e in ledger["requests"] if e.get("batch_id") == batch.id]
    assert sorted(e["custom_id"] for e in batch_entries) == ["a", "b"]
    assert {e["service_tier"] for e in batch_entries} == {"batch"}
    deleted = await client.messages.batches.delete(batch.id)
    assert deleted.id == batch.id and deleted.type == "message_batch_deleted"
    with pytest.raises(anthropic.NotFoundError):
        await client.messages.batches.retrieve(batch.id)
    await client.close()


async def test_batch_seconds_zero_ends_at_once(aclient: anthropic.AsyncAnthropic) -> None:
    batch = await aclient.messages.batches.create(requests=[req("x")])
    assert batch.processing_status == "ended"
    lines = [r async for r in await aclient.messages.batches.results(batch.id)]
    assert len(lines) == 1 and lines[0].result.type == "succeeded"


async def test_results_jsonl_has_no_blank_lines(
    emu: Any, aclient: anthropic.AsyncAnthropic
) -> None:
    batch = await aclient.messages.batches.create(requests=[req(f"r{i}", str(i)) for i in range(5)])
    async with emu.raw() as raw:
        response = await raw.get(
            f"/v1/messages/batches/{batch.id}/results", headers={"x-api-key": "k"}
        )
    assert response.status_code == 200
    lines = response.text.split("\n")
    assert lines[-1] == "" and all(line.strip() for line in lines[:-1]) and len(lines) == 6


def test_batches_over_http(http_server: Any) -> None:
    client = anthropic.Anthropic(api_key="k", base_url=http_server.url, max_retries=0)
    batch = client.messages.batches.create(requests=[req("one"), req("two")])
    assert batch.results_url is not None and batch.results_url.startswith(http_server.url)
    results = list(client.messages.batches.results(batch.id))
    assert sorted(r.custom_id for r in results) == ["one", "two"]
    client.close()


async def test_cache_hits_inside_a_batch(aclient: anthropic.AsyncAnthropic) -> None:
    system = [
        {"type": "text", "text": " ".join(["word"] * 4200), "cache_control": {"type": "ephemeral"}}
    ]
    batch = await aclient.messages.batches.create(
        requests=[req(f"c{i}", f"question {i}", system=system) for i in range(3)]
    )
    results = {
        r.custom_id: r.result async for r in await aclient.messages.batches.results(batch.id)
    }
    usage = [results[f"c{i}"].message.usage for i in range(3)]  # type: ignore[union-attr]
    assert usage[0].cache_creation_input_tokens == 4201
    assert usage[1].cache_read_input_tokens == 4201 and usage[2].cache_read_input_tokens == 4201


@pytest.mark.parametrize(
    "requests",
    [
        [],
        [req("has space")],
        [req("x" * 65)],
        [req("dup"), req("dup")],
        [{"custom_id": "a"}],
    ],
)
async def test_create_rejects_bad_batches(aclient: anthropic.AsyncAnthropic, requests: Any) -> None:
    with pytest.raises(anthropic.BadRequestError):
        await aclient.messages.batches.create(requests=requests)


async def test_too_many_requests(aclient: anthropic.AsyncAnthropic) -> None:
    one = req("x")
    many = [{"custom_id": f"r{i}", "params": one["params"]} for i in range(100_001)]
    with pytest.raises(anthropic.BadRequestError, match="100000"):
        await aclient.messages.batches.create(requests=many)


async def test_list_pagination(make_emu: Any, clock: Any) -> None:
    emu = make_emu(clock=clock, batch_seconds=30)
    client = emu.async_client()
    ids = []
    for i in range(5):
        clock.advance(1)
        ids.append((await client.messages.batches.create(requests=[req(f"p{i}")])).id)
    newest_first = list(reversed(ids))
    page = await client.messages.batches.list(limit=2)
    assert [b.id for b in page.data] == newest_first[:2]
    assert page.has_more and page.first_id == newest_first[0] and page.last_id == newest_first[1]
    every = [b.id async for b in await client.messages.batches.list(limit=2)]
    assert every == newest_first
    after = await client.messages.batches.list(limit=10, after_id=newest_first[1])
    assert [b.id for b in after.data] == newest_first[2:] and not after.has_more
    before = await client.messages.batches.list(limit=2, before_id=newest_first[4])
    assert [b.id for b in before.data] == newest_first[2:4] and before.has_more
    await client.close()


async def test_cancel_and_delete_rules(make_emu: Any, clock: Any) -> None:
    emu = make_emu(clock=clock, batch_seconds=600)
    client = emu.async_client()
    batch = await client.messages.batches.create(requests=[req("a"), req("b")])
    with pytest.raises(anthropic.BadRequestError):
        await client.messages.batches.delete(batch.id)
    canceling = await client.messages.batches.cancel(batch.id)
    assert canceling.processing_status == "canceling" and canceling.cancel_initiated_at is not None
    ended = await client.messages.batches.retrieve(batch.id)
    assert ended.processing_status == "ended" and ended.request_counts.canceled == 2
    results = [r async for r in await client.messages.batches.results(batch.id)]
    assert {r.result.type for r in results} == {"canceled"}
    assert (await emu.ledger())["requests"] == []
    await client.messages.batches.delete(batch.id)
    await client.close()


async def test_batch_expires_after_24h(make_emu: Any, clock: Any) -> None:
    emu = make_emu(clock=clock, batch_seconds=25 * 3600)
    client = emu.async_client()
    batch = await client.messages.batches.create(requests=[req("a")])
    clock.advance(24 * 3600)
    ended = await client.messages.batches.retrieve(batch.id)
    assert ended.processing_status == "ended" and ended.request_counts.expired == 1
    await client.close()


async def test_unknown_batch_is_404(aclient: anthropic.AsyncAnthropic) -> None:
    with pytest.raises(anthropic.NotFoundError):
        await aclient.messages.batches.retrieve("msgbatch_nope")
