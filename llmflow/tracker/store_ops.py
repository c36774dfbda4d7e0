"""What one store transaction does for the tracker: reserve, and record (settle/release).

An operation is data plus ``apply(c, counters, now)``: database work only, so a
transaction that lost a race can run it again. :meth:`RunStore.commit` runs any number
of operations in one transaction after locking the union of their budget scopes once
(group commit: the executor merges what one event-loop tick produced). Results come
back in order; the tracker updates its in-memory view only after the commit.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any, Protocol

from llmflow.catalog import ZERO, format_usd
from llmflow.errors import RunStoreError
from llmflow.tracker.budget import BudgetAlert, Reservation
from llmflow.tracker.db import Cursor
from llmflow.tracker.records import JsonValue, Mode, Response
from llmflow.tracker.schema import money, parse_timestamp
from llmflow.tracker.store_budget import Counters, Refusal, RunScopes, StoreLimit
from llmflow.tracker.store_rollup import add_billed

#: Token columns of ``requests`` and ``usage``, in :class:`TokenUsage` field order.
USAGE_COLS = (
    "input_tokens, cache_write_5m, cache_write_1h, cache_read, output_tokens, thinking_tokens"
)
_CHUNK = 500  # keys per IN (...) list


class StoreOp(Protocol):
    """One operation of a group-committed transaction."""

    def scope_keys(self, day: str) -> Iterable[str]: ...
    def apply(self, c: Cursor, counters: Counters, day: str, now: str) -> Any: ...


@dataclass(frozen=True, slots=True)
class Dispatch:
    """A request to reserve: its key and upper-bound cost."""

    step_id: str
    key: str
    item_index: int
    upper_bound: Decimal


@dataclass(frozen=True, slots=True)
class Reserved:
    """How many leading dispatches were reserved (and marked in flight), and why the
    next was not."""

    accepted: int
    refusal: Refusal | None
    day: str


@dataclass(frozen=True, slots=True)
class ReserveOp:
    """Reserve the leading dispatches that fit every limit (or all or none), and mark
    them in flight: sync requests, or the requests of a batch (``batch_id``)."""

    run_id: str
    scopes: RunScopes
    limits: Sequence[StoreLimit]
    dispatches: Sequence[Dispatch]
    model: str
    tier: str | None
    mode: Mode
    worker_id: str | None = None
    all_or_none: bool = False
    force: bool = False  # money already committed (a batch submitted before a resume)
    batch_id: str | None = None

    def scope_keys(self, day: str) -> Iterable[str]:
        return self.scopes.keys(day)

    def apply(self, c: Cursor, counters: Counters, day: str, now: str) -> Reserved:
        amounts = [d.upper_bound for d in self.dispatches]
        if self.force:
            accepted, refusal = len(amounts), None
        else:
            accepted, refusal = counters.fitting(
                self.scopes, self.limits, day, amounts, all_or_none=self.all_or_none
            )
        taken = self.dispatches[:accepted]
        if taken:
            refuse_finished(c, self.run_id, [d.key for d in taken])
            c.executemany(
                "INSERT INTO requests (run_id, key, step_id, item_index, status, attempts,"
                " model, tier, mode, batch_id, reserved_usd, reserved_on, dispatched_at,"
                " worker_id) VALUES (?, ?, ?, ?, 'in_flight', 1, ?, ?, ?, ?, ?, ?, ?, ?)"
                " ON CONFLICT (run_id, key) DO UPDATE SET status = 'in_flight',"
                " attempts = requests.attempts + 1, model = excluded.model,"
                " tier = excluded.tier, mode = excluded.mode, batch_id = excluded.batch_id,"
                " reserved_usd = excluded.reserved_usd, reserved_on = excluded.reserved_on,"
                " dispatched_at = excluded.dispatched_at, worker_id = excluded.worker_id,"
                " error = NULL",
                [
                    (self.run_id, d.key, d.step_id, d.item_index, self.model, self.tier,
                     self.mode, self.batch_id, money(d.upper_bound), day, now, self.worker_id)
                    for d in taken
                ],
            )  # fmt: skip
            counters.add(self.scopes.keys(day), reserved=sum(amounts[:accepted], ZERO))
        return Reserved(accepted, refusal, day)


@dataclass(frozen=True, slots=True)
class BatchIntentOp:
    """Reserve every request of a batch chunk (all or none) and make the intent to
    create it durable before ``batches.create`` is called: the batch row (``creating``,
    its request keys and count, the time the creation window opens) and its requests in
    flight under the intent's id. A run resumed after a kill finds the intent and asks
    the API what exists instead of submitting the chunk again."""

    reserve: ReserveOp
    step_id: str
    status: str = "creating"

    def scope_keys(self, day: str) -> Iterable[str]:
        return self.reserve.scope_keys(day)

    def apply(self, c: Cursor, counters: Counters, day: str, now: str) -> Reserved:
        reserved = self.reserve.apply(c, counters, day, now)
        if reserved.accepted:
            keys = [d.key for d in self.reserve.dispatches[: reserved.accepted]]
            c.execute(
                "INSERT INTO batches (run_id, batch_id, step_id, status, submitted_at,"
                " request_keys, requests, worker_id) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                (self.reserve.run_id, self.reserve.batch_id, self.step_id, self.status, now,
                 json.dumps(keys), len(keys), self.reserve.worker_id),
            )  # fmt: skip
        return reserved


@dataclass(frozen=True, slots=True)
class Failure:
    """A request that failed for good (or was skipped); ``billed`` if it was paid for."""

    step_id: str
    key: str
    item_index: int
    error: str
    reservation: Reservation | None
    status: str = "failed"
    billed: Response | None = None


@dataclass(frozen=True, slots=True)
class Recorded:
    """Keys whose response was recorded (others were duplicates), alerts fired."""

    recorded: frozenset[str]
    alerts: tuple[BudgetAlert, ...] = ()


@dataclass(frozen=True, slots=True)
class RecordOp:
    """Commit responses, failures and possibly-billed attempts; settle, release, alert."""

    run_id: str
    scopes: RunScopes
    responses: Sequence[tuple[Response, Reservation | None]] = ()
    failures: Sequence[Failure] = ()
    possibly_billed: Sequence[Reservation] = ()
    releases: Sequence[Reservation] = ()
    unsent: Sequence[tuple[str, Reservation]] = ()  # reserved ahead, never sent: pending
    alert_limits: Sequence[StoreLimit] = ()
    alert_at: Decimal | None = None
    alerted: frozenset[str] = field(default_factory=frozenset)

    def _reservations(self) -> Iterable[Reservation | None]:
        yield from (r for _, r in self.responses)
        yield from (f.reservation for f in self.failures)
        yield from self.possibly_billed
        yield from self.releases
        yield from (r for _, r in self.unsent)

    def scope_keys(self, day: str) -> Iterable[str]:
        days = {r.day or day for r in self._reservations() if r is not None} | {day}
        return [k for d in sorted(days) for k in self.scopes.keys(d)]

    def apply(self, c: Cursor, counters: Counters, day: str, now: str) -> Recorded:
        keys = [r.key for r, _ in self.responses] + [f.key for f in self.failures]
        succeeded = statuses(c, self.run_id, keys, only="succeeded")
        recorded: set[str] = set()
        usage_rows: list[tuple[Any, ...]] = []
        billed: list[tuple[Response, bool]] = []  # usage_rows': (response, a success?)
        request_rows: list[tuple[Any, ...]] = []
        open_usd = ZERO
        for response, reservation in self.responses:
            self._settle(counters, reservation, None, day)
            if response.key in succeeded or response.key in recorded:
                continue  # delivered again after a resume: never counted twice
            paid_on = (reservation and reservation.day) or day
            self._settle(counters, None, response.cost, paid_on)
            if response.open_usd:  # an aborted stream: what it may still cost
                counters.add(self.scopes.keys(paid_on), unrecorded=response.open_usd)
                open_usd += response.open_usd
            recorded.add(response.key)
            usage_rows.append(_usage_row(self.run_id, response, now))
            billed.append((response, True))
            request_rows.append(_request_row(self.run_id, response, now))
        for failure in self.failures:
            self._settle(counters, failure.reservation, None, day)
            if failure.billed is not None:
                paid_on = (failure.reservation and failure.reservation.day) or day
                self._settle(counters, None, failure.billed.cost, paid_on)
                if failure.billed.open_usd:
                    counters.add(self.scopes.keys(paid_on), unrecorded=failure.billed.open_usd)
                    open_usd += failure.billed.open_usd
                usage_rows.append(_usage_row(self.run_id, failure.billed, now))
                billed.append((failure.billed, False))
        self._write(c, usage_rows, request_rows, now)
        add_billed(c, self.run_id, billed, now)  # the roll-ups, in the same transaction
        if open_usd:
            add_unrecorded(c, self.run_id, open_usd)
        self._unrecorded(c, counters, day)
        for reservation in self.releases:
            self._settle(counters, reservation, None, day)
        if self.unsent:
            for _, reservation in self.unsent:
                self._settle(counters, reservation, None, day)
            c.executemany(
                "UPDATE requests SET status = 'pending', worker_id = NULL, reserved_usd = NULL,"
                " attempts = attempts - 1 WHERE run_id = ? AND key = ? AND status = 'in_flight'",
                [(self.run_id, key) for key, _ in self.unsent],
            )
        return Recorded(frozenset(recorded), self._alerts(c, counters, day, now))

    def _settle(
        self, counters: Counters, reservation: Reservation | None, spent: Decimal | None, day: str
    ) -> None:
        if reservation is not None:
            counters.add(self.scopes.keys(reservation.day or day), reserved=-reservation.amount)
        if spent is not None:
            counters.add(self.scopes.keys(day), spent=spent)

    def _write(
        self, c: Cursor, usage_rows: list[tuple[Any, ...]], request_rows: list[tuple[Any, ...]],
        now: str,
    ) -> None:  # fmt: skip
        if usage_rows:
            c.executemany(
                "INSERT INTO usage (run_id, step_id, key, item_index, attempt, model, tier,"
                f" mode, service_tier, speed, inference_geo, request_id, {USAGE_COLS},"
                " cost_usd, recorded_at) VALUES (?, ?, ?, ?, coalesce((SELECT attempts FROM"
                " requests WHERE run_id = ? AND key = ? AND attempts > 0), 1),"
                " ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                usage_rows,
            )
        if request_rows:
            c.executemany(
                "INSERT INTO requests (run_id, key, step_id, item_index, status, attempts,"
                f" model, tier, mode, request_id, service_tier, speed, inference_geo,"
                f" {USAGE_COLS}, cost_usd, stop_reason, output_json, completed_at)"
                " VALUES (?, ?, ?, ?, 'succeeded', 1, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?,"
                " ?, ?, ?, ?) ON CONFLICT (run_id, key) DO UPDATE SET status = 'succeeded',"
                " model = excluded.model, tier = excluded.tier, mode = excluded.mode,"
                " request_id = excluded.request_id, service_tier = excluded.service_tier,"
                " speed = excluded.speed, inference_geo = excluded.inference_geo,"
                " input_tokens = excluded.input_tokens,"
                " cache_write_5m = excluded.cache_write_5m,"
                " cache_write_1h = excluded.cache_write_1h, cache_read = excluded.cache_read,"
                " output_tokens = excluded.output_tokens,"
                " thinking_tokens = excluded.thinking_tokens, cost_usd = excluded.cost_usd,"
                " stop_reason = excluded.stop_reason, error = NULL,"
                " output_json = excluded.output_json, completed_at = excluded.completed_at",
                request_rows,
            )
        if self.failures:
            c.executemany(
                "INSERT INTO requests (run_id, key, step_id, item_index, status, error,"
                " completed_at) VALUES (?, ?, ?, ?, ?, ?, ?) ON CONFLICT (run_id, key)"
                " DO UPDATE SET status = excluded.status, error = excluded.error,"
                " completed_at = excluded.completed_at WHERE requests.status <> 'succeeded'",
                [
                    (self.run_id, f.key, f.step_id, f.item_index, f.status, f.error[:2000], now)
                    for f in self.failures
                ],
            )

    def _unrecorded(self, c: Cursor, counters: Counters, day: str) -> None:
        if not self.possibly_billed:
            return
        total = ZERO
        for reservation in self.possibly_billed:
            keys = self.scopes.keys(reservation.day or day)
            counters.add(keys, reserved=-reservation.amount, unrecorded=reservation.amount)
            total += reservation.amount
        add_unrecorded(c, self.run_id, total)

    def _alerts(self, c: Cursor, counters: Counters, day: str, now: str) -> tuple[BudgetAlert, ...]:
        if self.alert_at is None:
            return ()
        fired: list[BudgetAlert] = []
        for lim in self.alert_limits:
            if lim.name in self.alerted:
                continue
            counter = counters.values.get(lim.scope(self.scopes, day))
            if counter is None:
                continue
            spent = counter.spent + counter.unrecorded
            threshold = lim.amount * self.alert_at
            if spent >= threshold:
                fired.append(
                    BudgetAlert(lim.name, lim.amount, threshold, spent, parse_timestamp(now))
                )
        if fired:
            c.executemany(
                "INSERT INTO alerts (run_id, limit_name, limit_usd, threshold, spent_usd, at)"
                " VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (run_id, limit_name) DO NOTHING",
                [(self.run_id, a.limit_name, money(a.limit), money(a.threshold),
                  money(a.spent), now) for a in fired],
            )  # fmt: skip
        return tuple(fired)


def add_unrecorded(c: Cursor, run_id: str, amount: Decimal) -> None:
    """Add to the run's ``unrecorded_usd`` (read and written: exact on both databases)."""
    row = c.execute("SELECT unrecorded_usd FROM runs WHERE run_id = ?", (run_id,)).fetchone()
    total = Decimal(row[0] or "0") + amount
    c.execute("UPDATE runs SET unrecorded_usd = ? WHERE run_id = ?", (money(total), run_id))


