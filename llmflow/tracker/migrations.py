"""Run store schema upgrades, applied when a store of an older version is opened.

``meta.schema_version`` says which schema a store has. A new store is created at the
current version (:data:`llmflow.tracker.schema.DDL`). An older one is upgraded in
place by :data:`STEPS`, each taking it from version *n* to *n + 1*, all inside the
transaction that opens the store: a failed step leaves the store untouched, and two
processes opening the same old store upgrade it once (the second waits, then finds it
current). Rows written before keep their meaning. A store of a newer version than
this llmflow knows is refused, never downgraded. PostgreSQL stores start at version 3
(:data:`POSTGRES_FROM`).

History
    1   the first schema
    2   ``requests`` and ``usage`` gain ``thinking_tokens`` (part of the output tokens),
        ``speed`` and ``inference_geo`` (as the API reported them; they price a response)
    3   the store holds the budget: ``budget_counters`` (built from the ledger on
        upgrade), ``requests.reserved_on`` and ``worker_id``, ``workers``, batch intents
        (``batches.requests``, ``worker_id``), ``runs.stop_reason``/``stop_detail`` and
        the run status ``pending``
    4   indexes that cover what reports sum, read in index order: ``usage_group``
        (run, step, tier, model, mode, id, tokens, cost) replaces ``usage_run`` (run,
        step), ``usage_spend`` (run, recorded_at, cost_usd) replaces ``usage_time``
        (recorded_at), and ``requests_truncated`` holds the ``max_tokens`` stops
    5   the usage roll-ups ``usage_totals`` and ``usage_seconds``, summed from the ledger
        on upgrade (:mod:`llmflow.tracker.store_rollup`): reports read them instead of
        the ledger, whose ``usage_group`` index goes
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from decimal import Decimal
from typing import Final

from llmflow.lazy import lazy_logger
from llmflow.tracker.db import Cursor, Database, Dialect
from llmflow.tracker.schema import ROLLUP_DDL, ddl
from llmflow.tracker.store_budget import RunScopes
from llmflow.tracker.store_rollup import rebuild

_log = lazy_logger("llmflow.tracker.store")

#: An upgrade step: DDL and data changes in the store's dialect, in its transaction.
Step = Callable[[Cursor, Dialect], None]

#: Columns version 2 adds to ``requests`` and ``usage`` (name → declaration).
V2_RESPONSE_COLUMNS: Final[Mapping[str, str]] = {
    "thinking_tokens": "INTEGER NOT NULL DEFAULT 0",
    "speed": "TEXT",
    "inference_geo": "TEXT",
}

#: Columns version 3 adds (table → name → declaration).
V3_COLUMNS: Final[Mapping[str, Mapping[str, str]]] = {
    "requests": {"worker_id": "TEXT", "reserved_on": "TEXT"},
    "batches": {"requests": "INTEGER NOT NULL DEFAULT 0", "worker_id": "TEXT"},
}

_RUNS_V3 = """CREATE TABLE runs_v3 (
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
    budget_limit       TEXT,
    plan_cost_expected TEXT,
    plan_cost_max      TEXT,
    plan_cost_baseline TEXT,
    unrecorded_usd     TEXT NOT NULL DEFAULT '0',
    stop_reason        TEXT,
    stop_detail        TEXT
)"""
_RUNS_V2_COLUMNS = (
    "run_id, pipeline, pipeline_path, policy, policy_path, plan_hash, status, started_at,"
    " ended_at, sessions, budget_limit, plan_cost_expected, plan_cost_max,"
    " plan_cost_baseline, unrecorded_usd"
)


def table_columns(c: Cursor, table: str) -> list[str]:
    """Column names of ``table`` (SQLite), in order."""
    return [str(row[1]) for row in c.execute(f"PRAGMA table_info({table})").fetchall()]


def add_missing_columns(c: Cursor, table: str, columns: Mapping[str, str]) -> None:
    """``ALTER TABLE ... ADD COLUMN`` for each of ``columns`` the table lacks."""
    present = set(table_columns(c, table))
    for name, declaration in columns.items():
        if name not in present:
            c.execute(f"ALTER TABLE {table} ADD COLUMN {name} {declaration}")


def _v1_to_v2(c: Cursor, dialect: Dialect) -> None:
    for table in ("requests", "usage"):
        add_missing_columns(c, table, V2_RESPONSE_COLUMNS)


def _v2_to_v3(c: Cursor, dialect: Dialect) -> None:
    # SQLite cannot change a CHECK constraint: the small runs table is rebuilt (foreign
    # keys are not enforced while a store is upgraded; they are checked at the end).
    c.execute(_RUNS_V3)
    c.execute(f"INSERT INTO runs_v3 ({_RUNS_V2_COLUMNS}) SELECT {_RUNS_V2_COLUMNS} FROM runs")
    c.execute("DROP TABLE runs")
    c.execute("ALTER TABLE runs_v3 RENAME TO runs")
    c.execute("CREATE INDEX IF NOT EXISTS runs_pipeline ON runs (pipeline, started_at)")
    for table, columns in V3_COLUMNS.items():
        add_missing_columns(c, table, columns)
    c.execute(
        "CREATE TABLE IF NOT EXISTS budget_counters (scope TEXT PRIMARY KEY,"
        " spent TEXT NOT NULL DEFAULT '0', reserved TEXT NOT NULL DEFAULT '0',"
        " unrecorded TEXT NOT NULL DEFAULT '0')"
    )
    c.execute(
        "UPDATE requests SET reserved_on = substr(dispatched_at, 1, 10)"
        " WHERE status = 'in_flight' AND dispatched_at IS NOT NULL"
    )
    _build_counters(c)
    broken = c.execute("PRAGMA foreign_key_check").fetchall()
    if broken:
        raise ValueError(f"the store's foreign keys do not hold after the upgrade: {broken[:3]}")


def _build_counters(c: Cursor) -> None:
    """The budget counters of a store that had none, from its ledger and requests."""
    tags: dict[str, list[tuple[str, str]]] = {}
    for run_id, key, value in c.execute("SELECT run_id, key, value FROM run_tags").fetchall():
        tags.setdefault(run_id, []).append((key, value))
    runs = {
        run_id: (RunScopes(run_id, pipeline, tuple(tags.get(run_id, ()))), started[:10], Decimal(u))
        for run_id, pipeline, started, u in c.execute(
            "SELECT run_id, pipeline, started_at, unrecorded_usd FROM runs"
        ).fetchall()
    }
    totals: dict[str, list[Decimal]] = {}

    def add(scopes: RunScopes, day: str, column: int, amount: str | None) -> None:
        for key in scopes.keys(day):
            totals.setdefault(key, [Decimal(0)] * 3)[column] += Decimal(amount or "0")

    for run_id, day, spent in c.execute(
        "SELECT run_id, substr(recorded_at, 1, 10), dsum(cost_usd) FROM usage"
        " GROUP BY run_id, substr(recorded_at, 1, 10)"
    ).fetchall():
        add(runs[run_id][0], day, 0, spent)
    for run_id, day, reserved in c.execute(
        "SELECT run_id, reserved_on, dsum(reserved_usd) FROM requests"
        " WHERE status = 'in_flight' AND reserved_on IS NOT NULL GROUP BY run_id, reserved_on"
    ).fetchall():
        add(runs[run_id][0], day, 1, reserved)
    for scopes, started, unrecorded in runs.values():
        if unrecorded:
            add(scopes, started, 2, str(unrecorded))
    c.executemany(
        "INSERT INTO budget_counters (scope, spent, reserved, unrecorded) VALUES (?, ?, ?, ?)",
        [(k, str(s), str(r), str(u)) for k, (s, r, u) in sorted(totals.items())],
    )


def _v3_to_v4(c: Cursor, dialect: Dialect) -> None:
    # the DDL of both dialects; dropped first, so the new indexes never coexist with the
    # old ones they replace
    for statement in (
        "DROP INDEX IF EXISTS usage_run",
        "DROP INDEX IF EXISTS usage_time",
        "CREATE INDEX IF NOT EXISTS usage_group ON usage (run_id, step_id, tier, model, mode,"
        " id, input_tokens, cache_write_5m, cache_write_1h, cache_read, output_tokens,"
        " thinking_tokens, cost_usd)",
        "CREATE INDEX IF NOT EXISTS usage_spend ON usage (run_id, recorded_at, cost_usd)",
        "CREATE INDEX IF NOT EXISTS requests_truncated ON requests (run_id, step_id, status)"
        " WHERE stop_reason = 'max_tokens'",
    ):
        c.execute(statement)


def _v4_to_v5(c: Cursor, dialect: Dialect) -> None:
    # reports read the roll-ups now: the ledger's index for their scans goes
    c.execute("DROP INDEX IF EXISTS usage_group")
    for statement in ddl(dialect, ROLLUP_DDL):
        c.execute(statement)
    rebuild(c)


def _v5_to_v6(c: Cursor, dialect: Dialect) -> None:
    # what a report prices with (baseline model and prices, thresholds), fixed at run time
    if dialect == "sqlite":
        add_missing_columns(c, "runs", {"report_settings": "TEXT"})
    else:
        c.execute("ALTER TABLE runs ADD COLUMN IF NOT EXISTS report_settings TEXT")


#: version n → the step that upgrades a store from n to n + 1.
STEPS: Final[Mapping[int, Step]] = {
    1: _v1_to_v2, 2: _v2_to_v3, 3: _v3_to_v4, 4: _v4_to_v5, 5: _v5_to_v6,
}  # fmt: skip

#: The first version of a PostgreSQL store: its upgrades start there.
POSTGRES_FROM = 3


def upgrade(c: Cursor, db: Database, found: int, target: int) -> None:
    """Upgrade a store from version ``found`` to ``target`` (within the caller's transaction).

    Raises ValueError for a version this llmflow cannot upgrade (newer, or unknown).
    """
    where = db.location
    if found > target:
        raise ValueError(
            f"{where} has run store schema {found}, newer than this llmflow reads"
            f" ({target}): upgrade llmflow"
        )
    for version in range(found, target):
        step = STEPS.get(version)
        if step is None or (db.dialect != "sqlite" and version < POSTGRES_FROM):
            raise ValueError(f"{where} has run store schema {found}; no upgrade to {target}")
        step(c, db.dialect)
    if found != target:
        c.execute("UPDATE meta SET value = ? WHERE key = 'schema_version'", (str(target),))
        _log.info("store.schema_upgraded", path=where, from_version=found, to_version=target)
