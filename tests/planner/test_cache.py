"""Cache decisions: break-even edges, minimum length, batch hit rate, TTL by timing."""

from __future__ import annotations

from decimal import Decimal

import pytest

from llmflow.catalog import load_catalog
from llmflow.planner.cache import CacheQuestion, choose_cache

HAIKU = load_catalog().models["claude-haiku-4-5"]


def ask(n: int, *, ttl: str = "auto", mode: str = "sync", **kw: object) -> CacheQuestion:
    return CacheQuestion(mode, n, 10_000, 4096, ttl_policy=ttl, **kw)  # type: ignore[arg-type]


@pytest.mark.parametrize(("n", "cached"), [(1, False), (2, True)])
def test_5m_pays_from_two_requests(n: int, cached: bool) -> None:
    choice = choose_cache(ask(n, ttl="5m"), HAIKU)
    assert choice.enabled is cached
    if cached:
        assert (choice.ttl, choice.writes, choice.reads) == ("5m", 1, 1)


@pytest.mark.parametrize(("n", "cached"), [(2, False), (3, True)])
def test_1h_pays_from_three_requests(n: int, cached: bool) -> None:
    choice = choose_cache(ask(n, ttl="1h"), HAIKU)
    assert choice.enabled is cached
    assert "does not pay" in choice.notes[0] or cached


def test_auto_prefers_5m_for_a_quick_fan_out() -> None:
    assert choose_cache(ask(50), HAIKU).ttl == "5m"


def test_long_gaps_between_requests_want_1h() -> None:
    choice = choose_cache(ask(50, gap_seconds=600.0), HAIKU)
    assert choice.ttl == "1h"
    assert (choice.writes, choice.reads) == (1, 49)


def test_below_minimum_is_not_cached() -> None:
    q = CacheQuestion("sync", 100, 4000, 4096)
    choice = choose_cache(q, HAIKU)
    assert not choice.enabled
    assert "minimum cacheable 4096" in choice.notes[0]


def test_disabled_by_policy() -> None:
    choice = choose_cache(ask(100, enabled=False), HAIKU)
    assert not choice.enabled and "disabled" in choice.notes[0]


def test_batch_uses_hit_rate() -> None:
    choice = choose_cache(ask(10, mode="batch", batch_hit_rate=Decimal("0.5")), HAIKU)
    assert (choice.ttl, choice.writes, choice.reads) == ("5m", 5, 5)
    assert choice.write_tokens == 50_000 and choice.read_tokens == 50_000


def test_batch_1h_pays_only_with_a_high_hit_rate() -> None:
    assert not choose_cache(ask(10, ttl="1h", mode="batch"), HAIKU).enabled
    high = choose_cache(ask(10, ttl="1h", mode="batch", batch_hit_rate=Decimal("0.9")), HAIKU)
    assert (high.ttl, high.writes, high.reads) == ("1h", 1, 9)


def test_shared_prefix_from_an_earlier_step_is_read() -> None:
    choice = choose_cache(ask(1, shared_read=6000), HAIKU)
    assert choice.enabled
    assert (choice.read_tokens, choice.write_tokens) == (6000, 4000)
