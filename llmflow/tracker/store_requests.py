"""The run store's request and batch state: dispatch, results, failures, alerts.

Recording is idempotent: a response for a key that already succeeded is skipped,
and a succeeded key can never be dispatched again (it would be paid twice).
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterable, Sequence
from decimal import Decimal

from llmflow.catalog import TokenUsage
from llmflow.errors import RunStoreError
from llmflow.tracker import schema
from llmflow.tracker.budget import BudgetAlert
from llmflow.tracker.records import (
    BatchRecord,
    JsonValue,
    Mode,
    Response,
    check_key,
    check_step_id,
)
from llmflow.tracker.schema import money, timestamp
from llmflow.tracker.store_base import StoreBase

#: Token columns of ``requests`` and ``usage``, in :class:`TokenUsage` field order.
USAGE_COLS = (
    "input_tokens, cache_write_5m, cache_write_1h, cache_read, output_tokens, thinking_tokens"
)


class RequestsMixin(StoreBase):
    """Requests, the usage ledger, alerts and batches."""

    # -- requests --------------------------------------------------------------

    def finished_keys(self, run_id: str, step_id: str | None = None) -> set[str]:
        """Keys that succeeded (never to be sent again); failed and skipped retry."""
        sql = "SELECT key FROM requests WHERE run_id = ? AND status = 'succeeded'"
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
        ambiguous failure such as a timeout after sending); the run budget counts it."""
        with self._tx() as c:
            row = c.execute(
                "SELECT unrecorded_usd FROM runs WHERE run_id = ?", (run_id,)
            ).fetchone()
            total = Decimal(row[0] or "0") + amount
            c.execute("UPDATE runs SET unrecorded_usd = ? WHERE run_id = ?", (money(total), run_id))

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
        """Record that a sync request is about to be sent with ``reserved`` set aside."""
        check_key(key)
        with self._tx() as c:
            self._upsert_request(c, run_id, step_id, key, item_index)
            self._refuse_finished(c, run_id, [key])
            c.execute(
                "UPDATE requests SET status = 'in_flight', attempts = attempts + 1, model = ?,"
                " tier = ?, mode = ?, batch_id = NULL, reserved_usd = ?, dispatched_at = ?,"
                " error = NULL WHERE run_id = ? AND key = ?",
                (model, tier, mode, money(reserved), self._now(), run_id, key),
            )

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
        now = self._now()
        recorded: set[str] = set()
        with self._tx() as c:
            for r in responses:
                self._upsert_request(c, run_id, r.step_id, r.key, r.item_index)
                status = c.execute(
                    "SELECT status FROM requests WHERE run_id = ? AND key = ?", (run_id, r.key)
                ).fetchone()[0]
                if status == "succeeded":
                    continue
                self._insert_usage(c, run_id, r, now)
                c.execute(
                    "UPDATE requests SET status = 'succeeded', model = ?, tier = ?, mode = ?,"
                    " request_id = ?, service_tier = ?, speed = ?, inference_geo = ?,"
                    " input_tokens = ?, cache_write_5m = ?, cache_write_1h = ?, cache_read = ?,"
                    " output_tokens = ?, thinking_tokens = ?, cost_usd = ?, stop_reason = ?,"
                    " error = NULL, output_json = ?, completed_at = ?,"
                    " attempts = max(attempts, 1) WHERE run_id = ? AND key = ?",
                    (r.model, r.tier, r.mode, r.request_id, r.service_tier, r.speed,
                     r.inference_geo, *token_values(r.usage), money(r.cost), r.stop_reason,
                     _dump(r.output), now, run_id, r.key),
                )  # fmt: skip
                recorded.add(r.key)
            for step_id, item_index, key, error in failed:
                self._fail(c, run_id, step_id, key, item_index, "failed", error, now)
            self._insert_alerts(c, run_id, alerts)
        return recorded

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
        now = self._now()
        with self._tx() as c:
            if billed is not None:
                self._upsert_request(c, run_id, step_id, key, item_index)
                self._insert_usage(c, run_id, billed, now)
            self._fail(c, run_id, step_id, key, item_index, status, error, now)
            self._insert_alerts(c, run_id, alerts)

    def record_alerts(self, run_id: str, alerts: Iterable[BudgetAlert]) -> None:
        """Commit alerts (one per limit name per run; repeats are ignored)."""
        with self._tx() as c:
            self._insert_alerts(c, run_id, alerts)

    def _fail(
        self,
        c: sqlite3.Connection,
        run_id: str,
        step_id: str,
        key: str,
        item_index: int,
        status: str,
        error: str,
        now: str,
    ) -> None:
        self._upsert_request(c, run_id, step_id, key, item_index)
        c.execute(
            "UPDATE requests SET status = ?, error = ?, completed_at = ?"
            " WHERE run_id = ? AND key = ? AND status != 'succeeded'",
            (status, error[:2000], now, run_id, key),
        )

    @staticmethod
    def _upsert_request(
        c: sqlite3.Connection, run_id: str, step_id: str, key: str, item_index: int
    ) -> None:
        check_step_id(step_id)
        c.execute(
            "INSERT INTO requests (run_id, key, step_id, item_index, status)"
            " VALUES (?, ?, ?, ?, 'pending') ON CONFLICT (run_id, key) DO NOTHING",
            (run_id, key, step_id, item_index),
        )
        row = c.execute(
            "SELECT step_id, item_index FROM requests WHERE run_id = ? AND key = ?", (run_id, key)
        ).fetchone()
        if tuple(row) != (step_id, item_index):
            raise RunStoreError(
                f"request key {key} is step {row[0]} item {row[1]}, not {step_id} {item_index}"
            )

    @staticmethod
    def _refuse_finished(c: sqlite3.Connection, run_id: str, keys: Sequence[str]) -> None:
        """Sending a succeeded request again would pay twice: refuse it."""
        for key in keys:
            row = c.execute(
                "SELECT status FROM requests WHERE run_id = ? AND key = ?", (run_id, key)
            ).fetchone()
            if row is not None and row[0] == "succeeded":
                raise RunStoreError(f"request {key} of run {run_id} already succeeded")

    @staticmethod
    def _insert_usage(c: sqlite3.Connection, run_id: str, r: Response, now: str) -> None:
        attempt = c.execute(
            "SELECT max(attempts, 1) FROM requests WHERE run_id = ? AND key = ?", (run_id, r.key)
        ).fetchone()[0]
        c.execute(
            "INSERT INTO usage (run_id, step_id, key, item_index, attempt, model, tier, mode,"
            f" service_tier, speed, inference_geo, request_id, {USAGE_COLS}, cost_usd,"
            " recorded_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (run_id, r.step_id, r.key, r.item_index, attempt, r.model, r.tier, r.mode,
             r.service_tier, r.speed, r.inference_geo, r.request_id, *token_values(r.usage),
             money(r.cost), now),
        )  # fmt: skip

    @staticmethod
    def _insert_alerts(c: sqlite3.Connection, run_id: str, alerts: Iterable[BudgetAlert]) -> None:
        c.executemany(
            "INSERT INTO alerts (run_id, limit_name, limit_usd, threshold, spent_usd, at)"
            " VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (run_id, limit_name) DO NOTHING",
            [(run_id, a.limit_name, money(a.limit), money(a.threshold), money(a.spent),
              timestamp(a.at)) for a in alerts],
        )  # fmt: skip

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
        """Commit a submitted batch: its requests ``(key, item_index, reserved)`` go in flight."""
        keys = [check_key(k) for k, _, _ in requests]
        now = self._now()
        with self._tx() as c:
            c.execute(
                "INSERT INTO batches (run_id, batch_id, step_id, status, submitted_at,"
                " request_keys) VALUES (?, ?, ?, 'in_progress', ?, ?)",
                (run_id, batch_id, step_id, now, json.dumps(keys)),
            )
            for key, item_index, _ in requests:
                self._upsert_request(c, run_id, step_id, key, item_index)
            self._refuse_finished(c, run_id, keys)
            for key, _, reserved in requests:
                c.execute(
                    "UPDATE requests SET status = 'in_flight', attempts = attempts + 1,"
                    " model = ?, tier = ?, mode = 'batch', batch_id = ?, reserved_usd = ?,"
                    " dispatched_at = ?, error = NULL WHERE run_id = ? AND key = ?",
                    (model, tier, batch_id, money(reserved), now, run_id, key),
                )

    def open_batches(self, run_id: str) -> list[BatchRecord]:
        """Submitted batches not yet marked ended, oldest first (to poll on resume)."""
        return self._batches(run_id, "AND ended_at IS NULL")

    def batches(self, run_id: str) -> list[BatchRecord]:
        return self._batches(run_id, "")

    def _batches(self, run_id: str, where: str) -> list[BatchRecord]:
        rows = self._read(
            lambda c: c.execute(
                "SELECT step_id, batch_id, status, submitted_at, ended_at, request_keys"
                f" FROM batches WHERE run_id = ? {where} ORDER BY submitted_at, batch_id",
                (run_id,),
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


def _dump(output: JsonValue) -> str | None:
    return None if output is None else json.dumps(output, ensure_ascii=False)
