"""What a batch intent became: :func:`llmflow.executor.reconcile.reconcile` against an
in-process emulator, through the real SDK (listing, auto-pagination, JSONL results).

The emulator's clock is injected: batches stay running until it is advanced past their
``batch_seconds``, and their ``created_at`` is placed where a test needs it relative to
the intent's ±10 minute window.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

import anthropic
import httpx2
import pytest
from structlog.testing import capture_logs

from llmflow.emulator import EmulatorConfig, create_app
from llmflow.executor.reconcile import WINDOW, Verdict, reconcile

MODEL = "claude-haiku-4-5"
BASE = "http://emulator.test"
BATCH_SECONDS = 3600.0  # a batch runs for an hour of the injected clock
START = 1_800_000_000.0


class Clock:
    """The emulator's settable clock (POSIX seconds)."""

    def __init__(self, now: float = START) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds

    @property
    def at(self) -> datetime:
        """The clock's time as an aware datetime (what an intent records)."""
        return datetime.fromtimestamp(self.now, UTC)


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
async def client(clock: Clock) -> AsyncIterator[anthropic.AsyncAnthropic]:
    app = create_app(EmulatorConfig(clock=clock, batch_seconds=BATCH_SECONDS))
    http = httpx2.AsyncClient(transport=httpx2.ASGITransport(app=app), base_url=BASE)
    sdk = anthropic.AsyncAnthropic(api_key="test", base_url=BASE, http_client=http, max_retries=0)
    yield sdk
    await sdk.close()


def _keys(prefix: str, n: int = 3) -> list[str]:
    return [f"{prefix}-{i:04d}" for i in range(n)]


async def _create(client: anthropic.AsyncAnthropic, custom_ids: Sequence[str]) -> str:
    """Create a batch whose requests carry ``custom_ids``; its id."""
    params: Any = {"model": MODEL, "max_tokens": 8, "messages": [{"role": "user", "content": "hi"}]}
    requests: Any = [{"custom_id": c, "params": params} for c in custom_ids]
    batch = await client.messages.batches.create(requests=requests)
    return batch.id


async def _status(client: anthropic.AsyncAnthropic, batch_id: str) -> str:
    return (await client.messages.batches.retrieve(batch_id)).processing_status


async def _reconcile(
    client: anthropic.AsyncAnthropic,
    intent_at: datetime,
    keys: Sequence[str],
    known: Sequence[str] = (),
) -> Verdict:
    return await reconcile(client, intent_at=intent_at, keys=keys, known=known)


# ---- found ------------------------------------------------------------------------------


async def test_the_intents_batch_is_found_while_running_and_once_ended(
    client: anthropic.AsyncAnthropic, clock: Clock
) -> None:
    keys = _keys("label")
    intent_at = clock.at
    clock.advance(2)  # the create reached the API a little after the intent was written
    batch_id = await _create(client, keys)

    assert await _status(client, batch_id) == "in_progress"
    assert await _reconcile(client, intent_at, keys) == Verdict("found", batch_id)

    clock.advance(BATCH_SECONDS)
    assert await _status(client, batch_id) == "ended"
    assert await _reconcile(client, intent_at, keys) == Verdict("found", batch_id)


async def test_found_among_other_batches_by_size_and_by_custom_ids(
    client: anthropic.AsyncAnthropic, clock: Clock
) -> None:
    keys = _keys("label", 3)
    intent_at = clock.at
    other_size = await _create(client, _keys("other", 2))
    ours = await _create(client, keys)
    same_size_other_ids = await _create(client, _keys("other", 3))
    clock.advance(BATCH_SECONDS)  # every one ended: the custom_ids tell them apart
    assert {await _status(client, b) for b in (other_size, ours, same_size_other_ids)} == {"ended"}
    assert await _reconcile(client, intent_at, keys) == Verdict("found", ours)


async def test_the_listing_is_followed_past_its_first_page(
    client: anthropic.AsyncAnthropic, clock: Clock
) -> None:
    keys = _keys("label", 2)
    intent_at = clock.at
    ours = await _create(client, keys)
    for i in range(105):  # newer batches of another size push ours onto the second page
        clock.advance(0.5)
        await _create(client, [f"filler-{i:04d}"])
    first_page = await client.messages.batches.list(limit=100)
    assert ours not in {b.id for b in first_page.data} and first_page.has_more
    assert await _reconcile(client, intent_at, keys) == Verdict("found", ours)


async def test_a_running_batch_created_at_either_edge_of_the_window_is_found(
    client: anthropic.AsyncAnthropic, clock: Clock
) -> None:
    keys = _keys("label")
    batch_id = await _create(client, keys)
    created = clock.at
    assert await _reconcile(client, created + WINDOW, keys) == Verdict("found", batch_id)
    assert await _reconcile(client, created - WINDOW, keys) == Verdict("found", batch_id)


# ---- none -------------------------------------------------------------------------------


async def test_no_batch_at_all_is_none(client: anthropic.AsyncAnthropic, clock: Clock) -> None:
    assert await _reconcile(client, clock.at, _keys("label")) == Verdict("none")