def lose_in_flight(
    c: Cursor, counters: Counters, scopes: RunScopes, day: str, whose: str, args: Sequence[Any]
) -> int:
    """Sync requests of the run left in flight by a process that is gone (``whose``: an
    SQL condition on ``requests``, after ``run_id = ?``): back to pending, and their
    reserved upper bounds to ``unrecorded`` (they may have been billed). How many."""
    where = " WHERE run_id = ? AND status = 'in_flight' AND batch_id IS NULL" + whose
    lost = c.execute(
        "SELECT coalesce(reserved_on, ''), reserved_usd FROM requests" + where, args
    ).fetchall()
    c.execute("UPDATE requests SET status = 'pending', worker_id = NULL" + where, args)
    total = ZERO
    for on, amount in lost:
        money_lost = Decimal(amount or "0")
        counters.add(scopes.keys(on or day), reserved=-money_lost, unrecorded=money_lost)
        total += money_lost
    if total:
        add_unrecorded(c, scopes.run_id, total)
    return len(lost)


def statuses(c: Cursor, run_id: str, keys: Sequence[str], *, only: str) -> set[str]:
    """Which of ``keys`` have status ``only``."""
    found: set[str] = set()
    unique = sorted(set(keys))
    for start in range(0, len(unique), _CHUNK):
        part = unique[start : start + _CHUNK]
        marks = ", ".join("?" for _ in part)
        found.update(
            k
            for (k,) in c.execute(
                f"SELECT key FROM requests WHERE run_id = ? AND status = ? AND key IN ({marks})",
                (run_id, only, *part),
            ).fetchall()
        )
    return found


