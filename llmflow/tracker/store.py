"""The run store: SQLite (WAL) at ``<dir>/llmflow.db``, or a PostgreSQL database.

``RunStore.open(dir)`` opens the embedded store; ``RunStore.open("postgresql://...")``
a shared one, which any number of processes on any number of machines use together:
same schema, same SQL, same semantics (:mod:`llmflow.tracker.db`).

Every write is one transaction committed before the method returns, so what the
executor decides next is based on durable state: a process killed at any moment
loses at most the responses that were in flight, and a resumed run never sends a
request that already succeeded. Run directories (``<dir>/runs/<run_id>/``; for a
PostgreSQL store under ``runs_dir``, default ``.llmflow``) hold
``outputs/<step_id>.jsonl`` (rebuilt from the database in item order) and
``summary.json``. On SQLite one process runs a run, holding a ``lock`` file there
(``flock``); on PostgreSQL several workers may share it (:mod:`llmflow.tracker.workers`).

All methods are thread-safe; none blocks on the network (but PostgreSQL's).
"""

from __future__ import annotations

import os
import sqlite3
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

from llmflow.catalog import ModelInfo, TokenUsage
from llmflow.errors import RunStoreError
from llmflow.lazy import lazy_logger
from llmflow.tracker import schema
from llmflow.tracker.db import Cursor, Database, is_url, redact
from llmflow.tracker.records import (
    FinalStatus,
    Mode,
    RunInfo,
    RunRecord,
    StepPlan,
    check_run_id,
    check_step_id,
)
from llmflow.tracker.schema import money, to_decimal
from llmflow.tracker.store_budget import Counters, RunScopes
from llmflow.tracker.store_ops import lose_in_flight
from llmflow.tracker.store_queries import USAGE_SUMS, QueriesMixin
from llmflow.tracker.store_requests import RequestsMixin, token_usage
from llmflow.tracker.summary import RunSummary, build_summary
from llmflow.tracker.workers import WorkersMixin

try:  # POSIX; elsewhere runs are not protected against two concurrent processes
    import fcntl
except ImportError:  # pragma: no cover
    fcntl = None  # type: ignore[assignment]

_log = lazy_logger("llmflow.tracker.store")
DB_NAME = "llmflow.db"


@dataclass(frozen=True, slots=True)
class UsageGroup:
    """Billed responses of one step on one (tier, model, mode), from the usage ledger.

    ``reading`` and ``writing`` count the responses that read from / wrote to the
    prompt cache.
    """

    step_id: str
    tier: str | None
    model: str
    mode: Mode
    responses: int
    reading: int
    writing: int
    usage: TokenUsage
    cost: Decimal


@dataclass(frozen=True, slots=True)
class LedgerEntry:
    """One row of the append-only usage ledger: when a response was billed, and for what."""

    recorded_at: datetime
    step_id: str
    cost: Decimal


