"""The run store's schema (one text for SQLite and PostgreSQL) and how a store is opened.

Money is stored exactly: TEXT decimal strings summed with the ``dsum`` aggregate this
module registers on SQLite, ``NUMERIC`` summed by ``sum`` on PostgreSQL (see
:mod:`llmflow.tracker.db`); no amount ever passes through a float. Timestamps are UTC
ISO 8601 strings of fixed width, so they compare correctly as text.

Tables
    meta             key/value, holds ``schema_version`` (older stores are upgraded on
                     open: :mod:`llmflow.tracker.migrations`)
    runs             one row per run id (pipeline, policy, plan fingerprint and totals,
                     status, per-run budget limit, money possibly spent but unrecorded,
                     and why the run stopped, shared by every worker of the run)
    run_tags         the run's tag labels (key, value), for per-tag period budgets
    steps            the plan of each step of a run: planned requests and costs
    requests         one row per request key: state, model/tier/mode, last usage and
                     output; ``reserved_usd`` is the upper bound reserved at dispatch,
                     ``reserved_on`` the UTC day whose budget counters hold it, and
                     ``worker_id`` the worker that claimed it
    usage            the ledger: one row per billed response (append-only), indexed
                     per (run, recorded_at)
    usage_totals     the ledger summed per (run, step, tier, model, mode), and
    usage_seconds    per (run, UTC second): written with every usage row, in the same
                     transaction; reports read these (:mod:`llmflow.tracker.store_rollup`)
    budget_counters  the budget's authority: spent, reserved (in flight) and unrecorded
                     money per scope (a run; a day or month of a pipeline or of a tag
                     label). Every reservation is a check-and-update of these rows in
                     one transaction (:mod:`llmflow.tracker.store_budget`)
    batches          batches, from the intent to create one (``creating``) to ended
    workers          processes working on a run, each with a lease it renews
    alerts           budget alerts fired, at most one per limit name per run

``requests`` and ``usage`` record a response's tokens by billing category plus
``thinking_tokens`` (the part of ``output_tokens`` spent thinking, not billed apart),
and the ``speed`` and ``inference_geo`` the API reported.
"""

from __future__ import annotations

import sqlite3
import time
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path

from llmflow.catalog import ZERO, format_usd
from llmflow.tracker.db import Cursor, Database, Dialect, PostgresDatabase, SqliteDatabase

SCHEMA_VERSION = 6

