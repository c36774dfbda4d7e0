"""The budget's authority: money per scope in the store, checked and moved in one transaction.

Every process and machine sharing a store shares these counters. A reservation is one
check-and-update: the counters of every scope the run belongs to are locked (in scope
order, so two writers never deadlock), each limit is checked against its scope's
``spent + reserved + unrecorded``, and the reservation is added, all in the
transaction that also marks the requests in flight. Nothing is sent before that
transaction commits, so processes sharing a store can never pass a limit together.

Scopes, as ``budget_counters.scope`` keys::

    run/<run_id>
    day/<YYYY-MM-DD>/pipeline/<name>      month/<YYYY-MM>/pipeline/<name>
    day/<YYYY-MM-DD>/tag/<key>=<value>    month/<YYYY-MM>/tag/<key>=<value>

A run updates all of its scopes whatever limits its own policy sets, so a process with
a per-month team limit sees the spend of every run carrying the team's tag. Money
reserved on one UTC day stays in that day's scopes when it settles (``reserved_on``),
so a request dispatched before midnight is counted once, in the period it was checked
against. Reservations of a process that died stay ``reserved`` (they count) until the
run is resumed or its lease is taken back, which moves them to ``unrecorded``.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal
from typing import Literal

from llmflow.catalog import ZERO, format_usd
from llmflow.tracker.budget import Limit, first_violated
from llmflow.tracker.db import Cursor, Database

Period = Literal["run", "day", "month"]


def day_key(moment: datetime) -> str:
    """The UTC day of ``moment``: ``2026-11-30``."""
    return moment.strftime("%Y-%m-%d")


@dataclass(frozen=True, slots=True)
class RunScopes:
    """The budget scopes of one run: its own, and those of its pipeline and tag labels."""

    run_id: str
    pipeline: str
    tags: tuple[tuple[str, str], ...] = ()

    def scope(self, period: Period, day: str, tag: tuple[str, str] | None = None) -> str:
        """The scope key a limit of ``period`` (and ``tag``) checks on UTC day ``day``."""
        if period == "run":
            return f"run/{self.run_id}"
        when = day if period == "day" else day[:7]
        who = f"pipeline/{self.pipeline}" if tag is None else f"tag/{tag[0]}={tag[1]}"
        return f"{period}/{when}/{who}"

    def keys(self, day: str) -> list[str]:
        """Every scope the run's money on ``day`` counts in, sorted (the lock order)."""
        keys = {self.scope("run", day), self.scope("day", day), self.scope("month", day)}
        for tag in self.tags:
            keys |= {self.scope("day", day, tag), self.scope("month", day, tag)}
        return sorted(keys)


@dataclass(frozen=True, slots=True)
class StoreLimit:
    """A limit as the store checks it: amount, the scope it applies to, how to name it.

    ``key`` is what the user edits to change it (``budget.per_day_usd``, ``--budget``).
    """

    name: str
    key: str
    amount: Decimal
    period: Period
    tag: tuple[str, str] | None = None

    def scope(self, scopes: RunScopes, day: str) -> str:
        return scopes.scope(self.period, day, self.tag)


@dataclass(frozen=True, slots=True)
class Refusal:
    """Why a reservation did not fit: the limit, what its scope held, what was asked."""

    limit: StoreLimit
    spent: Decimal
    reserved: Decimal
    unrecorded: Decimal
    needed: Decimal
    day: str


@dataclass(slots=True)
class _Counter:
    spent: Decimal
    reserved: Decimal
    unrecorded: Decimal
    dirty: bool = False

    @property
    def used(self) -> Decimal:
        return self.spent + self.reserved + self.unrecorded


