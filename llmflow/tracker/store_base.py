"""Plumbing shared by the run store's parts: connection, lock, transactions, clock."""

from __future__ import annotations

import contextlib
import sqlite3
import threading
from collections.abc import Callable, Iterator
from datetime import datetime
from pathlib import Path
from typing import TypeVar

from llmflow.errors import RunStoreError
from llmflow.tracker.records import check_run_id
from llmflow.tracker.schema import timestamp

_T = TypeVar("_T")


class StoreBase:
    """One SQLite connection behind a re-entrant lock; every write is one transaction."""

    def __init__(
        self, state_dir: Path, conn: sqlite3.Connection, clock: Callable[[], datetime]
    ) -> None:
        self.state_dir = state_dir
        self._conn = conn
        self._clock = clock
        self._lock = threading.RLock()
        self._run_locks: dict[str, int] = {}

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
