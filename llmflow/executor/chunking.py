"""Splitting a step's batch requests into Message Batches the API accepts.

A batch holds at most 100,000 requests and 256 MB of request JSON.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator
from typing import Any

MAX_BATCH_REQUESTS = 100_000
MAX_BATCH_BYTES = 256 * 1024 * 1024
_ENVELOPE_BYTES = 64  # {"requests": [...]} and separators, generously


def request_bytes(custom_id: str, params: dict[str, Any]) -> int:
    """Size of one batch request entry as JSON."""
    entry = {"custom_id": custom_id, "params": params}
    return len(json.dumps(entry, separators=(",", ":"), ensure_ascii=False).encode("utf-8")) + 1


def chunk_requests(
    requests: Iterable[tuple[str, dict[str, Any]]],
    *,
    max_requests: int = MAX_BATCH_REQUESTS,
    max_bytes: int = MAX_BATCH_BYTES,
) -> Iterator[list[tuple[str, dict[str, Any]]]]:
    """Group ``(custom_id, params)`` pairs into batches within both limits, in order.

    A single request larger than ``max_bytes`` raises ValueError: no batch can carry it.
    """
    chunk: list[tuple[str, dict[str, Any]]] = []
    size = _ENVELOPE_BYTES
    for custom_id, params in requests:
        entry = request_bytes(custom_id, params)
        if entry + _ENVELOPE_BYTES > max_bytes:
            raise ValueError(f"request {custom_id} is {entry} bytes: larger than a whole batch")
        if chunk and (len(chunk) >= max_requests or size + entry > max_bytes):
            yield chunk
            chunk, size = [], _ENVELOPE_BYTES
        chunk.append((custom_id, params))
        size += entry
    if chunk:
        yield chunk