async def test_batches_of_another_size_are_not_candidates(
    client: anthropic.AsyncAnthropic, clock: Clock
) -> None:
    intent_at = clock.at
    await _create(client, _keys("label", 2))  # running
    await _create(client, _keys("label", 4))
    assert await _reconcile(client, intent_at, _keys("label", 3)) == Verdict("none")


@pytest.mark.parametrize("ended", [False, True], ids=["running", "ended"])
async def test_a_batch_the_store_already_names_is_never_adopted(
    client: anthropic.AsyncAnthropic, clock: Clock, ended: bool
) -> None:
    keys = _keys("label")
    intent_at = clock.at
    batch_id = await _create(client, keys)  # even with the intent's very custom_ids
    if ended:
        clock.advance(BATCH_SECONDS)
    assert await _status(client, batch_id) == ("ended" if ended else "in_progress")
    assert await _reconcile(client, intent_at, keys, known=[batch_id]) == Verdict("none")


async def test_a_known_batch_does_not_make_a_lone_running_candidate_ambiguous(
    client: anthropic.AsyncAnthropic, clock: Clock
) -> None:
    keys = _keys("label")
    intent_at = clock.at
    another_intents = await _create(client, _keys("other"))
    ours = await _create(client, keys)
    verdict = await _reconcile(client, intent_at, keys, known=["intent_x", another_intents])
    assert verdict == Verdict("found", ours)


async def test_an_ended_batch_with_other_custom_ids_is_not_adopted(
    client: anthropic.AsyncAnthropic, clock: Clock
) -> None:
    keys = _keys("label")
    intent_at = clock.at
    # Same size; two of three custom_ids shared: a partial overlap is still not ours.
    lookalike = await _create(client, [*keys[:2], "label-9999"])
    clock.advance(BATCH_SECONDS)
    assert await _status(client, lookalike) == "ended"
    assert await _reconcile(client, intent_at, keys) == Verdict("none")


@pytest.mark.parametrize("offset_minutes", [-11, 11, 60])
async def test_a_batch_outside_the_window_is_not_adopted(
    client: anthropic.AsyncAnthropic, clock: Clock, offset_minutes: int
) -> None:
    """The batch was created ``offset_minutes`` after the intent (negative: before)."""
    keys = _keys("label")
    created = clock.at
    batch_id = await _create(client, keys)
    assert await _status(client, batch_id) == "in_progress"
    intent_at = created - timedelta(minutes=offset_minutes)
    assert await _reconcile(client, intent_at, keys) == Verdict("none")


async def test_a_batch_just_outside_the_window_is_not_adopted(
    client: anthropic.AsyncAnthropic, clock: Clock
) -> None:
    keys = _keys("label")
    batch_id = await _create(client, keys)
    created = clock.at
    assert await _status(client, batch_id) == "in_progress"
    just = timedelta(milliseconds=1)
    assert await _reconcile(client, created + WINDOW + just, keys) == Verdict("none")
    assert await _reconcile(client, created - WINDOW - just, keys) == Verdict("none")


async def test_a_newer_batch_outside_the_window_does_not_hide_the_intents_batch(
    client: anthropic.AsyncAnthropic, clock: Clock
) -> None:
    keys = _keys("label")
    intent_at = clock.at
    ours = await _create(client, keys)
    clock.advance(timedelta(minutes=30).total_seconds())
    await _create(client, keys)  # listed first; created long after the intent
    assert await _reconcile(client, intent_at, keys) == Verdict("found", ours)


# ---- unknown ----------------------------------------------------------------------------


async def test_two_running_candidates_of_the_same_size_are_unknown(
    client: anthropic.AsyncAnthropic, clock: Clock
) -> None:
    keys = _keys("label")
    intent_at = clock.at
    first = await _create(client, keys)
    clock.advance(1)
    second = await _create(client, _keys("other"))  # same size, other ids: cannot tell yet
    assert {await _status(client, b) for b in (first, second)} == {"in_progress"}
    with capture_logs() as logs:
        verdict = await _reconcile(client, intent_at, keys)
    assert verdict == Verdict("unknown")
    assert [e for e in logs if e["event"] == "batch.intent_ambiguous"] == [
        {"event": "batch.intent_ambiguous", "candidates": 2, "log_level": "warning"}
    ]
    # Once both ended, the custom_ids tell which one the intent became.
    clock.advance(BATCH_SECONDS)
    assert await _reconcile(client, intent_at, keys) == Verdict("found", first)


async def test_a_disproved_ended_batch_does_not_make_a_lone_running_candidate_ambiguous(
    client: anthropic.AsyncAnthropic, clock: Clock
) -> None:
    keys = _keys("label")
    intent_at = clock.at
    lookalike = await _create(client, _keys("other"))
    await client.messages.batches.cancel(lookalike)  # ended at once; its ids are not ours
    clock.advance(1)
    ours = await _create(client, keys)
    assert await _status(client, lookalike) == "ended"
    assert await _status(client, ours) == "in_progress"
    assert await _reconcile(client, intent_at, keys) == Verdict("found", ours)
