"""The budget ledger: reserve before dispatch, settle on response, release on failure.

Budget rule: before a request is sent its upper-bound cost is reserved; a
reservation that would make ``prior + spent + reserved + amount`` exceed any limit is
refused with :class:`~llmflow.errors.BudgetExceeded` and nothing is reserved. Because
the check and the reservation happen under one lock, and money only ever moves from
reserved to spent in amounts no larger than what was reserved, no interleaving of
threads or asyncio tasks can spend past a limit.

A :class:`Budget` holds one or more :class:`Limit` (the run's own, and day or month
limits whose ``prior`` is what other runs already spent in the period). Usage
counters live elsewhere (:mod:`llmflow.tracker.progress`, the run store): the ledger
knows only money.
"""

from __future__ import annotations

import itertools
import threading
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal
from typing import Literal

import structlog

from llmflow.catalog import ZERO, format_usd
from llmflow.errors import BudgetExceeded

_log = structlog.get_logger("llmflow.tracker.budget")

Period = Literal["day", "month"]


def period_start(period: Period, now: datetime | None = None) -> datetime:
    """Start (UTC) of the calendar day or month containing ``now`` (default: now)."""
    moment = (now or datetime.now(UTC)).astimezone(UTC)
    day = moment.replace(hour=0, minute=0, second=0, microsecond=0)
    return day if period == "day" else day.replace(day=1)


def _tidy(amount: Decimal) -> Decimal:
    """The same amount without trailing zeros, for messages (``0.0005``, not ``0.00050000``)."""
    return Decimal(format_usd(amount))


@dataclass(frozen=True, slots=True)
class Limit:
    """One spend limit in USD.

    ``prior`` is money already spent (or committed) against this limit before the
    ledger was created: earlier sessions of a resumed run, other runs of the day.
    """

    name: str
    amount: Decimal
    prior: Decimal = ZERO

    def __post_init__(self) -> None:
        if self.amount <= 0:
            raise ValueError(f"limit {self.name!r} must be positive, got {self.amount}")
        if self.prior < 0:
            raise ValueError(f"limit {self.name!r}: prior spend cannot be negative")


def first_violated(checks: Iterable[tuple[Limit, Decimal]]) -> Limit | None:
    """The budget rule, in one place: the first limit that ``prior + extra`` would pass.

    Each check is a limit and the money to add to its ``prior`` (spent, reserved and
    unrecorded in the limit's scope); a total equal to the limit still fits.
    """
    for limit, extra in checks:
        if limit.prior + extra > limit.amount:
            return limit
    return None


@dataclass(frozen=True, slots=True)
class Reservation:
    """Money set aside for one request until it is settled or released."""

    id: int
    amount: Decimal
    label: str
    day: str | None = None  # the UTC day whose store budget counters hold it


