"""What the tracker records equals an independent pricing of what the emulator billed.

Requests go to the in-process emulator through the SDK (sync, or one batch); each
response becomes a :class:`Completed` the way the executor builds it (``usage_of``,
``usage.service_tier``, ``usage.speed``, ``usage.inference_geo``) and is recorded by a
real :class:`Tracker` over a temporary store. The emulator's ledger
(``GET /_emulator/ledger``) says what it billed; :func:`independent_price` prices each
entry from the catalog's per-category prices by its own arithmetic (it never calls
``cost``, ``request_cost``, ``ModelInfo.prices`` or ``ModelInfo.band``).
"""

from __future__ import annotations

import asyncio
import datetime as dt
import sqlite3
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import Any, Literal

import anthropic
import httpx2
import pytest
from hypothesis import HealthCheck, currently_in_test_context, event, example, given, settings
from hypothesis import strategies as st

from llmflow.catalog import ModelInfo, TokenUsage, load_catalog
from llmflow.emulator import EmulatorConfig, create_app
from llmflow.executor.responses import usage_of
from llmflow.tracker import Completed, RunInfo, RunStore, StepPlan, Tracker, request_key
from llmflow.tracker.store import DB_NAME

CATALOG = load_catalog()
#: The emulator checks request rules on its clock's day: the catalog's day.
TODAY = dt.date(2026, 11, 30)
NOW = dt.datetime(2026, 11, 30, 12, tzinfo=dt.UTC).timestamp()
BASE = "http://emulator.test"
MODELS = (
    "claude-haiku-5-5", "claude-opus-5-5", "claude-sonnet-5-5", "claude-fable-5-2",
    "claude-opus-4-7", "claude-haiku-4-5",
)  # fmt: skip
#: Drawn more often: the banded model and a fast one.
WEIGHTED_MODELS = (*MODELS, "claude-haiku-5-5", "claude-haiku-5-5", "claude-opus-5-5")
#: System blocks' TTLs: () no system prompt, None a block without cache_control.
TTL_LAYOUTS: tuple[tuple[str | None, ...], ...] = ((), (None,), ("5m",), ("1h",), ("1h", "5m"))
MAX_TOKENS = 4096
STEP = "priced"


def _info(model_id: str) -> ModelInfo:
    found = CATALOG.get(model_id)
    assert found is not None
    return found


# -- the independent price ------------------------------------------------------------


def independent_price(entry: Mapping[str, Any], model: ModelInfo) -> Decimal:
    """USD of one ledger entry, from the catalog's per-MTok prices by this test's arithmetic.

    Band: the last band whose threshold the entry's prompt (input + cache writes + cache
    reads) exceeds; fast mode: the catalog's ``fast`` input/output prices; cache writes
    and reads: the model's multipliers of the input price; then the residency multiplier
    for a regional ``inference_geo`` and the batch multiplier for the batch tier.
    """
    usage = entry["usage"]
    written = usage["cache_creation"]
    tokens: dict[str, int] = {
        "input": usage["input_tokens"],
        "w5": written["ephemeral_5m_input_tokens"],
        "w1": written["ephemeral_1h_input_tokens"],
        "read": usage["cache_read_input_tokens"],
        "output": usage["output_tokens"],
    }
    prompt = tokens["input"] + tokens["w5"] + tokens["w1"] + tokens["read"]
    per_in, per_out = model.input_usd_per_mtok, model.output_usd_per_mtok
    for band in sorted(model.bands, key=lambda b: b.above_prompt_tokens):
        if prompt > band.above_prompt_tokens:
            per_in, per_out = band.input_usd_per_mtok, band.output_usd_per_mtok
    if entry["speed"] == "fast":
        assert model.fast is not None and not model.bands  # no model has both (yet)
        per_in, per_out = model.fast.input_usd_per_mtok, model.fast.output_usd_per_mtok
    micro = (
        tokens["input"] * per_in
        + tokens["w5"] * per_in * model.cache_write_5m_multiplier
        + tokens["w1"] * per_in * model.cache_write_1h_multiplier
        + tokens["read"] * per_in * model.cache_read_multiplier
        + tokens["output"] * per_out
    )
    usd = micro / Decimal(1_000_000)
    if entry["inference_geo"] not in (None, "", "global"):
        usd *= model.residency_multiplier
    if entry["service_tier"] == "batch":
        usd *= model.batch_multiplier
    return usd


