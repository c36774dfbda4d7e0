"""The run store's two databases behind one small protocol: SQLite and PostgreSQL.

The store's SQL is written once, with ``?`` placeholders and the ``dsum`` aggregate
(an exact Decimal sum). :class:`SqliteDatabase` runs it as written (stdlib ``sqlite3``,
WAL; ``dsum`` is registered by :mod:`llmflow.tracker.schema`); :class:`PostgresDatabase`
(psycopg 3) translates it once per statement text: ``?`` → ``%s``, ``dsum(`` →
``sum(`` over ``NUMERIC`` columns. The few things that differ are properties of the
database: :attr:`Database.for_update` (row locks) and :attr:`Database.skip_locked`.

Money is ``TEXT`` (decimal strings) in SQLite and ``NUMERIC`` in PostgreSQL; readers
take either with ``Decimal(value)``. Timestamps are fixed-width UTC ISO 8601 text in
both, so they compare correctly as text.

A write is one transaction: ``BEGIN IMMEDIATE`` on SQLite (one writer at a time: every
check-and-reserve is atomic across processes), a transaction with row locks
(``SELECT ... FOR UPDATE`` on the budget counters) on PostgreSQL.

SQLite checkpoints (copying the WAL into the database, with an fsync) run on a thread of
their own (:class:`_Checkpointer`) once a connection writes, not inside the commit that
crosses the WAL's threshold: a commit then never waits for the disk, and the event loop
that commits is never held up for the tens of milliseconds an fsync can take.
"""

from __future__ import annotations

import contextlib
import re
import sqlite3
import threading
from collections.abc import Iterable, Iterator, Sequence
from typing import Any, Literal, Protocol
from urllib.parse import urlsplit, urlunsplit

from llmflow.errors import RunStoreError

Dialect = Literal["sqlite", "postgresql"]


class Rows(Protocol):
    """What ``execute`` returns: a DB-API cursor's reading side."""

    @property
    def description(self) -> Any: ...
    def fetchone(self) -> Any: ...
    def fetchall(self) -> list[Any]: ...


class Cursor(Protocol):
    """Statements within one transaction (or one read)."""

    def execute(self, sql: str, args: Sequence[Any] = ()) -> Rows: ...
    def executemany(self, sql: str, rows: Iterable[Sequence[Any]]) -> None: ...


class Database(Protocol):
    """A run store database: transactions, reads, and the dialect's few differences."""

    dialect: Dialect
    location: str  # a path, or a URL without its password: safe to print

    @property
    def for_update(self) -> str: ...
    @property
    def skip_locked(self) -> str: ...
    def transaction(self) -> contextlib.AbstractContextManager[Cursor]: ...
    def reading(self) -> contextlib.AbstractContextManager[Cursor]: ...
    def close(self) -> None: ...


