"""Several workers on one run: leases, claims with SKIP LOCKED, and taking back the dead's.

On a PostgreSQL store the same ``llmflow run --run-id X`` may be started on several
machines at once. Each process registers as a worker with a lease it renews
(``workers.lease_until``). Before reserving, a worker claims the requests it will send:
one ``UPDATE ... WHERE key IN (SELECT ... FOR UPDATE SKIP LOCKED)``, so two workers never
take the same request and never wait on each other's rows. A request is claimable when
it is pending (or failed or skipped in an earlier session) and no live worker holds it.

A worker whose lease expired is dead: its claims go back to pending, its in-flight
sync requests too, their reserved upper bounds moving to ``unrecorded`` (they may have
been billed), and its batches are taken over by whoever polls them next. Until then its
reservations keep counting against every limit.

On SQLite one process runs a run (a file lock): the same calls work, with nobody else
to contend with.
"""

from __future__ import annotations

import os
import secrets
import socket
from collections.abc import Sequence
from datetime import datetime, timedelta

from llmflow.tracker.db import Cursor
from llmflow.tracker.schema import timestamp
from llmflow.tracker.store_base import StoreBase
from llmflow.tracker.store_budget import Counters, RunScopes
from llmflow.tracker.store_ops import lose_in_flight

#: How long a worker's claims hold without renewal (``LLMFLOW_WORKER_LEASE_SECONDS``).
LEASE_SECONDS = float(os.environ.get("LLMFLOW_WORKER_LEASE_SECONDS", "60"))
_CHUNK = 500

#: Rows held by a live worker of the run other than ``me`` (``?`` run_id, now).
_LIVE = "SELECT worker_id FROM workers WHERE run_id = ? AND ended_at IS NULL AND lease_until >= ?"


def new_worker_id() -> str:
    """``host:pid:random``: unique, and it says where the worker runs."""
    return f"{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(3)}"


