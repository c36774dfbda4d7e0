"""Message Batches: create, retrieve, list, cancel, delete and JSONL results.

A batch ends ``batch_seconds`` after creation (0: at once). State advances lazily on
every batch or ledger call, from the injectable clock, so tests need not sleep. When
a batch ends its requests run in order through the shared prompt cache and engine,
billed with ``service_tier: "batch"``. Cache hits in a batch are best effort, as the
API's (Anthropic reports 30-98%): a request whose prefix is cached reads it with
probability ``batch_cache_hit_rate`` (``EmulatorConfig``, ``--batch-cache-hit-rate``),
drawn from the seed and its ``custom_id`` (:func:`reads_cache`); otherwise it is billed
as if nothing were cached: a cache write, or plain input where the prefix is not
cacheable. A request whose params are malformed, or that
the model's rules refuse in a batch (``stream``, ``speed``, ``max_tokens: 0``, and every
rule of a single request, checked on the day the batch is created), becomes an
``errored`` result, never billed and never a failed batch.

Batches are listed newest first with the API's cursors (:mod:`.paging`: ``limit`` 1-1000,
default 20; ``before_id``, ``after_id``; ``has_more``, ``first_id``, ``last_id``), each with
``created_at`` and ``request_counts``, so a client that lost a create's answer can find
the batch by listing and, once ended, by the ``custom_id`` of its results.
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Final

import structlog

from llmflow.emulator.engine import Engine
from llmflow.emulator.errors import ApiError, error_body, invalid, not_found
from llmflow.emulator.paging import page
from llmflow.emulator.refusals import refuse, utc_day
from llmflow.emulator.validation import ParsedRequest, parse_request

log = structlog.get_logger("llmflow.emulator")

MAX_REQUESTS: Final = 100_000
EXPIRES_AFTER: Final = 24 * 3600.0
_CUSTOM_ID: Final = re.compile(r"^[a-zA-Z0-9_-]{1,64}$")


def timestamp(ts: float) -> str:
    """RFC 3339 with microseconds, as the API writes batch times."""
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


@dataclass(slots=True)
class _Item:
    custom_id: str
    request: ParsedRequest | None
    error: ApiError | None


@dataclass(slots=True)
class Batch:
    """One message batch and, once ended, its results."""

    id: str
    created_at: float
    ends_at: float
    items: list[_Item]
    status: str = "in_progress"
    cancel_initiated_at: float | None = None
    ended_at: float | None = None
    results: list[dict[str, Any]] = field(default_factory=list)
    counts: dict[str, int] = field(default_factory=dict)

    def to_json(self, base_url: str) -> dict[str, Any]:
        """The MessageBatch object; ``results_url`` is built from the caller's base URL."""
        counts = self.counts or {
            "processing": len(self.items),
            "succeeded": 0,
            "errored": 0,
            "canceled": 0,
            "expired": 0,
        }
        ended = self.status == "ended"
        return {
            "id": self.id,
            "type": "message_batch",
            "processing_status": self.status,
            "request_counts": dict(counts),
            "ended_at": timestamp(self.ended_at) if self.ended_at is not None else None,
            "created_at": timestamp(self.created_at),
            "expires_at": timestamp(self.created_at + EXPIRES_AFTER),
            "archived_at": None,
            "cancel_initiated_at": (
                timestamp(self.cancel_initiated_at)
                if self.cancel_initiated_at is not None
                else None
            ),
            "results_url": f"{base_url}v1/messages/batches/{self.id}/results" if ended else None,
        }


def reads_cache(seed: int, custom_id: str, hit_rate: float) -> bool:
    """Whether the batch request ``custom_id`` may read a cached prefix: true for a share
    ``hit_rate`` of custom_ids, deterministic for the seed."""
    digest = hashlib.blake2b(f"{seed}:batch-cache:{custom_id}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") / 2**64 < hit_rate


def _requests(body: Any) -> list[Any]:
    if not isinstance(body, dict) or not isinstance(body.get("requests"), list):
        raise invalid("requests: Field required")
    extra = set(body) - {"requests"}
    if extra:
        raise invalid(f"{sorted(extra)[0]}: Extra inputs are not permitted")
    requests: list[Any] = body["requests"]
    if not requests:
        raise invalid("requests: List should have at least 1 item after validation, not 0")
    if len(requests) > MAX_REQUESTS:
        raise invalid(
            f"requests: List should have at most {MAX_REQUESTS} items after validation,"
            f" not {len(requests)}"
        )
    return requests


def _item(custom_id: str, params: Any, now: float) -> _Item:
    try:
        request = parse_request(params)
        refuse(request, today=utc_day(now), batch=True)
    except ApiError as error:
        return _Item(custom_id, None, error)
    return _Item(custom_id, request, None)


def _parse_items(body: Any, now: float) -> list[_Item]:
    items: list[_Item] = []
    seen: set[str] = set()
    for i, entry in enumerate(_requests(body)):
        if not isinstance(entry, dict) or set(entry) != {"custom_id", "params"}:
            raise invalid(f"requests.{i}: each request needs exactly custom_id and params")
        custom_id = entry["custom_id"]
        if not isinstance(custom_id, str) or not _CUSTOM_ID.match(custom_id):
            raise invalid(
                f"requests.{i}.custom_id: String should match pattern '^[a-zA-Z0-9_-]{{1,64}}$'"
            )
        if custom_id in seen:
            raise invalid(f"requests: custom_id {custom_id!r} is not unique within the batch")
        seen.add(custom_id)
        items.append(_item(custom_id, entry["params"], now))
    return items


