"""Reservations count a large static prompt exactly (count_tokens, once per distinct
content): the bound stays true and becomes tight."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import anthropic
import pytest

from llmflow.catalog import request_cost
from llmflow.emulator.config import EmulatorConfig
from llmflow.executor.responses import usage_of
from llmflow.executor.static_counts import MAX_DISTINCT, StaticCounts, request_bound
from llmflow.planner import request_max_cost

from .conftest import CATALOG, Emulated  # type: ignore[import-not-found]

GUIDE = (
    Path(__file__).resolve().parents[2] / "pipelines" / "data" / "acme_product_guide.md"
).read_text()
MODEL = "claude-sonnet-4-6"


def _params(ticket: int, system: str = GUIDE) -> dict[str, Any]:
    return {
        "model": MODEL,
        "max_tokens": 40,
        "system": [
            {"type": "text", "text": "You answer Acme support tickets using the guide."},
            {"type": "text", "text": system, "cache_control": {"type": "ephemeral"}},
        ],
        "messages": [
            {"role": "user", "content": [{"type": "text", "text": f"Ticket {ticket}: my bill?"}]}
        ],
    }


class _Spy:
    def __init__(self, client: anthropic.AsyncAnthropic) -> None:
        self.calls = 0
        self._count = client.messages.count_tokens
        client.messages.count_tokens = self  # type: ignore[method-assign, assignment]

    async def __call__(self, **kw: Any) -> Any:
        self.calls += 1
        return await self._count(**kw)


async def test_a_static_guide_is_counted_once_and_bounds_every_request_truly_and_tightly(
    emulated: Callable[[EmulatorConfig], Emulated],
) -> None:
    client = emulated(EmulatorConfig()).client()
    spy = _Spy(client)
    counts = StaticCounts(client)
    model = CATALOG.get(MODEL)
    assert model is not None
    bounds = [await request_bound(counts, "s", _params(i), model, batch=False) for i in range(4)]
    assert spy.calls == 1
    loose = request_max_cost(_params(0), model, batch=False)
    assert bounds[0] < loose / 2  # the guide's bytes are 3-4 times its tokens
    billed = []
    for i, bound in enumerate(bounds):
        message = await client.messages.create(**_params(i))
        billed.append(request_cost(usage_of(message.usage), model))
        assert billed[-1] <= bound  # a true bound: the cold write and the warm reads
    assert bounds[0] <= 2 * billed[0]  # tight: the first request wrote the prefix
    await client.close()


async def test_small_or_changing_static_parts_keep_the_byte_bound(
    emulated: Callable[[EmulatorConfig], Emulated],
) -> None:
    client = emulated(EmulatorConfig()).client()
    spy = _Spy(client)
    counts = StaticCounts(client)
    assert await counts.tokens("s", _params(0, system="A short system prompt.")) is None
    varying = [_params(0, system=f"{GUIDE}\nCustomer {i}.") for i in range(MAX_DISTINCT + 3)]
    counted = [await counts.tokens("s", p) for p in varying]
    assert all(isinstance(n, int) for n in counted[:MAX_DISTINCT])
    assert counted[MAX_DISTINCT:] == [None, None, None]
    assert spy.calls == MAX_DISTINCT
    await client.close()


async def test_a_count_that_fails_leaves_the_byte_bound(
    emulated: Callable[[EmulatorConfig], Emulated], monkeypatch: pytest.MonkeyPatch
) -> None:
    client = emulated(EmulatorConfig()).client()

    async def refused(**_: Any) -> Any:
        raise anthropic.APIConnectionError(request=None)  # type: ignore[arg-type]

    monkeypatch.setattr(client.messages, "count_tokens", refused)
    counts = StaticCounts(client)
    model = CATALOG.get(MODEL)
    assert model is not None
    bound = await request_bound(counts, "s", _params(0), model, batch=False)
    assert bound == request_max_cost(_params(0), model, batch=False)
    await client.close()