class RunStore(RequestsMixin, QueriesMixin, WorkersMixin):
    """Persistent state of every run under one state directory."""

    def __init__(self, runs_dir: Path, db: Database, clock: Callable[[], datetime]) -> None:
        super().__init__(runs_dir, db, clock)
        self._run_locks: dict[str, int] = {}
        self._scopes = {}
        self._known_scopes = set()

    @classmethod
    def open(
        cls,
        store: str | os.PathLike[str],
        *,
        clock: Callable[[], datetime] | None = None,
        runs_dir: str | os.PathLike[str] | None = None,
    ) -> RunStore:
        """Open (creating if needed) the store: a directory, or a ``postgresql://`` URL.

        ``runs_dir`` is where a PostgreSQL store's run directories go (default
        ``.llmflow``); a SQLite store keeps them beside its database.
        """
        now = clock or (lambda: datetime.now(UTC))
        if isinstance(store, str) and is_url(store):
            try:
                db: Database = schema.connect_postgres(store)
            except ValueError as exc:
                raise RunStoreError(f"cannot open run store {redact(store)}: {exc}") from exc
            return cls(Path(runs_dir or ".llmflow"), db, now)
        root = Path(store)
        try:
            (root / "runs").mkdir(parents=True, exist_ok=True)
            db = schema.connect_sqlite(root / DB_NAME)
        except (OSError, sqlite3.Error, ValueError, RunStoreError) as exc:
            raise RunStoreError(f"cannot open run store {root / DB_NAME}: {exc}") from exc
        return cls(root, db, now)

    def close(self) -> None:
        """Release run locks and close the database."""
        for run_id in list(self._run_locks):
            self._unlock(run_id)
        self._db.close()

    def __enter__(self) -> RunStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _lock_run(self, run_id: str) -> None:
        if run_id in self._run_locks or fcntl is None or self.shared:
            return
        path = self.run_dir(run_id) / "lock"
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            os.close(fd)
            raise RunStoreError(
                f"run {run_id} is being run by another process on this SQLite store; one"
                " process runs a run here (a postgresql:// store lets several workers share it)"
            ) from exc
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
                    " plan_cost_max, plan_cost_baseline, report_settings)"
                    " VALUES (?, ?, ?, ?, ?, ?, 'running', ?, ?, ?, ?, ?, ?)",
                    (run_id, info.pipeline, info.pipeline_path, info.policy, info.policy_path,
                     info.plan_hash, self._now(), money(info.budget_limit),
                     money(info.plan_cost_expected), money(info.plan_cost_max),
                     money(info.plan_cost_baseline), info.report_settings),
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
            lost = self.commit([_ResumeOp(run_id, self.scopes_of(run_id), info, self.shared)])[0]
        except BaseException:
            self._unlock(run_id)
            raise
        _log.info("run.resumed", run_id=run_id, lost_in_flight=lost, sessions=run.sessions + 1)
        return self.get_run(run_id)

    def open_run(self, run_id: str, info: RunInfo) -> tuple[RunRecord, bool]:
        """Start the run, or resume (or join) it if it exists; the flag is True then.

        Two workers starting the same run at once: one creates it, the other joins.
        """
        if self.find_run(run_id) is None:
            try:
                return self.start_run(run_id, info), False
            except RunStoreError:
                if self.find_run(run_id) is None:
                    raise
        return self.resume_run(run_id, info), True

    @staticmethod
    def _write_steps(c: Cursor, run_id: str, info: RunInfo) -> None:
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
        """Set the final status, write every step's outputs JSONL, release the lock.

        ``pending`` (batches still running, ``--detach``) is not an end: the next run of
        the id collects them."""
        with self._tx() as c:
            c.execute(
                "UPDATE runs SET status = ?, ended_at = ? WHERE run_id = ?",
                (status, self._now(), run_id),
            )
        for step_id in self.step_ids(run_id):
            self.write_outputs(run_id, step_id)
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
        def query(c: Cursor) -> list[RunRecord]:
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

    def summary(self, run_id: str, *, baseline: ModelInfo | None = None) -> RunSummary:
        """The run summary across every session of the run."""
        return build_summary(self, run_id, baseline=baseline)

    # -- read-only queries for reports -------------------------------------------

    def step_plans(self, run_id: str) -> list[StepPlan]:
        """The planned steps of the run (model, tier, mode, costs), in plan order."""
        rows = self._read(
            lambda c: c.execute(
                "SELECT step_id, requests, model, tier, mode, plan_cost_expected, plan_cost_max"
                " FROM steps WHERE run_id = ? ORDER BY position",
                (run_id,),
            ).fetchall()
        )
        return [
            StepPlan(s, n, model, tier, mode, to_decimal(e), to_decimal(m))
            for s, n, model, tier, mode, e, m in rows
        ]

    def usage_groups(self, run_id: str) -> list[UsageGroup]:
        """The usage ledger of the run summed per (step, tier, model, mode)."""
        rows = self._read(
            lambda c: c.execute(
                "SELECT step_id, tier, model, mode, count(*),"
                " sum(CASE WHEN cache_read > 0 THEN 1 ELSE 0 END),"
                " sum(CASE WHEN cache_write_5m + cache_write_1h > 0 THEN 1 ELSE 0 END),"
                f" {USAGE_SUMS}, dsum(cost_usd)"
                " FROM usage WHERE run_id = ? GROUP BY step_id, tier, model, mode"
                " ORDER BY step_id, min(id)",
                (run_id,),
            ).fetchall()
        )
        return [
            UsageGroup(
                step_id=s,
                tier=tier,
                model=model,
                mode=mode,
                responses=n,
                reading=rd,
                writing=wr,
                usage=token_usage(tokens),
                cost=Decimal(cost),
            )
            for s, tier, model, mode, n, rd, wr, *tokens, cost in rows
        ]

    def stop_reasons(self, run_id: str) -> dict[str, dict[str, int]]:
        """step id → stop_reason → number of succeeded requests that ended so."""
        rows = self._read(
            lambda c: c.execute(
                "SELECT step_id, coalesce(stop_reason, ''), count(*) FROM requests"
                " WHERE run_id = ? AND status = 'succeeded' GROUP BY step_id, stop_reason",
                (run_id,),
            ).fetchall()
        )
        out: dict[str, dict[str, int]] = {}
        for step_id, reason, n in rows:
            out.setdefault(step_id, {})[reason] = n
        return out

    def usage_ledger(self, run_id: str) -> list[LedgerEntry]:
        """Every billed response of the run in recording order (every session)."""
        rows = self._read(
            lambda c: c.execute(
                "SELECT recorded_at, step_id, cost_usd FROM usage WHERE run_id = ?"
                " ORDER BY recorded_at, id",
                (run_id,),
            ).fetchall()
        )
        return [LedgerEntry(schema.parse_timestamp(t), s, Decimal(cost)) for t, s, cost in rows]


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
        report_settings=r.get("report_settings"),
    )  # fmt: skip