class BatchStore:
    """Every batch of this emulator, newest first for listing."""

    def __init__(self, engine: Engine, batch_seconds: float, *, cache_hit_rate: float) -> None:
        self._engine = engine
        self._batch_seconds = batch_seconds
        self._cache_hit_rate = cache_hit_rate
        self._batches: dict[str, Batch] = {}
        self._pending: list[Batch] = []

    def clear(self) -> None:
        """Forget every batch."""
        self._batches.clear()
        self._pending.clear()

    def create(self, body: Any, now: float) -> Batch:
        """Validate and queue a batch."""
        items = _parse_items(body, now)
        batch = Batch(
            id=self._engine.ids.new("msgbatch"),
            created_at=now,
            ends_at=now + self._batch_seconds,
            items=items,
        )
        self._batches[batch.id] = batch
        self._pending.append(batch)
        log.info("emulator.batch.created", batch_id=batch.id, requests=len(items))
        if self._batch_seconds == 0:
            self.advance(now)
        return batch

    def get(self, batch_id: str, now: float) -> Batch:
        """The batch, or 404."""
        self.advance(now)
        batch = self._batches.get(batch_id)
        if batch is None:
            raise not_found(f"message_batch: {batch_id} not found")
        return batch

    def page(
        self, now: float, before_id: str | None, after_id: str | None, limit: int
    ) -> tuple[list[Batch], bool]:
        """A page of batches, newest first, and whether more lie in that direction."""
        self.advance(now)
        ordered = list(reversed(self._batches.values()))
        ids = [b.id for b in ordered]
        return page(ordered, ids, before_id=before_id, after_id=after_id, limit=limit)

    def cancel(self, batch_id: str, now: float) -> Batch:
        """Ask an in-progress batch to stop; it ends (all canceled) on the next look."""
        batch = self.get(batch_id, now)
        if batch.status == "in_progress":
            batch.status = "canceling"
            batch.cancel_initiated_at = now
            log.info("emulator.batch.canceling", batch_id=batch_id)
        return batch

    def delete(self, batch_id: str, now: float) -> None:
        """Delete an ended batch (in-progress ones must be canceled first)."""
        batch = self.get(batch_id, now)
        if batch.status != "ended":
            raise invalid(
                f"Batch {batch_id} cannot be deleted while it is {batch.status};"
                " cancel it and wait for it to end first."
            )
        del self._batches[batch_id]

    def results(self, batch_id: str, now: float) -> bytes:
        """The JSONL results of an ended batch (one line per request, no blank lines)."""
        batch = self.get(batch_id, now)
        if batch.status != "ended":
            raise invalid(f"Batch {batch_id} has not ended yet; results are not available.")
        return "".join(
            json.dumps(line, ensure_ascii=False) + "\n" for line in batch.results
        ).encode()

    def advance(self, now: float) -> None:
        """End every batch that is due (or canceling) at ``now``."""
        if not self._pending:
            return
        still: list[Batch] = []
        for batch in self._pending:
            if batch.id not in self._batches:
                continue
            if batch.status == "canceling":
                self._finish(batch, "canceled", batch.cancel_initiated_at or now)
            elif now >= batch.created_at + EXPIRES_AFTER and batch.ends_at > now:
                self._finish(batch, "expired", batch.created_at + EXPIRES_AFTER)
            elif now >= batch.ends_at:
                self._process(batch, now)
            else:
                still.append(batch)
        self._pending = still

    def _finish(self, batch: Batch, outcome: str, at: float) -> None:
        batch.results = [
            {"custom_id": item.custom_id, "result": {"type": outcome}} for item in batch.items
        ]
        batch.counts = dict.fromkeys(
            ("processing", "succeeded", "errored", "canceled", "expired"), 0
        )
        batch.counts[outcome] = len(batch.items)
        batch.status = "ended"
        batch.ended_at = max(at, batch.created_at)
        log.info("emulator.batch.ended", batch_id=batch.id, outcome=outcome)

    def _process(self, batch: Batch, now: float) -> None:
        engine = self._engine
        results: list[dict[str, Any]] = []
        counts = dict.fromkeys(("processing", "succeeded", "errored", "canceled", "expired"), 0)
        for item in batch.items:
            request_id = engine.ids.new("req")
            error = item.error
            if item.request is not None:
                try:
                    message = engine.complete(
                        item.request,
                        now=now,
                        request_id=request_id,
                        service_tier="batch",
                        batch_id=batch.id,
                        custom_id=item.custom_id,
                        latency_s=0.0,
                        read_cache=reads_cache(engine.seed, item.custom_id, self._cache_hit_rate),
                    )
                except ApiError as exc:
                    error = exc
                else:
                    results.append(
                        {
                            "custom_id": item.custom_id,
                            "result": {"type": "succeeded", "message": message},
                        }
                    )
                    counts["succeeded"] += 1
                    continue
            assert error is not None
            body = error_body(error.error_type, error.message, request_id, error.details)
            results.append(
                {"custom_id": item.custom_id, "result": {"type": "errored", "error": body}}
            )
            counts["errored"] += 1
        batch.results = results
        batch.counts = counts
        batch.status = "ended"
        batch.ended_at = max(batch.ends_at, batch.created_at)
        log.info(
            "emulator.batch.ended",
            batch_id=batch.id,
            succeeded=counts["succeeded"],
            errored=counts["errored"],
        )