def test_the_independent_price_is_hand_checkable() -> None:
    """Guard the guard: two entries priced by hand."""
    haiku = _info("claude-haiku-5-5")
    entry = {
        "service_tier": "batch", "speed": "standard", "inference_geo": "us",
        "usage": {"input_tokens": 50_001, "cache_read_input_tokens": 40_000,
                  "cache_creation": {"ephemeral_5m_input_tokens": 4000,
                                     "ephemeral_1h_input_tokens": 6000},
                  "output_tokens": 1000},
    }  # fmt: skip
    # prompt 100,001 > 100K: 50001·0.5 + 4000·0.625 + 6000·1 + 40000·0.05 + 1000·2.5
    #   = 25000.5 + 2500 + 6000 + 2000 + 2500 = 38000.5 per M; ·1.1 (us) ·0.5 (batch)
    assert independent_price(entry, haiku) == Decimal("0.020900275")
    opus = _info("claude-opus-5-5")
    fast = {**entry, "service_tier": "standard", "speed": "fast", "inference_geo": "global"}
    # 50001·8 + 4000·10 + 6000·16 + 40000·0.4 + 1000·40 = 592008 per M
    assert independent_price(fast, opus) == Decimal("0.592008")


# -- scenarios --------------------------------------------------------------------------


@dataclass(frozen=True)
class Scenario:
    """Requests sharing one system prefix; the second and later can read its cache."""

    model: str
    mode: Literal["sync", "batch"]
    ttls: tuple[str | None, ...]
    block_words: int
    user_words: int
    requests: int
    speed: str | None = None
    inference_geo: str | None = None
    effort: str | None = None
    #: Exact prompt tokens of every request (the user message is sized to it), or None.
    prompt_tokens: int | None = None


@st.composite
def scenarios(draw: st.DrawFn) -> Scenario:
    model_id = draw(st.sampled_from(WEIGHTED_MODELS))
    info = _info(model_id)
    modes: tuple[Literal["sync", "batch"], ...] = ("sync", "batch")
    mode = draw(st.sampled_from(modes if info.capabilities.batch else ("sync",)))
    speeds: list[str | None] = [None]
    if mode == "sync" and info.fast is not None and info.fast.offered_on(TODAY):
        speeds += ["standard", "fast", "fast"]
    geos: list[str | None] = [None, "us", "global"] if info.data_residency else [None]
    banded = bool(info.bands) and draw(st.sampled_from((True, True, False)))
    edge = info.bands[0].above_prompt_tokens if info.bands else 0
    return Scenario(
        model=model_id,
        mode=mode,
        ttls=draw(st.sampled_from(TTL_LAYOUTS)),
        block_words=draw(st.integers(200, 40_000 if banded else 6000)),
        user_words=draw(st.integers(1, 3000)),
        requests=draw(st.integers(1, 3)),
        speed=draw(st.sampled_from(speeds)),
        inference_geo=draw(st.sampled_from(geos)),
        effort=draw(st.sampled_from((None, *info.capabilities.effort_levels))),
        prompt_tokens=draw(st.integers(edge - 3, edge + 3)) if banded else None,
    )


def _filler(word: str, n: int) -> str:
    """``n`` tokens in both tokenizer families (three-letter words)."""
    return " ".join([word] * n)


