"""Cost arithmetic: hand-computed cases, batch halving, max ≥ expected."""

from __future__ import annotations

from decimal import Decimal

from hypothesis import given
from hypothesis import strategies as st

from llmflow.catalog import TokenUsage, cost, load_catalog
from llmflow.planner.cache import CacheQuestion, choose_cache, uncached, with_ttl
from llmflow.planner.costing import max_cost, request_max_cost, savings_pct
from llmflow.planner.requests import CacheMarks, build_params
from llmflow.planner.tokens import params_size

HAIKU = load_catalog().models["claude-haiku-4-5"]
SONNET = load_catalog().models["claude-sonnet-4-6"]
MODELS = list(load_catalog().models.values())

usages = st.builds(
    TokenUsage,
    input=st.integers(0, 10**7),
    cache_write_5m=st.integers(0, 10**7),
    cache_write_1h=st.integers(0, 10**7),
    cache_read=st.integers(0, 10**7),
    output=st.integers(0, 10**6),
)


def test_hand_computed_mixed_usage() -> None:
    usage = TokenUsage(
        input=1000, cache_write_5m=2000, cache_write_1h=3000, cache_read=4000, output=500
    )
    # haiku: p = 1e-6, q = 5e-6: 1000 + 2500 + 6000 + 400 + 2500 = 12400 µ$
    assert cost(usage, HAIKU) == Decimal("0.0124")
    assert cost(usage, HAIKU, batch=True) == Decimal("0.0062")


@given(usages, st.sampled_from(MODELS))
def test_batch_is_exactly_half_of_sync(usage: TokenUsage, model: object) -> None:
    assert cost(usage, model, batch=True) * 2 == cost(usage, model)  # type: ignore[arg-type]


@given(
    st.integers(1, 5000),
    st.integers(0, 50_000),
    st.integers(0, 5000),
    st.integers(1, 4096),
    st.sampled_from(MODELS),
    st.booleans(),
    st.sampled_from([None, "5m", "1h"]),
    st.decimals(0, 1, places=2),
    st.floats(0, 4000),
)
def test_max_is_at_least_expected(
    n: int,
    prefix: int,
    rest: int,
    max_tokens: int,
    model: object,
    batch: bool,
    ttl: str | None,
    hit: Decimal,
    gap: float,
) -> None:
    """Expected tokens never exceed bounds, so expected cost never exceeds max."""
    q = CacheQuestion(
        "batch" if batch else "sync", n, prefix, 0, batch_hit_rate=hit, gap_seconds=gap
    )
    choice = uncached(q) if ttl is None else with_ttl(q, ttl)  # type: ignore[arg-type]
    expected_out = max_tokens // 2
    usage = choice.usage() + TokenUsage(input=rest * n, output=n * expected_out)
    expected = cost(usage, model, batch=batch)  # type: ignore[arg-type]
    bound = max_cost(
        requests=n,
        prefix_bound=prefix,
        rest_bound=rest * n,
        max_tokens=max_tokens,
        model=model,  # type: ignore[arg-type]
        batch=batch,
        ttls=() if ttl is None else (ttl,),  # type: ignore[arg-type]
    )
    assert expected <= bound


def test_max_cost_every_request_writes_hand_computed() -> None:
    # 3 requests, 1000-token prefix bound written at 1h (2x), 100 rest each, 50 out max.
    amount = max_cost(
        requests=3,
        prefix_bound=1000,
        rest_bound=300,
        max_tokens=50,
        model=HAIKU,
        batch=False,
        ttls=("1h",),
    )
    assert amount == Decimal("0.00705")  # 6000 + 300 µ$ input side, 150 out × 5 µ$
    assert max_cost(
        requests=3,
        prefix_bound=1000,
        rest_bound=300,
        max_tokens=50,
        model=HAIKU,
        batch=True,
        ttls=("1h",),
    ) == Decimal("0.003525")


def test_max_cost_takes_dearest_category_when_prices_are_overridden() -> None:
    cheap_writes = HAIKU.overridden({"cache_write_5m_multiplier": Decimal("0.5")})
    amount = max_cost(
        requests=1,
        prefix_bound=1000,
        rest_bound=0,
        max_tokens=1,
        model=cheap_writes,
        batch=False,
        ttls=("5m",),
    )
    assert amount == Decimal("0.001005")  # the prefix may go uncached: 1000 at 1x


def test_request_max_cost_matches_bound_of_built_request() -> None:
    params = build_params(
        model=HAIKU.id,
        max_tokens=10,
        system=["a" * 100, "b" * 50],
        prompt="hi",
        cache=CacheMarks("5m", system=(0,)),
    )
    total = params_size(params).bound  # 64 + 108 + 58 + 8 + 8 + 2
    assert total == 248
    # prefix 108 written at 1.25, rest 140 at 1, output 10 at 5
    assert request_max_cost(params, HAIKU, batch=False) == Decimal("0.000325")


def test_savings_pct() -> None:
    assert savings_pct(Decimal("4"), Decimal("1")) == Decimal("75.0")
    assert savings_pct(Decimal("0"), Decimal("0")) == Decimal("0")
    assert savings_pct(Decimal("3"), Decimal("1")) == Decimal("66.7")


@given(
    st.integers(0, 10_000),
    st.integers(0, 200_000),
    st.sampled_from(MODELS),
    st.sampled_from(["sync", "batch"]),
    st.sampled_from(["auto", "5m", "1h"]),
    st.decimals(0, 1, places=2),
    st.floats(0, 5000),
    st.integers(0, 200_000),
)
def test_chosen_cache_never_costs_more_than_none(
    n: int,
    prefix: int,
    model: object,
    mode: str,
    ttl: str,
    hit: Decimal,
    gap: float,
    shared: int,
) -> None:
    q = CacheQuestion(
        mode,
        n,
        prefix,
        0,
        ttl_policy=ttl,
        batch_hit_rate=hit,  # type: ignore[arg-type]
        gap_seconds=gap,
        shared_read=shared,
    )
    choice = choose_cache(q, model)  # type: ignore[arg-type]
    batch = mode == "batch"
    chosen = cost(choice.usage(), model, batch=batch)  # type: ignore[arg-type]
    assert chosen <= cost(uncached(q).usage(), model, batch=batch)  # type: ignore[arg-type]
    # every prefix token is accounted once per request
    total = choice.usage().total_input
    assert total == n * prefix or (choice.enabled and total == n * prefix)


def test_sonnet_baseline_prices() -> None:
    assert cost(TokenUsage(input=1_000_000, output=1_000_000), SONNET) == Decimal("18")
