"""Finding out what a batch intent became: the API is asked before anything is resubmitted.

An intent (``batches.status = 'creating'``) is written, with its request keys and the
reservation of their upper bounds, before ``batches.create`` is called. A process
killed before it learnt the batch id leaves the intent behind. The resumed run lists
the API's batches (newest first) created in the intent's window, keeps those with the
intent's request count that no other row of the store names, and, for those already
ended, compares the ``custom_id`` of their results with the intent's keys.

- One match: the intent is that batch; it is polled and its results recorded.
- None, and the listing covered the window: no batch was created; the intent is
  abandoned, its reservations released, and its requests sent again.
- Several candidates still running: nothing can be told yet; the intent waits
  (its upper bounds stay reserved: they count against every limit).
"""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Literal

import anthropic
import structlog
from anthropic.types.messages import MessageBatch

_log = structlog.get_logger("llmflow.executor")

#: How far a batch's ``created_at`` may be from its intent (clock skew, slow creates).
WINDOW = timedelta(minutes=10)


@dataclass(frozen=True, slots=True)
class Verdict:
    """What an intent became: a batch id (``found``), nothing (``none``), or ``unknown``."""

    outcome: Literal["found", "none", "unknown"]
    batch_id: str | None = None


async def reconcile(
    client: anthropic.AsyncAnthropic,
    *,
    intent_at: datetime,
    keys: Collection[str],
    known: Collection[str],
) -> Verdict:
    """What the intent created at ``intent_at`` for ``keys`` became. ``known`` are batch
    ids the store already names (never another intent's batch)."""
    start, end = intent_at - WINDOW, intent_at + WINDOW
    candidates: list[MessageBatch] = []
    async for batch in client.messages.batches.list(limit=100):
        if batch.created_at < start:
            break  # newest first: everything further is older
        if batch.created_at > end or batch.id in known:
            continue
        if _total(batch) == len(keys):
            candidates.append(batch)
    wanted = set(keys)
    ended = [b for b in candidates if b.processing_status == "ended"]
    for batch in ended:
        if await _custom_ids(client, batch.id) == wanted:
            return Verdict("found", batch.id)
    running = [b for b in candidates if b.processing_status != "ended"]
    if len(running) == 1:  # the ended candidates were ruled out by their custom_ids
        return Verdict("found", running[0].id)
    if not running:
        return Verdict("none")
    _log.warning("batch.intent_ambiguous", candidates=len(running))
    return Verdict("unknown")


def _total(batch: MessageBatch) -> int:
    c = batch.request_counts
    return c.processing + c.succeeded + c.errored + c.canceled + c.expired


async def _custom_ids(client: anthropic.AsyncAnthropic, batch_id: str) -> set[str]:
    return {entry.custom_id async for entry in await client.messages.batches.results(batch_id)}
