"""The run store: SQLite (WAL) at ``<state_dir>/llmflow.db``, one directory per run.

Every write is one transaction committed before the method returns, so what the
executor decides next is based on durable state: a process killed at any moment
loses at most the responses that were in flight, and a resumed run never sends a
request that already succeeded. Run directories (``<state_dir>/runs/<run_id>/``) hold
``outputs/<step_id>.jsonl`` (rebuilt from the database in item order), ``summary.json``
and a ``lock`` file that one process holds (``flock``) while it runs the run.

All methods are thread-safe; none blocks on the network.
"""

from __future__ import annotations

import contextlib
import json
import os
import sqlite3
import threading
from collections.abc import Callable, Iterable, Iterator, Sequence
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any, TypeVar

import structlog

from llmflow.catalog import ZERO, ModelInfo, TokenUsage
from llmflow.errors import RunStoreError
from llmflow.tracker import schema
from llmflow.tracker.budget import BudgetAlert
from llmflow.tracker.records import (
    BatchRecord,
    FinalStatus,
    JsonValue,
    Mode,
    OutputRecord,
    Response,
    RunInfo,
    RunRecord,
    StepTotals,
    check_key,
    check_run_id,
    check_step_id,
)
from llmflow.tracker.schema import money, timestamp, to_decimal
from llmflow.tracker.summary import RunSummary, build_summary

try:  # POSIX; elsewhere runs are not protected against two concurrent processes
    import fcntl
except ImportError:  # pragma: no cover
    fcntl = None  # type: ignore[assignment]

_log = structlog.get_logger("llmflow.tracker.store")
_T = TypeVar("_T")
DB_NAME = "llmflow.db"
_USAGE_COLS = "input_tokens, cache_write_5m, cache_write_1h, cache_read, output_tokens"