@dataclass(slots=True)
class Counters:
    """The locked counters of some scopes within one transaction; written back by ``save``."""

    values: dict[str, _Counter] = field(default_factory=dict)

    @classmethod
    def lock(
        cls, c: Cursor, db: Database, keys: Iterable[str], known: set[str] | None = None
    ) -> Counters:
        """Create missing rows and lock every one of ``keys`` (in sorted order).

        ``known`` are scopes whose rows exist already (rows are never deleted): they are
        not inserted again. The caller adds them once the transaction commits.
        """
        wanted = sorted(set(keys))
        counters = cls()
        if not wanted:
            return counters
        missing = [(k,) for k in wanted if known is None or k not in known]
        if missing:
            c.executemany(
                "INSERT INTO budget_counters (scope) VALUES (?) ON CONFLICT (scope) DO NOTHING",
                missing,
            )
        marks = ", ".join("?" for _ in wanted)
        rows = c.execute(
            "SELECT scope, spent, reserved, unrecorded FROM budget_counters"
            f" WHERE scope IN ({marks}) ORDER BY scope{db.for_update}",
            wanted,
        ).fetchall()
        for scope, spent, reserved, unrecorded in rows:
            counters.values[scope] = _Counter(
                Decimal(spent), Decimal(reserved), Decimal(unrecorded)
            )
        return counters

    @classmethod
    def read(cls, c: Cursor, keys: Iterable[str]) -> Counters:
        """The committed counters of ``keys``, unlocked (absent scopes read as zero)."""
        counters = cls({k: _Counter(ZERO, ZERO, ZERO) for k in keys})
        wanted = sorted(counters.values)
        if wanted:
            marks = ", ".join("?" for _ in wanted)
            for scope, spent, reserved, unrecorded in c.execute(
                "SELECT scope, spent, reserved, unrecorded FROM budget_counters"
                f" WHERE scope IN ({marks})",
                wanted,
            ).fetchall():
                counters.values[scope] = _Counter(
                    Decimal(spent), Decimal(reserved), Decimal(unrecorded)
                )
        return counters

    def get(self, scope: str) -> _Counter:
        return self.values[scope]

    def add(
        self,
        keys: Iterable[str],
        *,
        spent: Decimal = ZERO,
        reserved: Decimal = ZERO,
        unrecorded: Decimal = ZERO,
    ) -> None:
        """Move money in every scope of ``keys`` (which must be locked)."""
        for key in keys:
            counter = self.values[key]
            counter.spent += spent
            counter.reserved = max(ZERO, counter.reserved + reserved)
            counter.unrecorded += unrecorded
            counter.dirty = True

    def save(self, c: Cursor) -> None:
        """Write the changed counters back (the caller commits)."""
        c.executemany(
            "UPDATE budget_counters SET spent = ?, reserved = ?, unrecorded = ? WHERE scope = ?",
            [
                (format_usd(v.spent), format_usd(v.reserved), format_usd(v.unrecorded), scope)
                for scope, v in self.values.items()
                if v.dirty
            ],
        )

    def fitting(
        self,
        scopes: RunScopes,
        limits: Sequence[StoreLimit],
        day: str,
        amounts: Sequence[Decimal],
        *,
        all_or_none: bool,
    ) -> tuple[int, Refusal | None]:
        """How many leading ``amounts`` fit every limit (all or none if asked), and why
        the next one does not."""
        scoped = [(lim, lim.scope(scopes, day)) for lim in limits]
        checks = [
            (Limit(lim.name, lim.amount, self.values[scope].used), lim, scope)
            for lim, scope in scoped
        ]
        total = ZERO
        for count, amount in enumerate(amounts):
            over = first_violated([(limit, total + amount) for limit, _, _ in checks])
            if over is not None:
                _, lim, scope = next(x for x in checks if x[0] is over)
                counter = self.values[scope]
                refusal = Refusal(
                    lim, counter.spent, counter.reserved, counter.unrecorded,
                    total + amount if all_or_none else amount, day,
                )  # fmt: skip
                return (0 if all_or_none else count), refusal
            total += amount
        return len(amounts), None


def spent_in(c: Cursor, scope: str) -> tuple[Decimal, Decimal, Decimal]:
    """``(spent, reserved, unrecorded)`` of one scope, without locking (for reports)."""
    row = c.execute(
        "SELECT spent, reserved, unrecorded FROM budget_counters WHERE scope = ?", (scope,)
    ).fetchone()
    if row is None:
        return ZERO, ZERO, ZERO
    return Decimal(row[0]), Decimal(row[1]), Decimal(row[2])