def refuse_finished(c: Cursor, run_id: str, keys: Sequence[str]) -> None:
    """Sending a succeeded request again would pay twice: refuse it."""
    done = statuses(c, run_id, keys, only="succeeded")
    if done:
        raise RunStoreError(f"request {min(done)} of run {run_id} already succeeded")


def _usage_row(run_id: str, r: Response, now: str) -> tuple[Any, ...]:
    return (
        run_id, r.step_id, r.key, r.item_index, run_id, r.key, r.model, r.tier, r.mode,
        r.service_tier,
        r.speed, r.inference_geo, r.request_id, *token_values(r), money(r.cost), now,
    )  # fmt: skip


def _request_row(run_id: str, r: Response, now: str) -> tuple[Any, ...]:
    return (
        run_id, r.key, r.step_id, r.item_index, r.model, r.tier, r.mode, r.request_id,
        r.service_tier, r.speed, r.inference_geo, *token_values(r), money(r.cost),
        r.stop_reason, dump_output(r.output), now,
    )  # fmt: skip


def token_values(r: Response) -> tuple[int, ...]:
    u = r.usage
    return (u.input, u.cache_write_5m, u.cache_write_1h, u.cache_read, u.output, u.thinking)


def dump_output(output: JsonValue) -> str | None:
    return None if output is None else json.dumps(output, ensure_ascii=False)


def describe(refusal: Refusal) -> str:
    """One line for logs: which limit refused how much."""
    return (
        f"{refusal.limit.name} limit ${format_usd(refusal.limit.amount)}: spent"
        f" ${format_usd(refusal.spent)}, reserved ${format_usd(refusal.reserved)}, needed"
        f" ${format_usd(refusal.needed)}"
    )
