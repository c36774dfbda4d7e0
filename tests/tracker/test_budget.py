"""The budget ledger: never overspent under concurrency, exact sums, alerts once."""

from __future__ import annotations

import asyncio
import random
import threading
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from structlog.testing import capture_logs

from llmflow.errors import BudgetExceeded
from llmflow.tracker.budget import Budget, BudgetAlert, Limit, Reservation, period_start

D = Decimal


@dataclass(frozen=True)
class Op:
    amount: Decimal
    percent: int  # actual = amount * percent / 100; -1 means release
    delay: int  # asyncio yields / thread sleeps between reserve and settle


ops = st.builds(
    Op,
    amount=st.decimals(min_value=0, max_value=D("0.5"), places=6),
    percent=st.integers(min_value=-1, max_value=100),
    delay=st.integers(min_value=0, max_value=3),
)


class Checker:
    """Runs ops against a budget and records what was settled."""

    def __init__(self, budget: Budget, cap: Decimal) -> None:
        self.budget, self.cap = budget, cap
        self.settled: list[Decimal] = []
        self.violations: list[tuple[Decimal, Decimal]] = []
        self._lock = threading.Lock()

    def check(self) -> None:
        spent, reserved = self.budget.snapshot()
        if spent + reserved > self.cap:
            self.violations.append((spent, reserved))

    def reserve(self, op: Op) -> tuple[Reservation, Decimal] | None:
        try:
            res = self.budget.reserve(op.amount, label="t")
        except BudgetExceeded:
            return None
        self.check()
        actual = op.amount * op.percent / 100 if op.percent >= 0 else D(-1)
        return res, actual

    def finish(self, res: Reservation, actual: Decimal) -> None:
        if actual < 0:
            self.budget.release(res)
        else:
            self.budget.settle(res, actual)
            with self._lock:
                self.settled.append(actual)
        self.check()

    async def run_async(self, op: Op) -> None:
        got = self.reserve(op)
        for _ in range(op.delay):
            await asyncio.sleep(0)
        if got is not None:
            self.finish(*got)

    def run_sync(self, op: Op) -> None:
        got = self.reserve(op)
        if op.delay:
            threading.Event().wait(op.delay / 10_000)
        if got is not None:
            self.finish(*got)


limits = st.lists(
    st.tuples(
        st.decimals(min_value=D("0.01"), max_value=5, places=4),
        st.decimals(min_value=0, max_value=1, places=4),
    ),
    min_size=1,
    max_size=3,
)


def _budget(spec: list[tuple[Decimal, Decimal]]) -> tuple[Budget, Decimal]:
    built = [Limit(f"l{i}", amount, min(prior, amount)) for i, (amount, prior) in enumerate(spec)]
    cap = min(lim.amount - lim.prior for lim in built)
    return Budget(built, alert_at=D("0.8")), cap


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(spec=limits, work=st.lists(st.lists(ops, max_size=25), min_size=1, max_size=6))
def test_threads_and_tasks_never_overspend(
    spec: list[tuple[Decimal, Decimal]], work: list[list[Op]]
) -> None:
    budget, cap = _budget(spec)
    checker = Checker(budget, cap)
    half = len(work) // 2

    def worker(lst: list[Op]) -> None:
        for op in lst:
            checker.run_sync(op)

    threads = [threading.Thread(target=worker, args=(lst,)) for lst in work[:half]]

    async def tasks() -> None:
        await asyncio.gather(*(checker.run_async(op) for lst in work[half:] for op in lst))

    for t in threads:
        t.start()
    asyncio.run(tasks())
    for t in threads:
        t.join()
    assert checker.violations == []
    assert budget.reserved == 0
    assert budget.open_reservations == 0
    assert budget.spent == sum(checker.settled, D(0))  # exact, Decimal
    assert budget.spent <= cap


@settings(max_examples=40, deadline=None)
@given(
    spec=limits,
    seq=st.lists(st.tuples(ops, st.booleans()), max_size=60),
    seed=st.integers(0, 2**16),
)
def test_random_interleaving_single_thread(
    spec: list[tuple[Decimal, Decimal]], seq: list[tuple[Op, bool]], seed: int
) -> None:
    """Open many reservations, finish them in random order: same invariants."""
    budget, cap = _budget(spec)
    checker = Checker(budget, cap)
    rng = random.Random(seed)
    pending: list[tuple[Reservation, Decimal]] = []
    for op, finish_one in seq:
        got = checker.reserve(op)
        if got is not None:
            pending.append(got)
        if finish_one and pending:
            checker.finish(*pending.pop(rng.randrange(len(pending))))
    rng.shuffle(pending)
    for got in pending:
        checker.finish(*got)
    assert checker.violations == []
    assert budget.spent == sum(checker.settled, D(0))
    assert budget.spent + budget.reserved <= cap