class WorkersMixin(StoreBase):
    """Workers of a run: leases, claims, reclaiming what dead workers held."""

    def register_worker(self, run_id: str, worker_id: str, lease: float = LEASE_SECONDS) -> None:
        """Start (or restart) ``worker_id`` on the run with a fresh lease."""
        now = self._clock()
        with self._tx() as c:
            c.execute(
                "INSERT INTO workers (run_id, worker_id, host, pid, started_at, lease_until)"
                " VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (run_id, worker_id) DO UPDATE SET"
                " lease_until = excluded.lease_until, ended_at = NULL",
                (run_id, worker_id, socket.gethostname(), os.getpid(), timestamp(now),
                 _until(now, lease)),
            )  # fmt: skip

    def renew_lease(self, run_id: str, worker_id: str, lease: float = LEASE_SECONDS) -> None:
        with self._tx() as c:
            c.execute(
                "UPDATE workers SET lease_until = ? WHERE run_id = ? AND worker_id = ?",
                (_until(self._clock(), lease), run_id, worker_id),
            )

    def end_worker(self, run_id: str, worker_id: str, *, release_claims: bool = False) -> None:
        """The worker is done with the run; with ``release_claims`` (an interrupted
        worker) its claimed-but-unsent requests go back to pending for the others."""
        with self._tx() as c:
            c.execute(
                "UPDATE workers SET ended_at = ? WHERE run_id = ? AND worker_id = ?",
                (self._now(), run_id, worker_id),
            )
            if release_claims:
                c.execute(
                    "UPDATE requests SET worker_id = NULL WHERE run_id = ? AND worker_id = ?"
                    " AND status = 'pending'",
                    (run_id, worker_id),
                )

    def live_workers(self, run_id: str, *, besides: str | None = None) -> list[str]:
        """Workers of the run whose lease holds and who have not ended."""
        rows = self._read(lambda c: c.execute(_LIVE, (run_id, self._now())).fetchall())
        return [w for (w,) in rows if w != besides]

    def claim(self, run_id: str, rows: Sequence[tuple[str, str, int]], worker_id: str) -> set[str]:
        """Claim what is claimable of ``rows`` ``(step_id, key, item_index)`` for
        ``worker_id``; the keys it now holds.

        Missing rows are created pending (``ON CONFLICT DO NOTHING``), then taken with
        ``FOR UPDATE SKIP LOCKED``: rows another worker is claiming right now are skipped,
        never waited for.
        """
        now = self._now()
        claimed: set[str] = set()
        for start in range(0, len(rows), _CHUNK):
            part = list(rows[start : start + _CHUNK])

            def take(c: Cursor, part: list[tuple[str, str, int]] = part) -> set[str]:
                return self._claim(c, run_id, part, worker_id, now)

            claimed |= self._write(take)
        return claimed

    def _claim(
        self, c: Cursor, run_id: str, rows: list[tuple[str, str, int]], worker_id: str, now: str
    ) -> set[str]:
        c.executemany(
            "INSERT INTO requests (run_id, key, step_id, item_index, status)"
            " VALUES (?, ?, ?, ?, 'pending') ON CONFLICT (run_id, key) DO NOTHING",
            [(run_id, key, step_id, index) for step_id, key, index in rows],
        )
        keys = [key for _, key, _ in rows]
        marks = ", ".join("?" for _ in keys)
        found = c.execute(
            "SELECT key FROM requests WHERE run_id = ? AND key IN"
            f" ({marks}) AND status IN ('pending', 'failed', 'skipped')"
            f" AND (worker_id IS NULL OR worker_id = ? OR worker_id NOT IN ({_LIVE}))"
            f"{self._db.skip_locked}",
            (run_id, *keys, worker_id, run_id, now),
        ).fetchall()
        taken = [k for (k,) in found]
        if taken:
            c.executemany(
                "UPDATE requests SET worker_id = ? WHERE run_id = ? AND key = ?",
                [(worker_id, run_id, k) for k in taken],
            )
        return set(taken)

    def step_holds(self, run_id: str, step_id: str, worker_id: str) -> tuple[int, int]:
        """Requests of the step that other workers hold: ``(by live ones, by dead ones)``
        (claimed but unsent, or in flight)."""
        now = self._now()

        def query(c: Cursor) -> tuple[int, int]:
            live = {w for (w,) in c.execute(_LIVE, (run_id, now)).fetchall()}
            rows = c.execute(
                "SELECT worker_id, count(*) FROM requests WHERE run_id = ? AND step_id = ?"
                " AND worker_id IS NOT NULL AND worker_id <> ?"
                " AND (status = 'in_flight' OR status = 'pending') GROUP BY worker_id",
                (run_id, step_id, worker_id),
            ).fetchall()
            by_live = sum(n for w, n in rows if w in live)
            return by_live, sum(n for w, n in rows if w not in live)

        return self._read(query)

    def reclaim_dead(self, run_id: str, scopes: RunScopes) -> int:
        """Take back what dead workers held: claims to pending; in-flight sync requests to
        pending, their reservations to unrecorded. Returns how many requests."""
        op = _ReclaimOp(run_id, scopes)
        result: int = self.commit([op])[0]  # type: ignore[attr-defined]
        return result

    def set_stop(self, run_id: str, reason: str, detail: str | None) -> None:
        """Record why the run stopped (the first worker's reason stands)."""
        with self._tx() as c:
            c.execute(
                "UPDATE runs SET stop_reason = ?, stop_detail = ? WHERE run_id = ?"
                " AND stop_reason IS NULL",
                (reason, detail, run_id),
            )

    def stop_of(self, run_id: str) -> tuple[str | None, str | None]:
        """``(stop_reason, stop_detail)`` of the run, as any of its workers recorded it."""
        row = self._read(
            lambda c: c.execute(
                "SELECT stop_reason, stop_detail FROM runs WHERE run_id = ?", (run_id,)
            ).fetchone()
        )
        return (row[0], row[1]) if row else (None, None)


class _ReclaimOp:
    """Within one transaction: find dead workers' rows, release them, move their money."""

    def __init__(self, run_id: str, scopes: RunScopes) -> None:
        self.run_id, self.scopes = run_id, scopes

    def scope_keys(self, day: str) -> list[str]:
        return self.scopes.keys(day)

    def apply(self, c: Cursor, counters: Counters, day: str, now: str) -> int:
        dead = f" AND worker_id IS NOT NULL AND worker_id NOT IN ({_LIVE})"
        args = (self.run_id, self.run_id, now)
        lost = lose_in_flight(c, counters, self.scopes, day, dead, args)
        claimed = c.execute(
            "SELECT count(*) FROM requests WHERE run_id = ? AND status = 'pending'" + dead, args
        ).fetchone()[0]
        c.execute(
            "UPDATE requests SET worker_id = NULL WHERE run_id = ? AND status = 'pending'" + dead,
            args,
        )
        c.execute(
            "UPDATE batches SET worker_id = NULL WHERE run_id = ? AND ended_at IS NULL" + dead,
            args,
        )
        return lost + int(claimed)


def _until(now: datetime, lease: float) -> str:
    return timestamp(now + timedelta(seconds=lease))