def redact(url: str) -> str:
    """``url`` without its password, for messages and logs."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    host = parts.hostname or ""
    if parts.port is not None:
        host += f":{parts.port}"
    netloc = f"{parts.username}:***@{host}" if parts.username else host
    return urlunsplit(parts._replace(netloc=netloc))


def is_url(store: str) -> bool:
    """Whether ``store`` names a PostgreSQL server rather than a directory."""
    return store.startswith(("postgresql://", "postgres://"))


class SqliteDatabase:
    """One ``sqlite3`` connection (autocommit mode, explicit transactions) behind a lock."""

    dialect: Dialect = "sqlite"
    for_update = ""
    skip_locked = ""

    def __init__(self, conn: sqlite3.Connection, location: str) -> None:
        self.conn = conn
        self.location = location
        self._lock = threading.RLock()
        self._checkpointer: _Checkpointer | None = None

    @contextlib.contextmanager
    def transaction(self) -> Iterator[Cursor]:
        with self._lock:
            conn = self.conn
            if self._checkpointer is None:
                self._checkpointer = _Checkpointer.start_for(conn)
            try:
                conn.execute("BEGIN IMMEDIATE")
                try:
                    yield _SqliteCursor(conn)
                except BaseException:
                    conn.execute("ROLLBACK")
                    raise
                conn.execute("COMMIT")
            except sqlite3.Error as exc:
                if conn.in_transaction:
                    conn.execute("ROLLBACK")
                raise RunStoreError(f"run store write failed ({self.location}): {exc}") from exc

    @contextlib.contextmanager
    def reading(self) -> Iterator[Cursor]:
        with self._lock:
            try:
                yield _SqliteCursor(self.conn)
            except sqlite3.Error as exc:
                raise RunStoreError(f"run store read failed ({self.location}): {exc}") from exc

    def close(self) -> None:
        with self._lock:
            if self._checkpointer is not None:
                self._checkpointer.stop()
            self.conn.close()


class _Checkpointer:
    """Checkpoints one SQLite database's WAL from a thread with its own connection.

    The writing connection's automatic checkpoint is turned off; this thread runs a
    ``PASSIVE`` checkpoint (which never blocks readers or writers) every
    :data:`INTERVAL` seconds when the database changed. Each checkpoint fsyncs, and
    an fsync stalls concurrent writes to the same disk (measured: 30-160 ms commits
    at the automatic threshold's rate), so they are few: the WAL holds about a
    second of writes. Other processes writing the same store keep their own
    automatic checkpoints (or their own thread).
    """

    INTERVAL = 1.0  # seconds

    def __init__(self, conn: sqlite3.Connection) -> None:
        self._conn = conn
        self._version: object = None
        self._stopped = threading.Event()
        self._thread = threading.Thread(target=self._run, name="llmflow-checkpoint", daemon=True)

    @classmethod
    def start_for(cls, writer: sqlite3.Connection) -> _Checkpointer | None:
        """A running checkpointer for ``writer``'s database file (None in memory, or when
        a second connection cannot be opened: the automatic checkpoint then stays on)."""
        listed = writer.execute("PRAGMA database_list").fetchall()
        path = next((str(row[2]) for row in listed if row[1] == "main"), "")
        if not path:
            return None
        try:
            conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
            conn.execute("PRAGMA busy_timeout = 1000")
        except sqlite3.Error:
            return None
        checkpointer = cls(conn)
        writer.execute("PRAGMA wal_autocheckpoint = 0")
        checkpointer._thread.start()
        return checkpointer

    def _run(self) -> None:
        while not self._stopped.wait(self.INTERVAL):
            self.checkpoint()

    def checkpoint(self) -> None:
        with contextlib.suppress(sqlite3.Error):
            version = self._conn.execute("PRAGMA data_version").fetchone()
            if version != self._version:
                self._conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchall()
                self._version = version

    def stop(self) -> None:
        """Stop the thread after its current checkpoint, checkpoint once more, close."""
        self._stopped.set()
        self._thread.join()
        self.checkpoint()
        self._conn.close()


class _SqliteCursor:
    __slots__ = ("_conn",)

    def __init__(self, conn: sqlite3.Connection) -> None:
        self._conn = conn

    def execute(self, sql: str, args: Sequence[Any] = ()) -> Rows:
        return self._conn.execute(sql, args)

    def executemany(self, sql: str, rows: Iterable[Sequence[Any]]) -> None:
        self._conn.executemany(sql, rows)


_PLACEHOLDER = re.compile(r"\?")
_DSUM = re.compile(r"\bdsum\(")


def to_postgres(sql: str) -> str:
    """The store's portable SQL in psycopg's dialect (``%s`` placeholders, ``sum``)."""
    return _DSUM.sub("sum(", _PLACEHOLDER.sub("%s", sql.replace("%", "%%")))


class PostgresDatabase:
    """One psycopg 3 connection (autocommit; explicit transactions) behind a lock."""

    dialect: Dialect = "postgresql"
    for_update = " FOR UPDATE"
    skip_locked = " FOR UPDATE SKIP LOCKED"

    def __init__(self, conn: Any, location: str) -> None:
        self.conn = conn
        self.location = location
        self._lock = threading.RLock()
        self._sql: dict[str, str] = {}

    @classmethod
    def connect(cls, url: str) -> PostgresDatabase:
        """Connect to ``url``; RunStoreError when psycopg is missing or the server refuses."""
        try:
            import psycopg
        except ImportError as exc:  # pragma: no cover - psycopg is a dependency
            raise RunStoreError(
                "a postgresql:// store needs psycopg 3: pip install 'psycopg[binary]'"
            ) from exc
        try:
            conn = psycopg.connect(url, autocommit=True, connect_timeout=10)
        except psycopg.Error as exc:
            raise RunStoreError(f"cannot connect to {redact(url)}: {exc}") from exc
        return cls(conn, redact(url))

    def translate(self, sql: str) -> str:
        text = self._sql.get(sql)
        if text is None:
            text = self._sql[sql] = to_postgres(sql)
        return text

    @contextlib.contextmanager
    def transaction(self) -> Iterator[Cursor]:
        import psycopg

        with self._lock:
            try:
                with self.conn.transaction():
                    yield _PostgresCursor(self)
            except psycopg.Error as exc:
                raise RunStoreError(f"run store write failed ({self.location}): {exc}") from exc

    @contextlib.contextmanager
    def reading(self) -> Iterator[Cursor]:
        import psycopg

        with self._lock:
            try:
                yield _PostgresCursor(self)
            except psycopg.Error as exc:
                raise RunStoreError(f"run store read failed ({self.location}): {exc}") from exc

    def close(self) -> None:
        with self._lock:
            self.conn.close()


class _PostgresCursor:
    __slots__ = ("_db",)

    def __init__(self, db: PostgresDatabase) -> None:
        self._db = db

    def execute(self, sql: str, args: Sequence[Any] = ()) -> Rows:
        cursor: Rows = self._db.conn.execute(self._db.translate(sql), tuple(args))
        return cursor

    def executemany(self, sql: str, rows: Iterable[Sequence[Any]]) -> None:
        with self._db.conn.cursor() as cursor:
            cursor.executemany(self._db.translate(sql), [tuple(r) for r in rows])
