"""The budget in the store: never overspent under any concurrency, on either database.

Several threads, each with its own connection to one store (as separate processes
would have), reserve random upper bounds for requests of their own runs, then settle
each at a random actual no larger than what was reserved, or release it. Whatever the
interleaving, the money spent in the day's scope never passes the per-day limit, the
counters equal the ledger, and nothing stays reserved.
"""

from __future__ import annotations

import random
import threading
from collections.abc import Callable
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from llmflow.catalog import TokenUsage, load_catalog
from llmflow.errors import BudgetExceeded
from llmflow.tracker import Completed, LimitSpec, RunInfo, RunStore, Tracker, request_key
from llmflow.tracker.budget import Limit, first_violated, period_start
from tests.postgres import fresh_schema

D = Decimal
HAIKU = load_catalog().get("claude-haiku-4-5")


def _run(
    open_store: Callable[[], RunStore], run_id: str, amounts: list[Decimal], seed: int
) -> None:
    """One process's work: reserve each amount, then settle or release it."""
    rng = random.Random(seed)
    assert HAIKU is not None
    with open_store() as store:
        limits = [LimitSpec(D("1"), "day", key="budget.per_day_usd")]
        tracker = Tracker.open(store, run_id, RunInfo("shared", "p"), limits=limits)
        for i, amount in enumerate(amounts):
            key = request_key("s", i)
            try:
                res = tracker.dispatch(
                    "s", key, i, model=HAIKU.id, tier="haiku", mode="sync", upper_bound=amount
                )
            except BudgetExceeded:
                continue
            if rng.random() < 0.2:
                tracker.record_failure("s", key, i, error="x", reservation=res)
                continue
            # a response whose exact cost is at most the reservation (input tokens priced
            # below the bound): the settle moves less than was reserved
            tokens = int(amount * rng.randint(0, 100) / 100 / D("0.000001"))
            done = Completed("s", key, i, HAIKU, "haiku", "sync", TokenUsage(input=tokens), res)
            tracker.record_batch([done])
        tracker.finish("succeeded")


@pytest.mark.parametrize("database", ["sqlite", "postgresql"])
@settings(max_examples=6, deadline=None, suppress_health_check=list(HealthCheck))
@given(
    work=st.lists(
        st.lists(st.decimals(min_value=D("0.01"), max_value=D("0.3"), places=4), max_size=12),
        min_size=2,
        max_size=4,
    ),
    seed=st.integers(0, 2**16),
)
def test_threads_with_their_own_connections_never_overspend(
    database: str, work: list[list[Decimal]], seed: int, tmp_path_factory: pytest.TempPathFactory
) -> None:
    state = tmp_path_factory.mktemp("state")
    with fresh_schema() if database == "postgresql" else _nothing() as url:
        where: Path | str = url or state

        def open_store() -> RunStore:
            return RunStore.open(where, runs_dir=state)

        threads = [
            threading.Thread(target=_run, args=(open_store, f"r{n}", amounts, seed + n))
            for n, amounts in enumerate(work)
        ]
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
        with open_store() as store:
            day = store.day()
            spent, reserved, unrecorded = store.read_counter(f"day/{day}/pipeline/shared")
            ledger = sum((store.run_spent(f"r{n}") for n in range(len(work))), D(0))
        assert spent + unrecorded <= D("1")
        assert spent == ledger and reserved == 0 and unrecorded == 0


class _nothing:
    def __enter__(self) -> None:
        return None

    def __exit__(self, *exc: object) -> None:
        return None


def test_the_rule_is_inclusive_and_names_the_first_limit_passed() -> None:
    run, day = Limit("run", D("1"), D("0.5")), Limit("day", D("2"), D("1.9"))
    assert first_violated([(run, D("0.5")), (day, D("0.1"))]) is None  # exactly at the limit
    assert first_violated([(run, D("0.6")), (day, D("0.2"))]) is run
    assert first_violated([(run, D("0.1")), (day, D("0.2"))]) is day


def test_period_start() -> None:
    moment = datetime(2026, 11, 30, 15, 4, tzinfo=UTC)
    assert period_start("day", moment) == datetime(2026, 11, 30, tzinfo=UTC)
    assert period_start("month", moment) == datetime(2026, 11, 1, tzinfo=UTC)
