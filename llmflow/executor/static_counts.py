"""Exact token counts of the tools and system blocks a step's requests share.

A request's upper bound counts every input byte as a token (a true bound: a token
covers at least one byte), which overstates English text 3-4 times; when a large
static prompt (a product guide, a contract) is in every request, reservations then
hold far more than a request can cost, and a budget near the expected cost stops the
run early. So before a step's first request, the free count_tokens endpoint counts
its tools and system blocks exactly, once per distinct content and model
(:func:`llmflow.planner.costing.static_params`), and reservations use that count for
them (:func:`llmflow.planner.request_max_cost`): the messages keep their byte bound,
and the bound stays true.

Only static parts of at least :data:`MIN_BYTES` are counted, at most
:data:`MAX_DISTINCT` per step (a system prompt that changes with every item is not
static: its requests keep the byte bound). A count that fails (an API without the
endpoint, a fault) leaves the byte bound; the run goes on.
"""

from __future__ import annotations

import asyncio
import hashlib
from collections import Counter
from collections.abc import Mapping
from decimal import Decimal
from typing import Any

import anthropic
import structlog

from llmflow.catalog import ModelInfo
from llmflow.planner.costing import request_max_cost, static_params
from llmflow.planner.requests import count_params
from llmflow.planner.tokens import static_size

_log = structlog.get_logger("llmflow.executor")

#: Static parts smaller than this (bytes) keep their byte bound: close enough.
MIN_BYTES = 4096

#: Distinct static parts counted per step, at most.
MAX_DISTINCT = 16


class StaticCounts:
    """count_tokens of static request parts, each counted once per run."""

    def __init__(self, client: anthropic.AsyncAnthropic) -> None:
        self._client = client
        self._counts: dict[str, asyncio.Future[int | None]] = {}
        self._distinct: Counter[str] = Counter()
        self._failed = False

    async def tokens(self, step_id: str, params: Mapping[str, Any]) -> int | None:
        """The exact tokens of ``params``' tools and system (with a one-character
        message), or None when they are small, not static, or could not be counted."""
        if self._failed or static_size(params).bound < MIN_BYTES:
            return None
        key = _key(params)
        known = self._counts.get(key)
        if known is None:
            if self._distinct[step_id] >= MAX_DISTINCT:
                return None
            self._distinct[step_id] += 1
            known = asyncio.get_running_loop().create_future()
            self._counts[key] = known
            counted: int | None = None
            try:
                counted = await self._count(step_id, params)
            finally:  # waiters never hang, even when this task is cancelled
                known.set_result(counted)
        return await asyncio.shield(known)

    async def _count(self, step_id: str, params: Mapping[str, Any]) -> int | None:
        try:
            counted = await self._client.messages.count_tokens(
                **count_params(static_params(params))
            )
        except (anthropic.APIError, ValueError) as exc:
            self._failed = True  # one warning; every later request keeps its byte bound
            _log.warning("bounds.count_failed", step=step_id, error=type(exc).__name__)
            return None
        return int(counted.input_tokens)


async def request_bound(
    counts: StaticCounts | None,
    step_id: str,
    params: Mapping[str, Any],
    model: ModelInfo,
    *,
    batch: bool,
) -> Decimal:
    """What a request reserves: its true upper bound, tight where its static part was
    counted exactly."""
    static = None if counts is None else await counts.tokens(step_id, params)
    return request_max_cost(params, model, batch=batch, static_tokens=static)


def _key(params: Mapping[str, Any]) -> str:
    parts = [params.get(k) for k in ("model", "system", "tools", "tool_choice")]
    return hashlib.sha256(repr(parts).encode()).hexdigest()
