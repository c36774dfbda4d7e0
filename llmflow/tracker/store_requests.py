"""The run store's request and batch state: dispatch, results, failures, alerts.

Recording is idempotent: a response for a key that already succeeded is skipped,
and a succeeded key can never be dispatched again (it would be paid twice).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Sequence
from decimal import Decimal
from typing import Any

from llmflow.catalog import TokenUsage
from llmflow.errors import RunStoreError
from llmflow.tracker import schema
from llmflow.tracker.budget import BudgetAlert
from llmflow.tracker.db import Cursor
from llmflow.tracker.records import BatchRecord, Mode, Response, check_key, check_step_id
from llmflow.tracker.schema import money, timestamp
from llmflow.tracker.store_base import StoreBase
from llmflow.tracker.store_budget import Counters, RunScopes, day_key, spent_in
from llmflow.tracker.store_ops import (
    USAGE_COLS,
    BatchIntentOp,
    Dispatch,
    Failure,
    Recorded,
    RecordOp,
    ReserveOp,
    StoreOp,
    add_unrecorded,
)

__all__ = ["USAGE_COLS", "RequestsMixin", "token_usage", "token_values"]


class RequestsMixin(StoreBase):
    """Requests, the usage ledger, alerts and batches."""

    _scopes: dict[str, RunScopes]
    _known_scopes: set[str]  # budget_counters rows that exist (they are never deleted)

    # -- requests --------------------------------------------------------------

    def finished_keys(
        self, run_id: str, step_id: str | None = None, *, in_flight: bool = False
    ) -> set[str]:
        """Keys that succeeded (never to be sent again); failed and skipped retry. With
        ``in_flight``, keys awaiting a result too (a batch still running, a live worker's)."""
        statuses = "('succeeded', 'in_flight')" if in_flight else "('succeeded')"
        sql = f"SELECT key FROM requests WHERE run_id = ? AND status IN {statuses}"
        args: tuple[str, ...] = (run_id,)
        if step_id is not None:
            sql, args = sql + " AND step_id = ?", (run_id, step_id)
        return {k for (k,) in self._read(lambda c: c.execute(sql, args).fetchall())}

    def keys_with_status(self, run_id: str, statuses: Sequence[str]) -> dict[str, str]:
        """key → status for the run's requests in one of ``statuses``."""
        marks = ", ".join("?" for _ in statuses)
        sql = f"SELECT key, status FROM requests WHERE run_id = ? AND status IN ({marks})"
        return dict(self._read(lambda c: c.execute(sql, (run_id, *statuses)).fetchall()))

    def add_unrecorded(self, run_id: str, amount: Decimal) -> None:
        """Count money that may have been billed without a recorded response (an
        ambiguous failure such as a timeout after sending): the run's ``unrecorded_usd``
        and its budget scopes' ``unrecorded`` both count it."""
        scopes = self.scopes_of(run_id)

        def write(c: Cursor, counters: Counters, day: str, now: str) -> None:
            counters.add(scopes.keys(day), unrecorded=amount)
            add_unrecorded(c, run_id, amount)

        self.commit([_Op(scopes, write)])

    def mark_dispatched(
        self,
        run_id: str,
        step_id: str,
        key: str,
        item_index: int,
        *,
        model: str,
        tier: str | None,
        mode: Mode,
        reserved: Decimal,
    ) -> None:
        """Record that a sync request is about to be sent with ``reserved`` set aside
        (no limit checked: :class:`~llmflow.tracker.Tracker` checks them)."""
        check_key(key)
        check_step_id(step_id)
        op = ReserveOp(
            run_id, self.scopes_of(run_id), (), [Dispatch(step_id, key, item_index, reserved)],
            model, tier, mode, force=True,
        )  # fmt: skip
        self.commit([op])

    def record_success(
        self, run_id: str, response: Response, *, alerts: Iterable[BudgetAlert] = ()
    ) -> bool:
        """Commit one billed, succeeded response (usage ledger row, state, output).

        Returns False (and records nothing) if the key had already succeeded.
        """
        return bool(self.record_responses(run_id, [response], alerts=alerts))

    def record_responses(
        self,
        run_id: str,
        responses: Sequence[Response],
        *,
        failed: Sequence[tuple[str, int, str, str]] = (),
        alerts: Iterable[BudgetAlert] = (),
    ) -> set[str]:
        """Commit many succeeded responses and failures (step, item, key, error) at once.

        Idempotent: a response for a key that already succeeded (a batch result
        delivered again after a resume) is skipped, so it is never counted twice.
        Returns the keys whose response was recorded.
        """
        for r in responses:
            check_key(r.key)
        op = RecordOp(
            run_id, self.scopes_of(run_id), [(r, None) for r in responses],
            [Failure(s, k, i, e, None) for s, i, k, e in failed],
        )  # fmt: skip
        recorded: Recorded = self.commit([op])[0]
        self.record_alerts(run_id, alerts)
        return set(recorded.recorded)

    def record_failure(
        self,
        run_id: str,
        step_id: str,
        key: str,
        item_index: int,
        *,
        error: str,
        billed: Response | None = None,
        status: str = "failed",
        alerts: Iterable[BudgetAlert] = (),
    ) -> None:
        """Commit a request that failed (or was ``skipped``); a billed one adds usage."""
        if status not in ("failed", "skipped"):
            raise ValueError(f"a failure's status is failed or skipped, not {status!r}")
        check_key(key)
        failure = Failure(step_id, key, item_index, error, None, status, billed)
        self.commit([RecordOp(run_id, self.scopes_of(run_id), failures=[failure])])
        self.record_alerts(run_id, alerts)

    def record_alerts(self, run_id: str, alerts: Iterable[BudgetAlert]) -> None:
        """Commit alerts (one per limit name per run; repeats are ignored)."""
        rows = [
            (run_id, a.limit_name, money(a.limit), money(a.threshold), money(a.spent),
             timestamp(a.at)) for a in alerts
        ]  # fmt: skip
        if not rows:
            return
        with self._tx() as c:
            c.executemany(
                "INSERT INTO alerts (run_id, limit_name, limit_usd, threshold, spent_usd, at)"
                " VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (run_id, limit_name) DO NOTHING",
                rows,
            )

    # -- group commit ----------------------------------------------------------

    def commit(self, ops: Sequence[StoreOp]) -> list[Any]:
        """Run ``ops`` in one transaction: the union of their budget scopes is locked
        once, each op applied in order, the counters written back; results in order."""
        moment = self._clock()
        day, now = day_key(moment), timestamp(moment)

        def body(c: Cursor) -> list[Any]:
            keys = {k for op in ops for k in op.scope_keys(day)}
            counters = Counters.lock(c, self._db, keys, self._known_scopes)
            results = [op.apply(c, counters, day, now) for op in ops]
            counters.save(c)
            return results

        results = self._write(body)
        self._known_scopes.update(k for op in ops for k in op.scope_keys(day))
        return results

    def counters(self, keys: Iterable[str]) -> Counters:
        """The committed budget counters of ``keys`` (unlocked: for headroom and plans)."""
        return self._read(lambda c: Counters.read(c, keys))

    def read_counter(self, scope: str) -> tuple[Decimal, Decimal, Decimal]:
        """``(spent, reserved, unrecorded)`` of a budget scope, as committed."""
        return self._read(lambda c: spent_in(c, scope))

    def scopes_of(self, run_id: str) -> RunScopes:
        """The budget scopes of a run (its pipeline and tag labels), cached."""
        cached = self._scopes.get(run_id)
        if cached is not None:
            return cached

        def query(c: Cursor) -> RunScopes:
            row = c.execute("SELECT pipeline FROM runs WHERE run_id = ?", (run_id,)).fetchone()
            if row is None:
                raise RunStoreError(f"no run {run_id!r} in {self.location}")
            tags = c.execute(
                "SELECT key, value FROM run_tags WHERE run_id = ? ORDER BY key", (run_id,)
            ).fetchall()
            return RunScopes(run_id, row[0], tuple((k, v) for k, v in tags))

        scopes = self._scopes[run_id] = self._read(query)
        return scopes

    def alerts(self, run_id: str) -> list[BudgetAlert]:
        """Alerts of the run (every session), in firing order."""
        rows = self._read(
            lambda c: c.execute(
                "SELECT limit_name, limit_usd, threshold, spent_usd, at FROM alerts"
                " WHERE run_id = ? ORDER BY at, limit_name",
                (run_id,),
            ).fetchall()
        )
        return [
            BudgetAlert(n, Decimal(lim), Decimal(t), Decimal(s), schema.parse_timestamp(at))
            for n, lim, t, s, at in rows
        ]

    # -- batches ---------------------------------------------------------------

    def record_batch_submitted(
        self,
        run_id: str,
        step_id: str,
        batch_id: str,
        requests: Sequence[tuple[str, int, Decimal]],
        *,
        model: str,
        tier: str | None,
    ) -> None:
        """Commit a submitted batch: its requests ``(key, item_index, reserved)`` go in
        flight (no limit checked: the tracker reserves through :class:`BatchIntentOp`)."""
        reserve = ReserveOp(
            run_id, self.scopes_of(run_id), (),
            [Dispatch(step_id, check_key(k), i, ub) for k, i, ub in requests],
            model, tier, "batch", force=True, batch_id=batch_id,
        )  # fmt: skip
        self.commit([BatchIntentOp(reserve, step_id, status="in_progress")])

    def batch_created(self, run_id: str, intent_id: str, batch_id: str) -> None:
        """The API created the batch of intent ``intent_id``: it is known as ``batch_id``."""
        with self._tx() as c:
            c.execute(
                "UPDATE batches SET batch_id = ?, status = 'in_progress'"
                " WHERE run_id = ? AND batch_id = ?",
                (batch_id, run_id, intent_id),
            )
            c.execute(
                "UPDATE requests SET batch_id = ? WHERE run_id = ? AND batch_id = ?",
                (batch_id, run_id, intent_id),
            )

    def batch_abandoned(self, run_id: str, intent_id: str) -> None:
        """No batch was created for intent ``intent_id``: forget it; its requests go back
        to pending (the caller releases their reservations)."""
        with self._tx() as c:
            c.execute(
                "UPDATE requests SET status = 'pending', batch_id = NULL"
                " WHERE run_id = ? AND batch_id = ? AND status = 'in_flight'",
                (run_id, intent_id),
            )
            c.execute("DELETE FROM batches WHERE run_id = ? AND batch_id = ?", (run_id, intent_id))

    def open_batches(self, run_id: str, *, worker_id: str | None = None) -> list[BatchRecord]:
        """Batches (and intents) not yet marked ended, oldest first (to poll on resume).

        With ``worker_id``, only those nobody else alive holds; they become this
        worker's, with their requests in flight (a live worker polls its own batches,
        and the others see its holds as a live worker's)."""
        if worker_id is None:
            return self._batches(run_id, "AND ended_at IS NULL")
        now = self._now()
        with self._tx() as c:
            c.execute(
                "UPDATE batches SET worker_id = ? WHERE run_id = ? AND ended_at IS NULL AND"
                " (worker_id IS NULL OR worker_id NOT IN (SELECT worker_id FROM workers WHERE"
                " run_id = ? AND ended_at IS NULL AND lease_until >= ? AND worker_id <> ?))",
                (worker_id, run_id, run_id, now, worker_id),
            )
            c.execute(
                "UPDATE requests SET worker_id = ? WHERE run_id = ? AND status = 'in_flight'"
                " AND worker_id <> ? AND batch_id IN (SELECT batch_id FROM batches WHERE"
                " run_id = ? AND ended_at IS NULL AND worker_id = ?)",
                (worker_id, run_id, worker_id, run_id, worker_id),
            )
        return self._batches(run_id, "AND ended_at IS NULL AND worker_id = ?", (worker_id,))

    def known_batch_ids(self) -> set[str]:
        """The id of every batch any run of this store created."""
        rows = self._read(lambda c: c.execute("SELECT batch_id FROM batches").fetchall())
        return {b for (b,) in rows}

    def batches(self, run_id: str) -> list[BatchRecord]:
        return self._batches(run_id, "")

    def _batches(self, run_id: str, where: str, args: tuple[str, ...] = ()) -> list[BatchRecord]:
        rows = self._read(
            lambda c: c.execute(
                "SELECT step_id, batch_id, status, submitted_at, ended_at, request_keys"
                f" FROM batches WHERE run_id = ? {where} ORDER BY submitted_at, batch_id",
                (run_id, *args),
            ).fetchall()
        )
        return [
            BatchRecord(run_id, s, b, st, schema.parse_timestamp(sub),
                        schema.parse_timestamp(end) if end else None, tuple(json.loads(keys)))
            for s, b, st, sub, end, keys in rows
        ]  # fmt: skip

    def batch_in_flight(self, run_id: str, batch_id: str) -> dict[str, tuple[int, Decimal]]:
        """Requests of a batch still awaiting a result: key → (item_index, reserved)."""
        rows = self._read(
            lambda c: c.execute(
                "SELECT key, item_index, reserved_usd FROM requests WHERE run_id = ?"
                " AND batch_id = ? AND status = 'in_flight' ORDER BY item_index",
                (run_id, batch_id),
            ).fetchall()
        )
        return {k: (i, Decimal(r or "0")) for k, i, r in rows}

    def batch_reservations(
        self, run_id: str, batch_id: str
    ) -> dict[str, tuple[int, Decimal, str | None]]:
        """What a batch's requests awaiting a result hold in the budget counters:
        key → (item_index, reserved, the UTC day it was reserved on)."""
        rows = self._read(
            lambda c: c.execute(
                "SELECT key, item_index, reserved_usd, reserved_on FROM requests"
                " WHERE run_id = ? AND batch_id = ? AND status = 'in_flight'"
                " ORDER BY item_index",
                (run_id, batch_id),
            ).fetchall()
        )
        return {k: (i, Decimal(r or "0"), on) for k, i, r, on in rows}

    def batch_tier(self, run_id: str, batch_id: str) -> str | None:
        """The tier a batch's requests were priced on when it was submitted."""
        row = self._read(
            lambda c: c.execute(
                "SELECT tier FROM requests WHERE run_id = ? AND batch_id = ? LIMIT 1",
                (run_id, batch_id),
            ).fetchone()
        )
        return str(row[0]) if row and row[0] is not None else None

    def set_batch_status(self, run_id: str, batch_id: str, status: str) -> None:
        """Remember the last processing_status seen while polling."""
        with self._tx() as c:
            c.execute(
                "UPDATE batches SET status = ? WHERE run_id = ? AND batch_id = ?",
                (status, run_id, batch_id),
            )

    def mark_batch_ended(self, run_id: str, batch_id: str, status: str = "ended") -> list[str]:
        """Close a batch after its results were recorded.

        Requests of the batch still in flight (no result came back) are marked
        failed and their keys returned, so the caller can release their reservations.
        """
        now = self._now()
        with self._tx() as c:
            missing = [
                k
                for (k,) in c.execute(
                    "SELECT key FROM requests WHERE run_id = ? AND batch_id = ?"
                    " AND status = 'in_flight'",
                    (run_id, batch_id),
                ).fetchall()
            ]
            c.execute(
                "UPDATE requests SET status = 'failed', error = 'no result in batch',"
                " completed_at = ? WHERE run_id = ? AND batch_id = ? AND status = 'in_flight'",
                (now, run_id, batch_id),
            )
            c.execute(
                "UPDATE batches SET status = ?, ended_at = ? WHERE run_id = ? AND batch_id = ?",
                (status, now, run_id, batch_id),
            )
        return missing


def token_values(usage: TokenUsage) -> tuple[int, ...]:
    """``usage`` as the values of :data:`USAGE_COLS`."""
    return (
        usage.input, usage.cache_write_5m, usage.cache_write_1h, usage.cache_read,
        usage.output, usage.thinking,
    )  # fmt: skip


def token_usage(values: Sequence[int | None]) -> TokenUsage:
    """The :class:`TokenUsage` of :data:`USAGE_COLS` values (sums of no rows are NULL)."""
    i, w5, w1, r, o, t = (v or 0 for v in values)
    return TokenUsage(
        input=i, cache_write_5m=w5, cache_write_1h=w1, cache_read=r, output=o, thinking=t
    )


class _Op:
    """A one-off store operation: a function over the locked counters of ``scopes``."""

    def __init__(self, scopes: RunScopes, fn: Callable[[Cursor, Counters, str, str], Any]) -> None:
        self._scopes = scopes
        self._fn = fn

    def scope_keys(self, day: str) -> Iterable[str]:
        return self._scopes.keys(day)

    def apply(self, c: Cursor, counters: Counters, day: str, now: str) -> Any:
        return self._fn(c, counters, day, now)
