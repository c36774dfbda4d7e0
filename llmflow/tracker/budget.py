"""The budget's values and its one rule; the store applies it (:mod:`.store_budget`).

Budget rule: before a request is sent its upper-bound cost is reserved; a reservation
that would make what a limit's scope holds (spent, reserved, possibly billed) plus the
amount exceed the limit is refused with :class:`~llmflow.errors.BudgetExceeded` and
nothing is reserved (:func:`first_violated`). Money only ever moves from reserved to
spent in amounts no larger than what was reserved, so no interleaving can pass a limit.

:class:`SessionLedger` is one process's view: what it holds in flight and settled.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal
from typing import Literal

from llmflow.catalog import ZERO, format_usd
from llmflow.lazy import lazy_logger

_log = lazy_logger("llmflow.tracker.budget")

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
