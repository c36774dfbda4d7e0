"""Plumbing shared by the run store's parts: the database, transactions, the clock."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Iterator
from datetime import datetime
from pathlib import Path
from typing import TypeVar

from llmflow.errors import RunStoreError
from llmflow.lazy import lazy_logger
from llmflow.tracker.db import Cursor, Database
from llmflow.tracker.records import check_run_id
from llmflow.tracker.schema import timestamp

_T = TypeVar("_T")
_log = lazy_logger("llmflow.tracker.store")

#: How often a write that lost a deadlock or serialisation race is tried again.
WRITE_ATTEMPTS = 8


class StoreBase:
    """One database (SQLite or PostgreSQL); every write is one transaction.

    ``runs_dir`` holds each run's directory (outputs JSONL, ``summary.json``): the
    store's own directory for SQLite, a local directory for a PostgreSQL store.
    """

    def __init__(self, runs_dir: Path, db: Database, clock: Callable[[], datetime]) -> None:
        self.state_dir = runs_dir
        self._db = db
        self._clock = clock

    @property
    def db(self) -> Database:
        return self._db

    @property
    def location(self) -> str:
        """Where the store is: a database path, or a URL without its password."""
        return self._db.location

    @property
    def shared(self) -> bool:
        """Whether several workers can run one run (PostgreSQL)."""
        return self._db.dialect == "postgresql"

    def run_dir(self, run_id: str) -> Path:
        return self.state_dir / "runs" / check_run_id(run_id)

    def journal_mode(self) -> str:
        return str(self._read(lambda c: c.execute("PRAGMA journal_mode").fetchone()[0]))

    # -- plumbing --------------------------------------------------------------

    def now(self) -> datetime:
        """The store's clock (UTC)."""
        return self._clock()

    def day(self) -> str:
        """Today's UTC day, as budget scopes name it."""
        return self._clock().strftime("%Y-%m-%d")

    def _now(self) -> str:
        return timestamp(self._clock())

    @contextlib.contextmanager
    def _tx(self) -> Iterator[Cursor]:
        with self._db.transaction() as c:
            yield c

    def _write(self, fn: Callable[[Cursor], _T]) -> _T:
        """Run ``fn`` in one transaction, again if it lost a deadlock or serialisation
        race to another writer (``fn`` must do nothing but database work)."""
        for attempt in range(1, WRITE_ATTEMPTS + 1):
            try:
                with self._db.transaction() as c:
                    return fn(c)
            except RunStoreError as exc:
                if attempt == WRITE_ATTEMPTS or not _transient(exc):
                    raise
                _log.info("store.write_retry", attempt=attempt, error=str(exc.__cause__))
                time.sleep(0.01 * attempt)
        raise AssertionError("unreachable")  # pragma: no cover

    def _read(self, fn: Callable[[Cursor], _T]) -> _T:
        with self._db.reading() as c:
            return fn(c)


def _transient(exc: RunStoreError) -> bool:
    """A PostgreSQL deadlock or serialisation failure (SQLSTATE 40P01, 40001)."""
    return getattr(exc.__cause__, "sqlstate", None) in ("40P01", "40001")