class _ResumeOp:
    """Reopen a run: requests left in flight by dead workers (every sync one on SQLite,
    whose run lock proves no one else runs it; on PostgreSQL those of workers whose
    lease expired) go back to pending, their reservations to ``unrecorded``."""

    def __init__(self, run_id: str, scopes: RunScopes, info: RunInfo, shared: bool) -> None:
        self.run_id, self.scopes, self.info, self.shared = run_id, scopes, info, shared

    def scope_keys(self, day: str) -> list[str]:
        return self.scopes.keys(day)

    def apply(self, c: Cursor, counters: Counters, day: str, now: str) -> int:
        run_id = self.run_id
        dead = "" if not self.shared else (
            " AND (worker_id IS NULL OR worker_id NOT IN (SELECT worker_id FROM workers"
            " WHERE run_id = ? AND ended_at IS NULL AND lease_until >= ?))"
        )  # fmt: skip
        args: tuple[str, ...] = (run_id,) if not self.shared else (run_id, run_id, now)
        lost = lose_in_flight(c, counters, self.scopes, day, dead, args)
        info = self.info
        c.execute(
            "UPDATE runs SET status = 'running', ended_at = NULL, stop_reason = NULL,"
            " stop_detail = NULL, sessions = sessions + 1, policy = ?, policy_path = ?,"
            " plan_hash = coalesce(?, plan_hash),"
            " budget_limit = coalesce(?, budget_limit),"
            " plan_cost_expected = coalesce(?, plan_cost_expected),"
            " plan_cost_max = coalesce(?, plan_cost_max),"
            " plan_cost_baseline = coalesce(?, plan_cost_baseline),"
            " report_settings = coalesce(?, report_settings) WHERE run_id = ?",
            (info.policy, info.policy_path, info.plan_hash, money(info.budget_limit),
             money(info.plan_cost_expected), money(info.plan_cost_max),
             money(info.plan_cost_baseline), info.report_settings, run_id),
        )  # fmt: skip
        RunStore._write_steps(c, run_id, info)
        return lost