DDL = """
CREATE TABLE IF NOT EXISTS meta (
    key   TEXT PRIMARY KEY,
    value TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS runs (
    run_id             TEXT PRIMARY KEY,
    pipeline           TEXT NOT NULL,
    pipeline_path      TEXT,
    policy             TEXT NOT NULL,
    policy_path        TEXT,
    plan_hash          TEXT,
    status             TEXT NOT NULL CHECK (status IN
        ('running','succeeded','partial','budget_stopped','failed','interrupted','pending')),
    started_at         TEXT NOT NULL,
    ended_at           TEXT,
    sessions           INTEGER NOT NULL DEFAULT 1,
    budget_limit       {money},
    plan_cost_expected {money},
    plan_cost_max      {money},
    plan_cost_baseline {money},
    unrecorded_usd     {money} NOT NULL DEFAULT '0',
    stop_reason        TEXT,
    stop_detail        TEXT,
    report_settings    TEXT
);
CREATE INDEX IF NOT EXISTS runs_pipeline ON runs (pipeline, started_at);
CREATE TABLE IF NOT EXISTS run_tags (
    run_id TEXT NOT NULL REFERENCES runs (run_id),
    key    TEXT NOT NULL,
    value  TEXT NOT NULL,
    PRIMARY KEY (run_id, key)
);
CREATE INDEX IF NOT EXISTS run_tags_label ON run_tags (key, value);
CREATE TABLE IF NOT EXISTS steps (
    run_id             TEXT NOT NULL REFERENCES runs (run_id),
    step_id            TEXT NOT NULL,
    position           INTEGER NOT NULL,
    requests           INTEGER NOT NULL DEFAULT 0,
    model              TEXT,
    tier               TEXT,
    mode               TEXT,
    plan_cost_expected {money},
    plan_cost_max      {money},
    PRIMARY KEY (run_id, step_id)
);
CREATE TABLE IF NOT EXISTS requests (
    run_id         TEXT NOT NULL REFERENCES runs (run_id),
    key            TEXT NOT NULL,
    step_id        TEXT NOT NULL,
    item_index     INTEGER NOT NULL,
    status         TEXT NOT NULL CHECK (status IN
        ('pending','in_flight','succeeded','failed','skipped')),
    attempts       INTEGER NOT NULL DEFAULT 0,
    model          TEXT,
    tier           TEXT,
    mode           TEXT CHECK (mode IS NULL OR mode IN ('sync','batch')),
    batch_id       TEXT,
    reserved_usd   {money},
    request_id     TEXT,
    service_tier   TEXT,
    input_tokens   INTEGER NOT NULL DEFAULT 0,
    cache_write_5m INTEGER NOT NULL DEFAULT 0,
    cache_write_1h INTEGER NOT NULL DEFAULT 0,
    cache_read     INTEGER NOT NULL DEFAULT 0,
    output_tokens  INTEGER NOT NULL DEFAULT 0,
    cost_usd       {money} NOT NULL DEFAULT '0',
    stop_reason    TEXT,
    error          TEXT,
    output_json    TEXT,
    dispatched_at  TEXT,
    completed_at   TEXT,
    thinking_tokens INTEGER NOT NULL DEFAULT 0,
    speed          TEXT,
    inference_geo  TEXT,
    worker_id      TEXT,
    reserved_on    TEXT,
    PRIMARY KEY (run_id, key)
);
CREATE INDEX IF NOT EXISTS requests_step ON requests (run_id, step_id, item_index);
CREATE INDEX IF NOT EXISTS requests_batch ON requests (run_id, batch_id);
CREATE TABLE IF NOT EXISTS usage (
    id             {serial},
    run_id         TEXT NOT NULL REFERENCES runs (run_id),
    step_id        TEXT NOT NULL,
    key            TEXT NOT NULL,
    item_index     INTEGER NOT NULL,
    attempt        INTEGER NOT NULL,
    model          TEXT NOT NULL,
    tier           TEXT,
    mode           TEXT NOT NULL CHECK (mode IN ('sync','batch')),
    service_tier   TEXT,
    request_id     TEXT,
    input_tokens   INTEGER NOT NULL,
    cache_write_5m INTEGER NOT NULL,
    cache_write_1h INTEGER NOT NULL,
    cache_read     INTEGER NOT NULL,
    output_tokens  INTEGER NOT NULL,
    cost_usd       {money} NOT NULL,
    recorded_at    TEXT NOT NULL,
    thinking_tokens INTEGER NOT NULL DEFAULT 0,
    speed          TEXT,
    inference_geo  TEXT
);
CREATE INDEX IF NOT EXISTS usage_spend ON usage (run_id, recorded_at, cost_usd);
CREATE TABLE IF NOT EXISTS batches (
    run_id       TEXT NOT NULL REFERENCES runs (run_id),
    batch_id     TEXT NOT NULL,
    step_id      TEXT NOT NULL,
    status       TEXT NOT NULL,
    submitted_at TEXT NOT NULL,
    ended_at     TEXT,
    request_keys TEXT NOT NULL,
    requests     INTEGER NOT NULL DEFAULT 0,
    worker_id    TEXT,
    PRIMARY KEY (run_id, batch_id)
);
CREATE TABLE IF NOT EXISTS alerts (
    run_id     TEXT NOT NULL REFERENCES runs (run_id),
    limit_name TEXT NOT NULL,
    limit_usd  {money} NOT NULL,
    threshold  {money} NOT NULL,
    spent_usd  {money} NOT NULL,
    at         TEXT NOT NULL,
    PRIMARY KEY (run_id, limit_name)
);
CREATE TABLE IF NOT EXISTS budget_counters (
    scope      TEXT PRIMARY KEY,
    spent      {money} NOT NULL DEFAULT '0',
    reserved   {money} NOT NULL DEFAULT '0',
    unrecorded {money} NOT NULL DEFAULT '0'
);
CREATE TABLE IF NOT EXISTS workers (
    run_id      TEXT NOT NULL REFERENCES runs (run_id),
    worker_id   TEXT NOT NULL,
    host        TEXT NOT NULL,
    pid         INTEGER NOT NULL,
    started_at  TEXT NOT NULL,
    lease_until TEXT NOT NULL,
    ended_at    TEXT,
    PRIMARY KEY (run_id, worker_id)
);
CREATE INDEX IF NOT EXISTS requests_claim ON requests (run_id, step_id, status, worker_id);
CREATE INDEX IF NOT EXISTS requests_truncated ON requests (run_id, step_id, status)
    WHERE stop_reason = 'max_tokens';
"""

#: The usage roll-ups (version 5): what reports read instead of the ledger. ``tier`` is
#: '' for a response without one (a key column is never NULL); token sums are 64-bit.
ROLLUP_DDL = """
CREATE TABLE IF NOT EXISTS usage_totals (
    id              {serial},
    run_id          TEXT NOT NULL REFERENCES runs (run_id),
    step_id         TEXT NOT NULL,
    tier            TEXT NOT NULL,
    model           TEXT NOT NULL,
    mode            TEXT NOT NULL,
    responses       {bigint} NOT NULL,
    succeeded       {bigint} NOT NULL,
    reading         {bigint} NOT NULL,
    writing         {bigint} NOT NULL,
    input_tokens    {bigint} NOT NULL,
    cache_write_5m  {bigint} NOT NULL,
    cache_write_1h  {bigint} NOT NULL,
    cache_read      {bigint} NOT NULL,
    output_tokens   {bigint} NOT NULL,
    thinking_tokens {bigint} NOT NULL,
    cost_usd        {money} NOT NULL,
    UNIQUE (run_id, step_id, tier, model, mode)
);
CREATE TABLE IF NOT EXISTS usage_seconds (
    run_id   TEXT NOT NULL REFERENCES runs (run_id),
    second   TEXT NOT NULL,
    last_at  TEXT NOT NULL,
    cost_usd {money} NOT NULL,
    PRIMARY KEY (run_id, second)
);
"""


