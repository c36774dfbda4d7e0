"""The SQLite database's checkpoints run on a thread of their own."""

from __future__ import annotations

import sqlite3
import threading
import time
from pathlib import Path

from llmflow.tracker.db import SqliteDatabase
from llmflow.tracker.schema import connect_sqlite


def _threads() -> set[str]:
    return {t.name for t in threading.enumerate()}


def test_a_writing_connection_checkpoints_on_its_own_thread_and_stops_it_on_close(
    tmp_path: Path,
) -> None:
    path = tmp_path / "runs.db"
    db = connect_sqlite(path)  # its schema transaction is a write: the thread starts
    try:
        assert "llmflow-checkpoint" in _threads()
        # The writer never checkpoints itself: no commit waits for an fsync.
        assert db.conn.execute("PRAGMA wal_autocheckpoint").fetchone()[0] == 0
        time.sleep(1.5)  # the schema's pages are copied: the database file settles
        before = path.stat().st_size
        with db.transaction() as c:
            c.executemany("INSERT INTO meta (key, value) VALUES (?, ?)",
                          [(f"k{i}", "v" * 500) for i in range(2000)])  # fmt: skip
        assert path.stat().st_size == before  # the commit wrote the WAL only
        deadline = time.monotonic() + 10
        while path.stat().st_size < before + 1_000_000 and time.monotonic() < deadline:
            time.sleep(0.1)
        assert path.stat().st_size >= before + 1_000_000  # the thread copied the WAL in
    finally:
        db.close()
    assert "llmflow-checkpoint" not in _threads()
    with sqlite3.connect(path) as conn:
        assert conn.execute("SELECT count(*) FROM meta WHERE key LIKE 'k%'").fetchone()[0] == 2000


def test_a_database_in_memory_keeps_the_automatic_checkpoint() -> None:
    db = SqliteDatabase(sqlite3.connect(":memory:", isolation_level=None), ":memory:")
    with db.transaction() as c:
        c.execute("CREATE TABLE t (x)")
    assert "llmflow-checkpoint" not in _threads()
    db.close()