def _params(s: Scenario, index: int, user_words: int) -> dict[str, Any]:
    system = []
    for b, ttl in enumerate(s.ttls):
        block: dict[str, Any] = {"type": "text", "text": _filler(("abc", "xyz")[b], s.block_words)}
        if ttl is not None:
            block["cache_control"] = {"type": "ephemeral", "ttl": ttl}
        system.append(block)
    params: dict[str, Any] = {
        "model": s.model,
        "max_tokens": MAX_TOKENS,
        "messages": [{"role": "user", "content": _filler(f"u{index:02d}", user_words)}],
    }
    if system:
        params["system"] = system
    if s.effort is not None:
        params["output_config"] = {"effort": s.effort}
    if s.speed is not None:
        params["speed"] = s.speed
    if s.inference_geo is not None:
        params["inference_geo"] = s.inference_geo
    return params


# -- one scenario, end to end -----------------------------------------------------------


@dataclass(frozen=True)
class Priced:
    """One ledger entry beside what the tracker recorded for it."""

    entry: dict[str, Any]
    expected: Decimal
    recorded: Decimal
    recorded_usage: TokenUsage
    recorded_speed: str | None
    recorded_geo: str | None


async def _sized_user_words(client: anthropic.AsyncAnthropic, s: Scenario) -> int:
    """User words that make every request's prompt exactly ``s.prompt_tokens``."""
    if s.prompt_tokens is None:
        return s.user_words
    probe = _params(s, 0, 10)
    counted = await client.messages.count_tokens(
        model=s.model, system=probe.get("system", []), messages=probe["messages"]
    )
    words = s.prompt_tokens - (counted.input_tokens - 10)
    assert words >= 1, "scenario prefix too large for its prompt size"
    return words


async def _send(
    client: anthropic.AsyncAnthropic, s: Scenario, user_words: int
) -> list[tuple[str, str | None, Any]]:
    """(key, request id, message) per request, sent in order (sync) or as one batch."""
    keys = [request_key(STEP, i) for i in range(s.requests)]
    if s.mode == "sync":
        out = []
        for i, key in enumerate(keys):
            message = await client.messages.create(**_params(s, i, user_words))
            out.append((key, message._request_id, message))
        return out
    batch = await client.messages.batches.create(
        requests=[
            {"custom_id": key, "params": _params(s, i, user_words)}  # type: ignore[typeddict-item]
            for i, key in enumerate(keys)
        ]
    )
    ended = await client.messages.batches.retrieve(batch.id)
    assert ended.processing_status == "ended"
    results = {r.custom_id: r.result async for r in await client.messages.batches.results(batch.id)}
    assert all(r.type == "succeeded" for r in results.values()), results
    return [(key, None, results[key].message) for key in keys]  # type: ignore[union-attr]


def _record(state: Path, s: Scenario, sent: list[tuple[str, str | None, Any]]) -> None:
    """Record the responses as the executor does: usage_of + the usage's own fields."""
    info = _info(s.model)
    with RunStore.open(state) as store:
        run = RunInfo(pipeline="prop", policy="p", steps=(StepPlan(STEP, s.requests),))
        tracker = Tracker.open(store, "prop", run)
        done = [
            Completed(
                STEP, key, i, info, "t", s.mode, usage_of(m.usage), None, request_id, None,
                m.stop_reason, m.usage.service_tier, m.usage.speed, m.usage.inference_geo,
            )
            for i, (key, request_id, m) in enumerate(sent)
        ]  # fmt: skip
        tracker.record_batch(done)
        tracker.finish("succeeded")


def _recorded_rows(state: Path) -> dict[str, tuple[Any, ...]]:
    with sqlite3.connect(state / DB_NAME) as c:
        rows = c.execute(
            "SELECT key, request_id, input_tokens, cache_write_5m, cache_write_1h, cache_read,"
            " output_tokens, thinking_tokens, speed, inference_geo, cost_usd FROM usage"
            " WHERE run_id = 'prop'"
        ).fetchall()
    return {r[0]: r[1:] for r in rows}