#: What the DDL's placeholders become in each dialect.
TYPES: dict[Dialect, dict[str, str]] = {
    "sqlite": {"money": "TEXT", "serial": "INTEGER PRIMARY KEY", "bigint": "INTEGER"},
    "postgresql": {
        "money": "NUMERIC",
        "serial": "BIGINT GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY",
        "bigint": "BIGINT",
    },
}


def ddl(dialect: Dialect, text: str = DDL + ROLLUP_DDL) -> list[str]:
    """The statements of ``text`` (the whole schema) in ``dialect``."""
    text = text.format(**TYPES[dialect])
    return [statement.strip() for statement in text.split(";") if statement.strip()]


class _DecimalSum:
    """SQLite aggregate ``dsum(text)``: the exact Decimal sum, as a decimal string."""

    def __init__(self) -> None:
        self.total = ZERO

    def step(self, value: str | None) -> None:
        if value is not None:
            self.total += Decimal(value)

    def finalize(self) -> str:
        return format_usd(self.total)


def timestamp(moment: datetime) -> str:
    """Fixed-width UTC ISO 8601 text (naive datetimes are taken as UTC)."""
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.astimezone(UTC).isoformat(timespec="microseconds")


def parse_timestamp(text: str) -> datetime:
    return datetime.fromisoformat(text)


def money(value: Decimal | None) -> str | None:
    """Decimal → TEXT column value (None stays NULL)."""
    return None if value is None else format_usd(value)


def to_decimal(text: str | None) -> Decimal | None:
    return None if text is None else Decimal(text)


def connect_sqlite(path: Path, *, busy_timeout_ms: int = 10_000) -> SqliteDatabase:
    """Open (creating if needed) the database at ``path`` in WAL mode, schema current.

    A store of an older schema version is upgraded in the same transaction that
    checks it (:func:`llmflow.tracker.migrations.upgrade`).
    ``synchronous=NORMAL`` in WAL mode makes every commit survive a killed process
    (kill -9); only an OS crash or power loss could drop the last commits.
    Raises ``sqlite3.Error`` or ``ValueError`` (a schema this llmflow cannot read).
    """
    conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    try:
        conn.execute(f"PRAGMA busy_timeout = {int(busy_timeout_ms)}")
        mode = _enable_wal(conn, busy_timeout_ms / 1000)
        if str(mode).lower() != "wal":
            raise ValueError(f"cannot enable WAL journal mode on {path} (got {mode})")
        conn.execute("PRAGMA synchronous = NORMAL")
        conn.create_aggregate("dsum", 1, _DecimalSum)  # type: ignore[arg-type]
        db = SqliteDatabase(conn, str(path))
        # Foreign keys are enforced once the schema is current: an upgrade may rebuild
        # a table (and checks the keys itself before it commits).
        with db.transaction() as c:
            _apply_schema(c, db)
        conn.execute("PRAGMA foreign_keys = ON")
    except BaseException:
        conn.close()
        raise
    return db


def _enable_wal(conn: sqlite3.Connection, patience: float) -> str:
    """Switch to WAL mode. A store another process is upgrading at this moment answers
    "locked" without waiting for the busy timeout: try again until the timeout."""
    deadline = time.monotonic() + patience
    while True:
        try:
            return str(conn.execute("PRAGMA journal_mode = WAL").fetchone()[0])
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc) or time.monotonic() > deadline:
                raise
            time.sleep(0.02)


def connect_postgres(url: str) -> PostgresDatabase:
    """Connect to the PostgreSQL store at ``url``, creating or upgrading its schema.

    Concurrent first opens are serialised by a transaction-level advisory lock, so
    64 processes starting at once create the schema once.
    """
    db = PostgresDatabase.connect(url)
    try:
        with db.transaction() as c:
            c.execute("SELECT pg_advisory_xact_lock(?)", (SCHEMA_LOCK,))
            _apply_schema(c, db)
    except BaseException:
        db.close()
        raise
    return db


#: The advisory lock key that serialises schema changes on PostgreSQL.
SCHEMA_LOCK = 0x6C6C6D66  # "llmf"


def _apply_schema(c: Cursor, db: Database) -> None:
    """Create a new store at the current version, or upgrade an existing one to it."""
    c.execute("CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)")
    row = c.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone()
    if row is None:
        for statement in ddl(db.dialect):
            c.execute(statement)
        c.execute(
            "INSERT INTO meta (key, value) VALUES ('schema_version', ?)", (str(SCHEMA_VERSION),)
        )
        return
    found = int(row[0])
    if found == SCHEMA_VERSION:
        return  # current: no DDL (on PostgreSQL it would lock tables others write to)
    # imported here: the upgrades build on this module's DDL, and are seldom needed
    from llmflow.tracker.migrations import upgrade

    upgrade(c, db, found, SCHEMA_VERSION)
    for statement in ddl(db.dialect):
        c.execute(statement)