class RunStore:
    """Persistent state of every run under one state directory."""

    def __init__(
        self, state_dir: Path, conn: sqlite3.Connection, clock: Callable[[], datetime]
    ) -> None:
        self.state_dir = state_dir
        self._conn = conn
        self._clock = clock
        self._lock = threading.RLock()
        self._run_locks: dict[str, int] = {}

    @classmethod
    def open(
        cls, state_dir: str | os.PathLike[str], *, clock: Callable[[], datetime] | None = None
    ) -> RunStore:
        """Open (creating if needed) the store under ``state_dir``."""
        root = Path(state_dir)
        try:
            (root / "runs").mkdir(parents=True, exist_ok=True)
            conn = schema.connect(root / DB_NAME)
        except (OSError, sqlite3.Error, ValueError) as exc:
            raise RunStoreError(f"cannot open run store {root / DB_NAME}: {exc}") from exc
        return cls(root, conn, clock or (lambda: datetime.now(UTC)))

    def close(self) -> None:
        """Release run locks and close the database."""
        with self._lock:
            for run_id in list(self._run_locks):
                self._unlock(run_id)
            self._conn.close()

    def __enter__(self) -> RunStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def run_dir(self, run_id: str) -> Path:
        return self.state_dir / "runs" / check_run_id(run_id)

    def journal_mode(self) -> str:
        return str(self._read(lambda c: c.execute("PRAGMA journal_mode").fetchone()[0]))

    # -- plumbing --------------------------------------------------------------

    def _now(self) -> str:
        return timestamp(self._clock())

    @contextlib.contextmanager
    def _tx(self) -> Iterator[sqlite3.Connection]:
        with self._lock:
            try:
                self._conn.execute("BEGIN IMMEDIATE")
                try:
                    yield self._conn
                except BaseException:
                    self._conn.execute("ROLLBACK")
                    raise
                self._conn.execute("COMMIT")
            except sqlite3.Error as exc:
                raise RunStoreError(f"run store write failed: {exc}") from exc

    def _read(self, fn: Callable[[sqlite3.Connection], _T]) -> _T:
        with self._lock:
            try:
                return fn(self._conn)
            except sqlite3.Error as exc:
                raise RunStoreError(f"run store read failed: {exc}") from exc

    def _lock_run(self, run_id: str) -> None:
        if run_id in self._run_locks or fcntl is None:
            return
        path = self.run_dir(run_id) / "lock"
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            os.close(fd)
            raise RunStoreError(f"run {run_id} is being run by another process") from exc
        self._run_locks[run_id] = fd

    def _unlock(self, run_id: str) -> None:
        fd = self._run_locks.pop(run_id, None)
        if fd is not None:
            os.close(fd)  # closing the descriptor releases the flock

    # -- runs ------------------------------------------------------------------

    def start_run(self, run_id: str, info: RunInfo) -> RunRecord:
        """Create a new run (status ``running``) and lock it for this process."""
        check_run_id(run_id)
        if self.find_run(run_id) is not None:
            raise RunStoreError(f"run {run_id} already exists; resume it instead")
        self._lock_run(run_id)
        try:
            with self._tx() as c:
                c.execute(
                    "INSERT INTO runs (run_id, pipeline, pipeline_path, policy, policy_path,"
                    " plan_hash, status, started_at, budget_limit, plan_cost_expected,"
                    " plan_cost_max, plan_cost_baseline)"
                    " VALUES (?, ?, ?, ?, ?, ?, 'running', ?, ?, ?, ?, ?)",
                    (run_id, info.pipeline, info.pipeline_path, info.policy, info.policy_path,
                     info.plan_hash, self._now(), money(info.budget_limit),
                     money(info.plan_cost_expected), money(info.plan_cost_max),
                     money(info.plan_cost_baseline)),
                )  # fmt: skip
                c.executemany(
                    "INSERT INTO run_tags (run_id, key, value) VALUES (?, ?, ?)",
                    [(run_id, k, v) for k, v in sorted(info.tags.items())],
                )
                self._write_steps(c, run_id, info)
        except BaseException:
            self._unlock(run_id)
            raise
        _log.info("run.started", run_id=run_id, pipeline=info.pipeline, policy=info.policy)
        return self.get_run(run_id)

    def resume_run(self, run_id: str, info: RunInfo) -> RunRecord:
        """Reopen an existing run of the same pipeline and lock it for this process.

        Sync requests left ``in_flight`` by a dead process go back to ``pending``;
        their reserved upper bounds are added to the run's ``unrecorded_usd`` (they
        may have been billed without being recorded), which the run budget counts.
        Requests of submitted batches stay in flight: their batches are polled.
        """
        run = self.get_run(run_id)
        if run.pipeline != info.pipeline:
            raise RunStoreError(
                f"run {run_id} belongs to pipeline {run.pipeline!r}, not {info.pipeline!r}"
            )
        self._lock_run(run_id)
        if run.plan_hash and info.plan_hash and run.plan_hash != info.plan_hash:
            _log.warning("run.plan_changed", run_id=run_id, old=run.plan_hash, new=info.plan_hash)
        try:
            with self._tx() as c:
                lost = c.execute(
                    "SELECT count(*), dsum(reserved_usd) FROM requests WHERE run_id = ?"
                    " AND status = 'in_flight' AND batch_id IS NULL",
                    (run_id,),
                ).fetchone()
                c.execute(
                    "UPDATE requests SET status = 'pending' WHERE run_id = ?"
                    " AND status = 'in_flight' AND batch_id IS NULL",
                    (run_id,),
                )
                unrecorded = run.unrecorded_usd + Decimal(lost[1] or "0")
                c.execute(
                    "UPDATE runs SET status = 'running', ended_at = NULL,"
                    " sessions = sessions + 1, policy = ?, policy_path = ?,"
                    " plan_hash = coalesce(?, plan_hash), unrecorded_usd = ?,"
                    " budget_limit = coalesce(?, budget_limit),"
                    " plan_cost_expected = coalesce(?, plan_cost_expected),"
                    " plan_cost_max = coalesce(?, plan_cost_max),"
                    " plan_cost_baseline = coalesce(?, plan_cost_baseline) WHERE run_id = ?",
                    (info.policy, info.policy_path, info.plan_hash, money(unrecorded),
                     money(info.budget_limit), money(info.plan_cost_expected),
                     money(info.plan_cost_max), money(info.plan_cost_baseline), run_id),
                )  # fmt: skip
                self._write_steps(c, run_id, info)
        except BaseException:
            self._unlock(run_id)
            raise
        _log.info("run.resumed", run_id=run_id, lost_in_flight=lost[0], sessions=run.sessions + 1)
        return self.get_run(run_id)

    def open_run(self, run_id: str, info: RunInfo) -> tuple[RunRecord, bool]:
        """Start the run, or resume it if it exists; the flag is True on resume."""
        if self.find_run(run_id) is None:
            return self.start_run(run_id, info), False
        return self.resume_run(run_id, info), True

    @staticmethod
    def _write_steps(c: sqlite3.Connection, run_id: str, info: RunInfo) -> None:
        for position, step in enumerate(info.steps):
            check_step_id(step.step_id)
            c.execute(
                "INSERT INTO steps (run_id, step_id, position, requests, model, tier, mode,"
                " plan_cost_expected, plan_cost_max) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)"
                " ON CONFLICT (run_id, step_id) DO UPDATE SET position = excluded.position,"
                " requests = excluded.requests, model = excluded.model, tier = excluded.tier,"
                " mode = excluded.mode, plan_cost_expected = excluded.plan_cost_expected,"
                " plan_cost_max = excluded.plan_cost_max",
                (run_id, step.step_id, position, step.requests, step.model, step.tier,
                 step.mode, money(step.plan_cost_expected), money(step.plan_cost_max)),
            )  # fmt: skip

    def finish_run(self, run_id: str, status: FinalStatus) -> RunRecord:
        """Set the final status, write every step's outputs JSONL, release the lock."""
        with self._tx() as c:
            c.execute(
                "UPDATE runs SET status = ?, ended_at = ? WHERE run_id = ?",
                (status, self._now(), run_id),
            )
        for step_id in self.step_ids(run_id):
            self.write_outputs(run_id, step_id)
        with self._lock:
            self._unlock(run_id)
        _log.info("run.finished", run_id=run_id, status=status)
        return self.get_run(run_id)

    def find_run(self, run_id: str) -> RunRecord | None:
        return next(iter(self._runs("SELECT * FROM runs WHERE run_id = ?", (run_id,))), None)

    def get_run(self, run_id: str) -> RunRecord:
        """The run, or RunStoreError if there is none."""
        run = self.find_run(run_id)
        if run is None:
            raise RunStoreError(f"no run {run_id!r} in {self.state_dir}")
        return run

    def list_runs(
        self, *, pipeline: str | None = None, limit: int | None = None
    ) -> list[RunRecord]:
        """Runs, newest first."""
        sql = "SELECT * FROM runs" + (" WHERE pipeline = ?" if pipeline else "")
        sql += " ORDER BY started_at DESC, run_id DESC" + (f" LIMIT {int(limit)}" if limit else "")
        args: tuple[Any, ...] = (pipeline,) if pipeline else ()
        return self._runs(sql, args)

    def last_run(self) -> RunRecord | None:
        return next(iter(self.list_runs(limit=1)), None)

    def _runs(self, sql: str, args: tuple[Any, ...]) -> list[RunRecord]:
        def query(c: sqlite3.Connection) -> list[RunRecord]:
            cursor = c.execute(sql, args)
            cols = [d[0] for d in cursor.description]
            rows = [dict(zip(cols, row, strict=True)) for row in cursor.fetchall()]
            tags: dict[str, dict[str, str]] = {r["run_id"]: {} for r in rows}
            for r in rows:
                for k, v in c.execute(
                    "SELECT key, value FROM run_tags WHERE run_id = ? ORDER BY key",
                    (r["run_id"],),
                ).fetchall():
                    tags[r["run_id"]][k] = v
            return [_run_record(r, tags[r["run_id"]]) for r in rows]

        return self._read(query)

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
                u = r.usage
                c.execute(
                    "UPDATE requests SET status = 'succeeded', model = ?, tier = ?, mode = ?,"
                    " request_id = ?, service_tier = ?, input_tokens = ?, cache_write_5m = ?,"
                    " cache_write_1h = ?, cache_read = ?, output_tokens = ?, cost_usd = ?,"
                    " stop_reason = ?, error = NULL, output_json = ?, completed_at = ?,"
                    " attempts = max(attempts, 1) WHERE run_id = ? AND key = ?",
                    (r.model, r.tier, r.mode, r.request_id, r.service_tier, u.input,
                     u.cache_write_5m, u.cache_write_1h, u.cache_read, u.output,
                     money(r.cost), r.stop_reason, _dump(r.output), now, run_id, r.key),
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
        u = r.usage
        attempt = c.execute(
            "SELECT max(attempts, 1) FROM requests WHERE run_id = ? AND key = ?", (run_id, r.key)
        ).fetchone()[0]
        c.execute(
            "INSERT INTO usage (run_id, step_id, key, item_index, attempt, model, tier, mode,"
            f" service_tier, request_id, {_USAGE_COLS}, cost_usd, recorded_at)"
            " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (run_id, r.step_id, r.key, r.item_index, attempt, r.model, r.tier, r.mode,
             r.service_tier, r.request_id, u.input, u.cache_write_5m, u.cache_write_1h,
             u.cache_read, u.output, money(r.cost), now),
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

    # -- outputs ---------------------------------------------------------------

    def step_ids(self, run_id: str) -> list[str]:
        """Steps of the run: planned ones in plan order, then any others seen."""
        rows = self._read(
            lambda c: (
                c.execute(
                    "SELECT step_id FROM steps WHERE run_id = ? ORDER BY position", (run_id,)
                ).fetchall()
                + c.execute(
                    "SELECT DISTINCT step_id FROM requests WHERE run_id = ? AND step_id NOT IN"
                    " (SELECT step_id FROM steps WHERE run_id = ?) ORDER BY step_id",
                    (run_id, run_id),
                ).fetchall()
            )
        )
        return [s for (s,) in rows]

    def step_output_records(self, run_id: str, step_id: str) -> list[OutputRecord]:
        """Succeeded outputs of a step in item order (across every session)."""
        rows = self._read(
            lambda c: c.execute(
                "SELECT item_index, key, output_json FROM requests WHERE run_id = ?"
                " AND step_id = ? AND status = 'succeeded' ORDER BY item_index, key",
                (run_id, step_id),
            ).fetchall()
        )
        return [OutputRecord(i, k, json.loads(o) if o is not None else None) for i, k, o in rows]

    def step_outputs(self, run_id: str, step_id: str) -> list[JsonValue]:
        """Just the outputs, in item order (what downstream templates see)."""
        return [r.output for r in self.step_output_records(run_id, step_id)]

    def write_outputs(self, run_id: str, step_id: str) -> Path:
        """(Re)write ``outputs/<step_id>.jsonl`` from the database, atomically.

        One line per succeeded item: ``{"item": index, "key": key, "output": ...}``.
        """
        path = self.run_dir(run_id) / "outputs" / f"{check_step_id(step_id)}.jsonl"
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".jsonl.tmp")
        with tmp.open("w", encoding="utf-8") as fh:
            for rec in self.step_output_records(run_id, step_id):
                line = {"item": rec.item_index, "key": rec.key, "output": rec.output}
                fh.write(json.dumps(line, ensure_ascii=False) + "\n")
        tmp.replace(path)
        return path

    # -- money and totals ------------------------------------------------------

    def run_spent(self, run_id: str) -> Decimal:
        """Recorded spend of the run across every session."""
        row = self._read(
            lambda c: c.execute(
                "SELECT dsum(cost_usd) FROM usage WHERE run_id = ?", (run_id,)
            ).fetchone()
        )
        return Decimal(row[0] or "0")

    def spend_since(
        self,
        since: datetime,
        *,
        pipeline: str | None = None,
        tag: tuple[str, str] | None = None,
        exclude_run: str | None = None,
    ) -> Decimal:
        """Money recorded since ``since`` by runs of ``pipeline`` and/or with ``tag``."""
        scope, args = self._scope(pipeline, tag, exclude_run)
        sql = "SELECT dsum(u.cost_usd) FROM usage u JOIN runs r USING (run_id)"
        sql += " WHERE u.recorded_at >= ?" + scope
        row = self._read(lambda c: c.execute(sql, (timestamp(since), *args)).fetchone())
        return Decimal(row[0] or "0")

    def reserved_since(
        self,
        since: datetime,
        *,
        pipeline: str | None = None,
        tag: tuple[str, str] | None = None,
        exclude_run: str | None = None,
    ) -> Decimal:
        """Upper bounds of requests dispatched since ``since`` and still in flight.

        What running processes have committed but not yet recorded: a period budget
        counts it so that it holds across concurrent runs.
        """
        scope, args = self._scope(pipeline, tag, exclude_run)
        sql = "SELECT dsum(q.reserved_usd) FROM requests q JOIN runs r USING (run_id)"
        sql += " WHERE q.status = 'in_flight' AND q.dispatched_at >= ?" + scope
        row = self._read(lambda c: c.execute(sql, (timestamp(since), *args)).fetchone())
        return Decimal(row[0] or "0")

    @staticmethod
    def _scope(
        pipeline: str | None, tag: tuple[str, str] | None, exclude_run: str | None
    ) -> tuple[str, list[str]]:
        sql, args = "", list[str]()
        if pipeline is not None:
            sql, args = sql + " AND r.pipeline = ?", [*args, pipeline]
        if tag is not None:
            sql += (
                " AND EXISTS (SELECT 1 FROM run_tags t WHERE t.run_id = r.run_id"
                " AND t.key = ? AND t.value = ?)"
            )
            args = [*args, tag[0], tag[1]]
        if exclude_run is not None:
            sql, args = sql + " AND r.run_id != ?", [*args, exclude_run]
        return sql, args

    def step_totals(self, run_id: str) -> list[StepTotals]:
        """Per step: planned and seen requests, outcome counts, usage and cost."""

        def query(c: sqlite3.Connection) -> list[StepTotals]:
            plans = {
                s: (n, to_decimal(e), to_decimal(m))
                for s, n, e, m in c.execute(
                    "SELECT step_id, requests, plan_cost_expected, plan_cost_max FROM steps"
                    " WHERE run_id = ?",
                    (run_id,),
                ).fetchall()
            }
            counts: dict[str, dict[str, int]] = {}
            for s, status, n in c.execute(
                "SELECT step_id, status, count(*) FROM requests WHERE run_id = ?"
                " GROUP BY step_id, status",
                (run_id,),
            ).fetchall():
                counts.setdefault(s, {})[status] = n
            usage: dict[str, tuple[TokenUsage, Decimal]] = {}
            for s, i, w5, w1, r, o, cost in c.execute(
                f"SELECT step_id, {', '.join(f'sum({x})' for x in _USAGE_COLS.split(', '))},"
                " dsum(cost_usd) FROM usage WHERE run_id = ? GROUP BY step_id",
                (run_id,),
            ).fetchall():
                tokens = TokenUsage(
                    input=i, cache_write_5m=w5, cache_write_1h=w1, cache_read=r, output=o
                )
                usage[s] = (tokens, Decimal(cost))
            out = []
            for step_id in self.step_ids(run_id):
                planned, expected, maximum = plans.get(step_id, (0, None, None))
                n = counts.get(step_id, {})
                tokens, cost = usage.get(step_id, (TokenUsage(), ZERO))
                out.append(
                    StepTotals(
                        step_id=step_id, planned_requests=planned,
                        requests=max(planned, sum(n.values())),
                        succeeded=n.get("succeeded", 0), failed=n.get("failed", 0),
                        skipped=n.get("skipped", 0), usage=tokens, cost=cost,
                        plan_cost_expected=expected, plan_cost_max=maximum,
                    )
                )  # fmt: skip
            return out

        return self._read(query)

    def summary(self, run_id: str, *, baseline: ModelInfo | None = None) -> RunSummary:
        """The run summary (DESIGN.md section 1) across every session of the run."""
        return build_summary(self, run_id, baseline=baseline)


def _run_record(r: dict[str, Any], tags: dict[str, str]) -> RunRecord:
    return RunRecord(
        run_id=r["run_id"], pipeline=r["pipeline"], policy=r["policy"],
        pipeline_path=r["pipeline_path"], policy_path=r["policy_path"],
        plan_hash=r["plan_hash"], status=r["status"],
        started_at=schema.parse_timestamp(r["started_at"]),
        ended_at=schema.parse_timestamp(r["ended_at"]) if r["ended_at"] else None,
        sessions=r["sessions"], tags=tags,
        budget_limit=to_decimal(r["budget_limit"]),
        plan_cost_expected=to_decimal(r["plan_cost_expected"]),
        plan_cost_max=to_decimal(r["plan_cost_max"]),
        plan_cost_baseline=to_decimal(r["plan_cost_baseline"]),
        unrecorded_usd=Decimal(r["unrecorded_usd"]),
    )  # fmt: skip


def _dump(output: JsonValue) -> str | None:
    return None if output is None else json.dumps(output, ensure_ascii=False)