async def _run(s: Scenario, state: Path) -> list[Priced]:
    # Batch cache hits are best effort in the emulator (batch_cache_hit_rate); pinned to
    # always here so batch scenarios bill cache reads after the first write, as sync ones do.
    app = create_app(EmulatorConfig(clock=lambda: NOW, batch_cache_hit_rate=1.0))
    http = httpx2.AsyncClient(transport=httpx2.ASGITransport(app=app), base_url=BASE)
    client = anthropic.AsyncAnthropic(
        api_key="test-key", base_url=BASE, http_client=http, max_retries=0
    )
    try:
        sent = await _send(client, s, await _sized_user_words(client, s))
        ledger = (await http.get("/_emulator/ledger")).json()["requests"]
    finally:
        await client.close()
    _record(state, s, sent)
    rows = _recorded_rows(state)
    assert len(rows) == len(ledger) == s.requests  # every billed response, once
    by_request = {request_id: key for key, request_id, _ in sent}
    info = _info(s.model)
    priced = []
    for entry in ledger:
        key = entry["custom_id"] if s.mode == "batch" else by_request[entry["request_id"]]
        _, *tokens, speed, geo, cost = rows[key]
        i, w5, w1, r, o, t = tokens
        usage = TokenUsage(
            input=i, cache_write_5m=w5, cache_write_1h=w1, cache_read=r, output=o, thinking=t
        )
        priced.append(
            Priced(entry, independent_price(entry, info), Decimal(cost), usage, speed, geo)
        )
    return priced


def _ledger_usage(entry: Mapping[str, Any]) -> TokenUsage:
    u = entry["usage"]
    details = u.get("output_tokens_details") or {}
    return TokenUsage(
        input=u["input_tokens"],
        cache_write_5m=u["cache_creation"]["ephemeral_5m_input_tokens"],
        cache_write_1h=u["cache_creation"]["ephemeral_1h_input_tokens"],
        cache_read=u["cache_read_input_tokens"],
        output=u["output_tokens"],
        thinking=details.get("thinking_tokens", 0),
    )


def check(s: Scenario) -> list[Priced]:
    """Run ``s`` and assert the property; returns the priced entries for more checks."""
    with tempfile.TemporaryDirectory() as tmp:
        state = Path(tmp) / "state"
        priced = asyncio.run(_run(s, state))
        with RunStore.open(state) as store:
            spent = store.run_spent("prop")
    for p in priced:
        assert p.recorded == p.expected, (p.entry, p.recorded, p.expected)
        assert p.recorded_usage == _ledger_usage(p.entry)
        assert (p.recorded_speed, p.recorded_geo) == (p.entry["speed"], p.entry["inference_geo"])
        if s.prompt_tokens is not None:
            assert p.recorded_usage.total_input == s.prompt_tokens
        _label(s, p)
    assert spent == sum((p.expected for p in priced), Decimal(0))
    return priced


def _label(s: Scenario, p: Priced) -> None:
    """Hypothesis statistics: which rules the example exercised."""
    if not currently_in_test_context():
        return
    u = p.recorded_usage
    model = _info(s.model)
    if model.bands:
        high = u.total_input > model.bands[0].above_prompt_tokens
        event(f"{s.model} band {'high' if high else 'base'}")
    for name, seen in (("fast", p.recorded_speed == "fast"), ("us", p.recorded_geo == "us"),
                       ("batch", s.mode == "batch"), ("5m write", u.cache_write_5m > 0),
                       ("1h write", u.cache_write_1h > 0), ("cache read", u.cache_read > 0),
                       ("thinking", u.thinking > 0)):  # fmt: skip
        if seen:
            event(name)


# -- the property -----------------------------------------------------------------------

