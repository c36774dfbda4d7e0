"""Responses priced by the 2026 rules (band, fast mode, residency, batch), hand-computed."""

from __future__ import annotations

from collections.abc import Callable
from decimal import Decimal

import pytest

from llmflow.catalog import ModelInfo, TokenUsage, load_catalog
from llmflow.tracker import Completed, RunInfo, RunStore, Tracker, request_key, response_cost
from llmflow.tracker.summary import baseline_cost

D = Decimal
MakeInfo = Callable[..., RunInfo]


def _model(model_id: str) -> ModelInfo:
    found = load_catalog().get(model_id)
    assert found is not None
    return found


# (model, mode, service_tier, speed, inference_geo, usage, expected USD), by hand:
CASES = [
    # haiku 5.5, prompt 60,000 + 40,001 read = 100,001 > 100K: every category at 0.50/2.50
    #   60000·0.50 + 40001·0.05 + 1000·2.50 = 30000 + 2000.05 + 2500 = 34500.05 per M
    ("claude-haiku-5-5", "sync", "standard", None, None,
     TokenUsage(input=60_000, cache_read=40_001, output=1000, thinking=600), D("0.03450005")),
    # the same with a prompt of exactly 100,000: the base band 0.10/0.50
    #   60000·0.10 + 40000·0.01 + 1000·0.50 = 6000 + 400 + 500 = 6900 per M
    ("claude-haiku-5-5", "sync", "standard", None, None,
     TokenUsage(input=60_000, cache_read=40_000, output=1000, thinking=600), D("0.0069")),
    # haiku 5.5 over the band with 5m and 1h writes: 50001·0.50 + 30000·0.625 + 20000·1.00
    #   + 10·2.50 = 25000.5 + 18750 + 20000 + 25 = 63775.5 per M
    ("claude-haiku-5-5", "sync", "standard", None, None,
     TokenUsage(input=50_001, cache_write_5m=30_000, cache_write_1h=20_000, output=10),
     D("0.0637755")),
    # opus 5.5 fast: 8/40, 1h write 2×8: 1000·8 + 2000·16 + 500·40 = 60000 per M
    ("claude-opus-5-5", "sync", "standard", "fast", None,
     TokenUsage(input=1000, cache_write_1h=2000, output=500, thinking=400), D("0.06")),
    # ... in the US: × 1.1
    ("claude-opus-5-5", "sync", "standard", "fast", "us",
     TokenUsage(input=1000, cache_write_1h=2000, output=500, thinking=400), D("0.066")),
    # opus 5.5 standard speed, "global" is no residency: 1000·4 + 2000·8 + 500·20 = 30000
    ("claude-opus-5-5", "sync", "standard", "standard", "global",
     TokenUsage(input=1000, cache_write_1h=2000, output=500), D("0.03")),
    # sonnet 5.5 batch in the US: (10000·2 + 4000·2.5 + 1000·10) · 1.1 · 0.5 = 22000 per M
    ("claude-sonnet-5-5", "batch", "batch", None, "us",
     TokenUsage(input=10_000, cache_write_5m=4000, output=1000), D("0.022")),
    # a response the API reports as batch-tier is billed at the batch rate
    ("claude-sonnet-5-5", "sync", "batch", None, None,
     TokenUsage(input=10_000, cache_write_5m=4000, output=1000), D("0.02")),
]  # fmt: skip


@pytest.mark.parametrize(("model_id", "mode", "tier", "speed", "geo", "usage", "expected"), CASES)
def test_recorded_cost_follows_band_speed_residency_and_batch(
    store: RunStore,
    make_info: MakeInfo,
    model_id: str,
    mode: str,
    tier: str,
    speed: str | None,
    geo: str | None,
    usage: TokenUsage,
    expected: Decimal,
) -> None:
    t = Tracker.open(store, "r1", make_info())
    model = _model(model_id)
    done = Completed(
        "classify", request_key("classify", 0), 0, model, "t", mode, usage, None,  # type: ignore[arg-type]
        service_tier=tier, speed=speed, inference_geo=geo,
    )  # fmt: skip
    assert response_cost(done) == expected
    assert t.record_batch([done]) == [expected]
    assert store.run_spent("r1") == expected
    assert t.budget.spent == expected


