"""The cost formula, checked by hand and by properties."""

from __future__ import annotations

from decimal import Decimal

from hypothesis import given
from hypothesis import strategies as st

from llmflow.catalog import TokenUsage, cost, format_usd, load_catalog

CATALOG = load_catalog()
HAIKU = CATALOG.models["claude-haiku-4-5"]
SONNET = CATALOG.models["claude-sonnet-4-6"]


def test_hand_computed_sync_cost() -> None:
    # 1,000 uncached in at $3/M, 4,000 written 5m at 1.25x, 2,000 written 1h at 2x,
    # 10,000 read at 0.1x, 500 out at $15/M.
    usage = TokenUsage(
        input=1000, cache_write_5m=4000, cache_write_1h=2000, cache_read=10000, output=500
    )
    expected = (
        Decimal("0.003")
        + Decimal("0.015")
        + Decimal("0.012")
        + Decimal("0.003")
        + Decimal("0.0075")
    )
    assert cost(usage, SONNET) == expected == Decimal("0.0405")


def test_batch_halves_every_category_including_cache() -> None:
    usage = TokenUsage(input=7, cache_write_5m=11, cache_write_1h=13, cache_read=17, output=19)
    assert cost(usage, HAIKU, batch=True) * 2 == cost(usage, HAIKU)


def test_snapshot_ids_resolve_to_their_alias() -> None:
    assert CATALOG.get("claude-haiku-4-5-20251001") == HAIKU
    assert CATALOG.get("claude-haiku-9") is None


def test_override_replaces_prices() -> None:
    cheap = SONNET.overridden({"input_usd_per_mtok": Decimal("2"), "output_usd_per_mtok": None})
    assert cheap.input_usd_per_mtok == 2 and cheap.output_usd_per_mtok == 15


def test_catalog_facts_match_the_design() -> None:
    mins = {m.id: m.min_cacheable_tokens for m in CATALOG.models.values()}
    assert mins["claude-haiku-4-5"] == 4096 and mins["claude-sonnet-4-6"] == 2048
    assert mins["claude-sonnet-4-5"] == 1024 and mins["claude-opus-4-1"] == 1024
    assert CATALOG.models["claude-opus-4-1"].output_usd_per_mtok == 75
    assert CATALOG.prices_read_on


def test_format_usd_has_no_exponent() -> None:
    assert format_usd(Decimal("1E-7")) == "0.0000001"
    assert format_usd(Decimal("3.50")) == "3.5"
    assert format_usd(Decimal("0")) == "0"


counts = st.integers(min_value=0, max_value=10**9)


@given(counts, counts, counts, counts, counts)
def test_cost_is_additive_and_exact(i: int, w5: int, w1: int, r: int, o: int) -> None:
    usage = TokenUsage(input=i, cache_write_5m=w5, cache_write_1h=w1, cache_read=r, output=o)
    parts = [
        TokenUsage(input=i),
        TokenUsage(cache_write_5m=w5),
        TokenUsage(cache_write_1h=w1),
        TokenUsage(cache_read=r),
        TokenUsage(output=o),
    ]
    assert cost(usage, SONNET) == sum((cost(p, SONNET) for p in parts), Decimal(0))
    assert cost(usage, SONNET, batch=True) * 2 == cost(usage, SONNET)
    assert cost(usage.scaled(3), HAIKU) == 3 * cost(usage, HAIKU)
