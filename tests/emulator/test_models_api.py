"""The Models API through ``client.models``, and what a retired model answers."""

from __future__ import annotations

import datetime as dt
from typing import Any

import anthropic
import pytest
from anthropic.types import ModelCapabilities, ModelInfo

from llmflow.catalog import load_catalog

CATALOG = load_catalog()
HELLO: list[Any] = [{"role": "user", "content": "Hello there."}]


def _listed_ids(*lifecycles: str) -> list[str]:
    """Catalog ids in the given lifecycle stages, newest release first."""
    models = [m for m in CATALOG.models.values() if m.lifecycle in lifecycles]
    return [m.id for m in sorted(models, key=lambda m: m.released or dt.date.min, reverse=True)]


async def test_list_is_active_and_deprecated_newest_first(
    aclient: anthropic.AsyncAnthropic,
) -> None:
    every = [m async for m in aclient.models.list(limit=1000)]
    assert [m.id for m in every] == _listed_ids("active", "deprecated")
    assert "claude-opus-4-1" not in {m.id for m in every}
    assert every[0].created_at >= every[-1].created_at
    assert {m.lifecycle for m in every} == {"active", "deprecated"}


async def test_pagination_cursors(aclient: anthropic.AsyncAnthropic) -> None:
    expected = _listed_ids("active", "deprecated")
    first = await aclient.models.list(limit=4)
    assert [m.id for m in first.data] == expected[:4]
    assert first.has_more and first.first_id == expected[0] and first.last_id == expected[3]
    after = await aclient.models.list(limit=4, after_id=expected[3])
    assert [m.id for m in after.data] == expected[4:8]
    before = await aclient.models.list(limit=2, before_id=expected[5])
    assert [m.id for m in before.data] == expected[3:5] and before.has_more
    walked = [m.id async for m in await aclient.models.list(limit=3)]
    assert walked == expected
    last = await aclient.models.list(limit=3, after_id=expected[-2])
    assert [m.id for m in last.data] == expected[-1:] and not last.has_more


async def test_lifecycle_filter_lists_retired_only_when_asked(
    aclient: anthropic.AsyncAnthropic,
) -> None:
    retired = await aclient.models.list(lifecycle=["retired"])
    assert [m.id for m in retired.data] == ["claude-opus-4-1"]
    assert retired.data[0].lifecycle == "retired"
    assert retired.data[0].retires_at == dt.datetime(2026, 8, 5, tzinfo=dt.UTC)
    deprecated = await aclient.models.list(lifecycle=["deprecated"])
    assert [m.id for m in deprecated.data] == ["claude-sonnet-4-5"]
    both = await aclient.models.list(lifecycle=["deprecated", "retired"], limit=1000)
    assert {m.id for m in both.data} == {"claude-opus-4-1", "claude-sonnet-4-5"}
    with pytest.raises(anthropic.BadRequestError):
        await aclient.models.list(lifecycle=["gone"])  # type: ignore[list-item]


@pytest.mark.parametrize("model_id", sorted(CATALOG.models))
async def test_retrieve_matches_catalog(aclient: anthropic.AsyncAnthropic, model_id: str) -> None:
    info = await aclient.models.retrieve(model_id)
    model = CATALOG.models[model_id]
    assert isinstance(info, ModelInfo)
    assert info.id == model_id and info.display_name == model.display_name
    assert info.lifecycle == model.lifecycle and info.line == model.line
    assert info.max_input_tokens == model.context_window
    assert info.max_tokens == model.max_output_tokens
    released = model.released or dt.date(1970, 1, 1)
    assert info.created_at == dt.datetime.combine(released, dt.time(), dt.UTC)
    caps = info.capabilities
    assert caps is not None
    raw = caps.model_dump()
    assert set(raw) == set(ModelCapabilities.model_fields)
    assert caps.batch.supported == model.capabilities.batch
    assert caps.structured_outputs.supported == model.capabilities.structured_outputs
    levels = {e for e in ("low", "medium", "high", "xhigh", "max") if raw["effort"][e]["supported"]}
    assert levels == set(model.capabilities.effort_levels)
    assert caps.effort.supported == bool(model.capabilities.effort_levels)
    types = raw["thinking"]["types"]
    assert set(types) == {"adaptive", "enabled", "disabled", "between_tools"}
    for kind in ("adaptive", "enabled", "disabled", "between_tools"):
        assert types[kind]["supported"] == (kind in model.capabilities.thinking_types), kind
    assert set(raw["server_tools"]) == {"code_execution", "web_search", "supported"}


async def test_capabilities_of_current_models(aclient: anthropic.AsyncAnthropic) -> None:
    opus = await aclient.models.retrieve("claude-opus-5-5")
    assert opus.capabilities is not None
    thinking = opus.capabilities.thinking
    assert thinking.supported and thinking.types.adaptive.supported
    assert not thinking.types.enabled.supported and not thinking.types.disabled.supported
    sonnet46 = await aclient.models.retrieve("claude-sonnet-4-6")
    assert sonnet46.capabilities is not None
    effort = sonnet46.capabilities.effort
    assert effort.high.supported and effort.xhigh is not None and not effort.xhigh.supported
    assert not effort.max.supported


async def test_retrieve_alias_and_unknown(aclient: anthropic.AsyncAnthropic) -> None:
    info = await aclient.models.retrieve("claude-haiku-4-5-20251001")
    assert info.id == "claude-haiku-4-5"
    with pytest.raises(anthropic.NotFoundError):
        await aclient.models.retrieve("claude-nope-9")


async def test_retired_model_is_listed_but_not_served(
    aclient: anthropic.AsyncAnthropic, emu: Any
) -> None:
    info = await aclient.models.retrieve("claude-opus-4-1")
    assert info.lifecycle == "retired"
    with pytest.raises(anthropic.NotFoundError, match="retired"):
        await aclient.messages.create(model="claude-opus-4-1", max_tokens=5, messages=HELLO)
    with pytest.raises(anthropic.NotFoundError, match="retired"):
        await aclient.messages.count_tokens(model="claude-opus-4-1", messages=HELLO)
    body = {"model": "claude-opus-4-1", "max_tokens": 5, "messages": HELLO}
    batch = await aclient.messages.batches.create(requests=[{"custom_id": "old", "params": body}])
    results = [r async for r in await aclient.messages.batches.results(batch.id)]
    assert results[0].result.type == "errored"
    assert results[0].result.error.error.type == "not_found_error"
    assert (await emu.ledger())["requests"] == []


@pytest.mark.filterwarnings("ignore:The model .* is deprecated:DeprecationWarning")
async def test_deprecated_model_is_still_served(aclient: anthropic.AsyncAnthropic) -> None:
    info = await aclient.models.retrieve("claude-sonnet-4-5")
    assert info.lifecycle == "deprecated" and info.retires_at is not None
    message = await aclient.messages.create(model="claude-sonnet-4-5", max_tokens=5, messages=HELLO)
    assert message.usage.output_tokens == 5