def test_refused_reservation_reserves_nothing() -> None:
    budget = Budget([Limit("run", D("1")), Limit("day", D("10"), prior=D("9.5"))])
    budget.reserve(D("0.3"), label="a")
    with pytest.raises(BudgetExceeded) as info:
        budget.reserve(D("0.3"), label="b")
    assert info.value.limit == D("10")
    assert info.value.spent == D("9.5")
    assert info.value.reserved == D("0.3")
    assert budget.reserved == D("0.3")
    assert budget.headroom() == D("0.2")


def test_reserve_many_is_all_or_nothing() -> None:
    budget = Budget([Limit("run", D("1"))])
    with pytest.raises(BudgetExceeded):
        budget.reserve_many([D("0.4"), D("0.4"), D("0.4")], label="batch")
    assert budget.reserved == 0
    made = budget.reserve_many([D("0.5"), D("0.5")], label="batch")
    assert len(made) == 2
    assert budget.reserved == 1
    forced = budget.reserve(D("2"), label="resumed", force=True)
    assert budget.reserved == 3
    budget.release(forced)


def test_exactly_at_the_limit_is_allowed() -> None:
    budget = Budget([Limit("run", D("1"))])
    res = budget.reserve(D("1"), label="x")
    budget.settle(res, D("1"))
    with pytest.raises(BudgetExceeded):
        budget.reserve(D("0.000001"), label="y")
    budget.release(budget.reserve(D(0), label="free"))


def test_double_settle_or_release_raises() -> None:
    budget = Budget([Limit("run", D("1"))])
    res = budget.reserve(D("0.1"), label="x")
    budget.settle(res, D("0.05"))
    with pytest.raises(ValueError, match="not open"):
        budget.settle(res, D("0.05"))
    with pytest.raises(ValueError, match="not open"):
        budget.release(res)
    other = Budget().reserve(D("0.1"), label="elsewhere")
    with pytest.raises(ValueError):
        budget.release(other)
    assert budget.spent == D("0.05")


def test_actual_above_reservation_is_recorded_and_logged() -> None:
    budget = Budget([Limit("run", D("1"))])
    res = budget.reserve(D("0.1"), label="x")
    with capture_logs() as logs:
        budget.settle(res, D("0.15"))
    assert budget.spent == D("0.15")
    assert [e["event"] for e in logs] == ["budget.upper_bound_exceeded"]
    assert logs[0]["log_level"] == "error"


def test_alert_fires_exactly_once_per_limit() -> None:
    seen: list[BudgetAlert] = []
    budget = Budget(
        [Limit("run", D("10")), Limit("day", D("100"), prior=D("85"))],
        alert_at=D("0.8"),
        on_alert=seen.append,
    )
    with capture_logs() as logs:
        for _ in range(20):
            budget.settle(budget.reserve(D("0.5"), label="x"), D("0.5"))
    alerts = [e for e in logs if e["event"] == "budget.alert"]
    # day: 85 prior already past 80 → fires on the first settle; run: at 8.0 of 10
    assert [(a["limit_name"], a["spent"]) for a in alerts] == [("day", "85.5"), ("run", "8")]
    assert all(a["log_level"] == "warning" for a in alerts)
    assert [a.limit_name for a in seen] == ["day", "run"]
    assert [a.limit_name for a in budget.alerts()] == ["run", "day"]
    assert budget.alerts()[0].threshold == D("8")


def test_alert_not_repeated_when_already_alerted() -> None:
    budget = Budget(
        [Limit("run", D("1"), prior=D("0.9"))], alert_at=D("0.5"), already_alerted=["run"]
    )
    with capture_logs() as logs:
        budget.charge(D("0.05"), label="x")
    assert not [e for e in logs if e["event"] == "budget.alert"]


def test_no_limits_tracks_money() -> None:
    budget = Budget()
    budget.settle(budget.reserve(D("1000"), label="x"), D("3"))
    assert budget.spent == 3
    assert budget.headroom() is None


def test_period_start() -> None:
    now = datetime(2026, 3, 17, 15, 4, 5, tzinfo=UTC)
    assert period_start("day", now) == datetime(2026, 3, 17, tzinfo=UTC)
    assert period_start("month", now) == datetime(2026, 3, 1, tzinfo=UTC)