class SessionLedger:
    """What this process holds in flight and settled in this session.

    The limits are checked in the run store (:mod:`llmflow.tracker.store_budget`); this
    is the process's own view, for waiting on its reservations and for progress lines.
    It keeps counts and sums only, so a million batch requests in flight cost nothing.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._open = 0
        self._reserved = ZERO
        self._spent = ZERO

    @property
    def open_reservations(self) -> int:
        return self._open

    @property
    def reserved(self) -> Decimal:
        return self._reserved

    @property
    def spent(self) -> Decimal:
        return self._spent

    def hold(self, reservation: Reservation) -> Reservation:
        """Count a reservation the store accepted."""
        with self._lock:
            self._open += 1
            self._reserved += reservation.amount
        return reservation

    def release(self, reservation: Reservation) -> None:
        """A held reservation was given back unspent."""
        with self._lock:
            self._open -= 1
            self._reserved -= reservation.amount

    def settle(self, reservation: Reservation, actual: Decimal) -> None:
        """A held reservation became ``actual`` spend."""
        with self._lock:
            self._open -= 1
            self._reserved -= reservation.amount
            self._spent += actual

    def charge(self, actual: Decimal) -> None:
        """Spend that had no reservation of this session."""
        with self._lock:
            self._spent += actual


@dataclass(frozen=True, slots=True)
class BudgetAlert:
    """Spend against ``limit_name`` crossed ``threshold`` (= alert_at × limit)."""

    limit_name: str
    limit: Decimal
    threshold: Decimal
    spent: Decimal
    at: datetime

    @property
    def message(self) -> str:
        """One human line, as the summary and the console show it."""
        return (
            f"{self.limit_name} budget: spent ${format_usd(self.spent)} crossed the alert"
            f" threshold ${format_usd(self.threshold)} of ${format_usd(self.limit)}"
        )


@dataclass(slots=True)
class _LimitState:
    limit: Limit
    alerted: bool = False
    alert: BudgetAlert | None = field(default=None)


class Budget:
    """Thread- and asyncio-safe ledger of spent and reserved money against limits.

    With no limits it still tracks money (every reservation succeeds). ``alert_at``
    (a fraction of each limit) fires one :class:`BudgetAlert` per limit, logged as the
    warning event ``budget.alert``; ``already_alerted`` names limits whose alert fired
    in an earlier session of the run, so it does not fire twice. ``on_alert`` is
    called (outside the lock) for every new alert, e.g. to persist it.
    """

    def __init__(
        self,
        limits: Iterable[Limit] = (),
        *,
        alert_at: Decimal | None = None,
        already_alerted: Iterable[str] = (),
        on_alert: Callable[[BudgetAlert], None] | None = None,
        clock: Callable[[], datetime] | None = None,
    ) -> None:
        self._limits = [_LimitState(limit) for limit in limits]
        names = [s.limit.name for s in self._limits]
        if len(set(names)) != len(names):
            raise ValueError(f"duplicate limit names: {names}")
        if alert_at is not None and not ZERO < alert_at <= 1:
            raise ValueError(f"alert_at must be in (0, 1], got {alert_at}")
        done = set(already_alerted)
        for state in self._limits:
            state.alerted = state.limit.name in done
        self._alert_at = alert_at
        self._on_alert = on_alert
        self._clock = clock or (lambda: datetime.now(UTC))
        self._lock = threading.Lock()
        self._ids = itertools.count(1)
        self._open: dict[int, Reservation] = {}
        self._spent = ZERO
        self._reserved = ZERO
        self._settled_count = 0

    # -- queries ---------------------------------------------------------------

    @property
    def limits(self) -> tuple[Limit, ...]:
        return tuple(s.limit for s in self._limits)

    @property
    def spent(self) -> Decimal:
        """Money settled by this ledger (not counting any limit's ``prior``)."""
        with self._lock:
            return self._spent

    @property
    def reserved(self) -> Decimal:
        """Money currently reserved for requests in flight."""
        with self._lock:
            return self._reserved

    def snapshot(self) -> tuple[Decimal, Decimal]:
        """``(spent, reserved)`` read together, consistent with each other."""
        with self._lock:
            return self._spent, self._reserved

    @property
    def open_reservations(self) -> int:
        with self._lock:
            return len(self._open)

    def headroom(self) -> Decimal | None:
        """The largest amount a reservation could take now; None without limits."""
        with self._lock:
            if not self._limits:
                return None
            return max(
                ZERO,
                min(
                    s.limit.amount - s.limit.prior - self._spent - self._reserved
                    for s in self._limits
                ),
            )

    def alerts(self) -> list[BudgetAlert]:
        """Alerts fired by this ledger, in firing order of the limits."""
        with self._lock:
            return [s.alert for s in self._limits if s.alert is not None]

    # -- reserve / settle / release -----------------------------------------------

    def reserve(
        self, amount: Decimal, *, label: str, force: bool = False, day: str | None = None
    ) -> Reservation:
        """Set ``amount`` aside, or raise :class:`BudgetExceeded` reserving nothing.

        ``force`` reserves even past a limit: only for money that is already
        committed, such as the requests of a batch submitted before a resume.
        """
        return self.reserve_many([amount], label=label, force=force, day=day)[0]

    def reserve_many(
        self,
        amounts: Sequence[Decimal],
        *,
        label: str,
        force: bool = False,
        day: str | None = None,
    ) -> list[Reservation]:
        """Reserve every amount or none (a whole batch reserves all its requests)."""
        if any(a < 0 for a in amounts):
            raise ValueError("a reservation cannot be negative")
        total = sum(amounts, ZERO)
        with self._lock:
            over = None if force else self._violated(total)
            if over is None:
                made = [Reservation(next(self._ids), a, label, day) for a in amounts]
                for r in made:
                    self._open[r.id] = r
                self._reserved += total
                return made
            spent, reserved = over.prior + self._spent, self._reserved
        _log.info(
            "budget.refused",
            limit_name=over.name,
            limit=format_usd(over.amount),
            spent=format_usd(spent),
            reserved=format_usd(reserved),
            needed=format_usd(total),
            label=label,
        )
        raise BudgetExceeded(_tidy(over.amount), _tidy(spent), _tidy(reserved), _tidy(total))

    def settle(self, reservation: Reservation, actual: Decimal) -> list[BudgetAlert]:
        """Move a reservation to spent at its ``actual`` cost; returns alerts it fired.

        An actual above the reservation is recorded anyway (the money is spent) and
        logged as the error event ``budget.upper_bound_exceeded``: an upper bound was
        wrong. Settling or releasing a reservation twice raises ``ValueError``.
        """
        if actual < 0:
            raise ValueError("an actual cost cannot be negative")
        with self._lock:
            self._take(reservation)
            self._spent += actual
            self._settled_count += 1
            fired = self._check_alerts()
        if actual > reservation.amount:
            _log.error(
                "budget.upper_bound_exceeded",
                label=reservation.label,
                reserved=format_usd(reservation.amount),
                actual=format_usd(actual),
            )
        self._emit(fired)
        return fired

    def charge(self, actual: Decimal, *, label: str) -> list[BudgetAlert]:
        """Record spend that had no reservation (it happened; it cannot be refused)."""
        return self.settle(self.reserve(actual, label=label, force=True), actual)

    def release(self, reservation: Reservation) -> None:
        """Give a reservation back unspent (the request failed and was not billed)."""
        with self._lock:
            self._take(reservation)

    def _violated(self, extra: Decimal) -> Limit | None:
        held = self._spent + self._reserved + extra
        return first_violated((state.limit, held) for state in self._limits)

    def _take(self, reservation: Reservation) -> None:
        held = self._open.pop(reservation.id, None)
        if held is None or held != reservation:
            if held is not None:
                self._open[held.id] = held
            raise ValueError(
                f"reservation {reservation.id} ({reservation.label}) is not open:"
                " settled or released twice, or from another ledger"
            )
        self._reserved -= reservation.amount

    def _check_alerts(self) -> list[BudgetAlert]:
        if self._alert_at is None:
            return []
        fired: list[BudgetAlert] = []
        for state in self._limits:
            if state.alerted:
                continue
            lim = state.limit
            threshold = lim.amount * self._alert_at
            spent = lim.prior + self._spent
            if spent >= threshold:
                state.alerted = True
                state.alert = BudgetAlert(lim.name, lim.amount, threshold, spent, self._clock())
                fired.append(state.alert)
        return fired

    def _emit(self, fired: list[BudgetAlert]) -> None:
        for alert in fired:
            _log.warning(
                "budget.alert",
                limit_name=alert.limit_name,
                limit=format_usd(alert.limit),
                threshold=format_usd(alert.threshold),
                spent=format_usd(alert.spent),
            )
            if self._on_alert is not None:
                self._on_alert(alert)