EXAMPLES = {
    "haiku 5.5 at 100,000 prompt tokens (base band), 5m write then reads": Scenario(
        "claude-haiku-5-5", "sync", ("5m",), 30_000, 1, 3, prompt_tokens=100_000
    ),
    "haiku 5.5 at 100,001 prompt tokens (high band), 1h write then a read, in the US": Scenario(
        "claude-haiku-5-5", "sync", ("1h",), 30_000, 1, 2, inference_geo="us",
        prompt_tokens=100_001,
    ),
    "haiku 5.5 batch over the band, 1h and 5m writes": Scenario(
        "claude-haiku-5-5", "batch", ("1h", "5m"), 20_000, 1, 2, prompt_tokens=100_003
    ),
    "opus 5.5 fast in the US, 1h write then a read": Scenario(
        "claude-opus-5-5", "sync", ("1h",), 3000, 200, 2, speed="fast", inference_geo="us",
        effort="high",
    ),
    "sonnet 5.5 batch in the US with a 5m write": Scenario(
        "claude-sonnet-5-5", "batch", ("5m",), 2000, 50, 3, inference_geo="us"
    ),
    "haiku 4.5 (old tokenizer), prefix over its 4096 minimum": Scenario(
        "claude-haiku-4-5", "sync", ("1h", "5m"), 4500, 20, 2
    ),
}  # fmt: skip


@settings(
    max_examples=40,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(scenarios())
@example(EXAMPLES["haiku 5.5 at 100,000 prompt tokens (base band), 5m write then reads"])
@example(
    EXAMPLES["haiku 5.5 at 100,001 prompt tokens (high band), 1h write then a read, in the US"]
)
@example(EXAMPLES["opus 5.5 fast in the US, 1h write then a read"])
def test_recorded_cost_is_the_independent_price_of_the_ledger(scenario: Scenario) -> None:
    check(scenario)


@pytest.mark.parametrize("name", list(EXAMPLES))
def test_examples_cover_bands_ttls_batch_fast_and_residency(name: str) -> None:
    """Each named case does what its name says, and the property holds for it."""
    s = EXAMPLES[name]
    priced = check(s)
    usages = [p.recorded_usage for p in priced]
    entries = [p.entry for p in priced]
    if s.prompt_tokens is not None:
        assert all(u.total_input == s.prompt_tokens for u in usages)
    if s.requests > 1 and s.ttls and s.ttls[0] is not None:
        assert usages[0].cache_write > 0 and all(u.cache_read > 0 for u in usages[1:])
    if "1h" in s.ttls:
        assert usages[0].cache_write_1h > 0
    if "5m" in s.ttls:
        assert usages[0].cache_write_5m > 0
    assert all(e["service_tier"] == ("batch" if s.mode == "batch" else "standard") for e in entries)
    assert all(e["speed"] == (s.speed or "standard") for e in entries)
    assert all(e["inference_geo"] == (s.inference_geo or "global") for e in entries)
    if s.model in ("claude-opus-5-5", "claude-haiku-5-5"):
        assert all(u.thinking > 0 for u in usages)  # these think by default


def test_the_band_edge_moves_every_category() -> None:
    """One token over 100,000 re-prices the whole request: input, cache and output ×5."""
    haiku = _info("claude-haiku-5-5")
    unbanded = haiku.model_copy(update={"bands": ()})
    base = check(EXAMPLES["haiku 5.5 at 100,000 prompt tokens (base band), 5m write then reads"])
    high = check(Scenario("claude-haiku-5-5", "sync", ("5m",), 30_000, 1, 3, prompt_tokens=100_001))
    for b, h in zip(base, high, strict=True):
        assert b.recorded == independent_price(b.entry, unbanded)
        assert h.recorded == 5 * independent_price(h.entry, unbanded)
        assert (h.recorded_usage.cache_write, h.recorded_usage.cache_read) == (
            b.recorded_usage.cache_write,
            b.recorded_usage.cache_read,
        )
        assert h.recorded_usage.input == b.recorded_usage.input + 1