def test_record_response_passes_speed_and_residency_on(
    store: RunStore, make_info: MakeInfo
) -> None:
    t = Tracker.open(store, "r1", make_info())
    opus = _model("claude-opus-5-5")
    key = request_key("classify", 0)
    res = t.dispatch("classify", key, 0, model=opus.id, tier="opus", mode="sync", upper_bound=D(1))
    usage = TokenUsage(input=1000, cache_write_1h=2000, output=500, thinking=400)
    amount = t.record_response(
        "classify", key, 0, opus, "opus", "sync", usage, "req_0", "x", "end_turn", res,
        service_tier="standard", speed="fast", inference_geo="us",
    )  # fmt: skip
    assert amount == D("0.066")
    with store.db.reading() as c:
        row = c.execute(
            "SELECT output_tokens, thinking_tokens, speed, inference_geo, cost_usd FROM requests"
        ).fetchone()
        ledger = c.execute(
            "SELECT output_tokens, thinking_tokens, speed, inference_geo, cost_usd FROM usage"
        ).fetchall()
    assert (*row[:4], D(row[4])) == (500, 400, "fast", "us", D("0.066"))
    assert ledger == [row]


def test_a_billed_failure_is_priced_by_the_same_rule(store: RunStore, make_info: MakeInfo) -> None:
    t = Tracker.open(store, "r1", make_info())
    haiku = _model("claude-haiku-5-5")
    key = request_key("classify", 0)
    res = t.dispatch("classify", key, 0, model=haiku.id, tier="h", mode="sync", upper_bound=D(1))
    usage = TokenUsage(input=60_000, cache_read=40_001, output=1000, thinking=600)
    billed = Completed("classify", key, 0, haiku, "h", "sync", usage, None, inference_geo="us")
    amount = t.record_failure("classify", key, 0, error="bad json", reservation=res, billed=billed)
    assert amount == D("0.03450005") * D("1.1")
    assert store.run_spent("r1") == amount
    [totals] = [s for s in store.step_totals("r1") if s.step_id == "classify"]
    assert (totals.usage.thinking, totals.failed) == (600, 1)
    with store.db.reading() as c:
        assert c.execute("SELECT thinking_tokens, inference_geo FROM usage").fetchall() == [
            (600, "us")
        ]


def test_thinking_is_part_of_output_and_never_billed_twice(
    store: RunStore, make_info: MakeInfo
) -> None:
    sonnet = _model("claude-sonnet-5-5")
    plain = TokenUsage(input=1000, output=500)
    thought = TokenUsage(input=1000, output=500, thinking=500)
    costs = [
        response_cost(Completed("s", "k", 0, sonnet, None, "sync", u, None))
        for u in (plain, thought)
    ]
    assert costs == [D("0.007"), D("0.007")]  # 1000·2 + 500·10 per M
    # the naive baseline counts thinking once, as output, at the base band
    assert baseline_cost(thought, sonnet) == baseline_cost(plain, sonnet) == D("0.007")
    haiku = _model("claude-haiku-5-5")
    big = TokenUsage(input=60_000, cache_read=40_001, output=1000, thinking=600)
    #   100001·0.10 + 1000·0.50 = 10000.1 + 500 per M (no cache, no band: naive)
    assert baseline_cost(big, haiku) == D("0.0105001")


def test_step_totals_summary_and_groups_carry_thinking(
    store: RunStore, make_info: MakeInfo
) -> None:
    t = Tracker.open(store, "r1", make_info())
    sonnet = _model("claude-sonnet-5-5")
    done = [
        Completed(
            "classify", request_key("classify", i), i, sonnet, "s", "sync",
            TokenUsage(input=100, output=50, thinking=10 * i), None,
        )
        for i in range(4)
    ]  # fmt: skip
    t.record_batch(done)
    [group] = store.usage_groups("r1")
    assert group.usage.thinking == 60
    assert t.step_progress("classify").usage.thinking == 60
    summary = t.summary()
    assert summary.steps[0].usage.thinking == 60 and summary.total.thinking == 60
    assert summary.steps[0].usage.output == 200


def test_savings_are_undefined_without_a_baseline() -> None:
    from llmflow.tracker.summary import savings_pct

    assert savings_pct(actual=D("0.0105"), baseline=D("0.09")) == D("88.3")
    assert savings_pct(actual=D("0.2"), baseline=D("0.1")) == D("-100.0")
    assert savings_pct(actual=D(0), baseline=D(0)) is None
