"""Run store schema upgrades, applied when a store of an older version is opened.

``meta.schema_version`` says which schema a store has. A new store is created at the
current version (:data:`llmflow.tracker.schema.DDL`). An older one is upgraded in
place by :data:`STEPS`, each taking it from version *n* to *n + 1*, all inside the
transaction that opens the store: a failed step leaves the store untouched, and two
processes opening the same old store upgrade it once (the second waits, then finds it
current). Steps only add (columns with defaults, tables, indexes), so rows written
before keep their meaning. A store of a newer version than this llmflow knows is
refused, never downgraded.

History
    1   the first schema
    2   ``requests`` and ``usage`` gain ``thinking_tokens`` (part of the output tokens),
        ``speed`` and ``inference_geo`` (as the API reported them; they price a response)
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Mapping
from typing import Final

import structlog

_log = structlog.get_logger("llmflow.tracker.store")

Step = Callable[[sqlite3.Connection], None]

#: Columns version 2 adds to ``requests`` and ``usage`` (name → declaration).
V2_RESPONSE_COLUMNS: Final[Mapping[str, str]] = {
    "thinking_tokens": "INTEGER NOT NULL DEFAULT 0",
    "speed": "TEXT",
    "inference_geo": "TEXT",
}


def table_columns(c: sqlite3.Connection, table: str) -> list[str]:
    """Column names of ``table``, in order."""
    return [str(row[1]) for row in c.execute(f"PRAGMA table_info({table})").fetchall()]


def add_missing_columns(c: sqlite3.Connection, table: str, columns: Mapping[str, str]) -> None:
    """``ALTER TABLE ... ADD COLUMN`` for each of ``columns`` the table lacks."""
    present = set(table_columns(c, table))
    for name, declaration in columns.items():
        if name not in present:
            c.execute(f"ALTER TABLE {table} ADD COLUMN {name} {declaration}")


def _v1_to_v2(c: sqlite3.Connection) -> None:
    for table in ("requests", "usage"):
        add_missing_columns(c, table, V2_RESPONSE_COLUMNS)


#: version n → the step that upgrades a store from n to n + 1.
STEPS: Final[Mapping[int, Step]] = {1: _v1_to_v2}


def upgrade(c: sqlite3.Connection, found: int, target: int, *, where: str) -> None:
    """Upgrade a store from version ``found`` to ``target`` (within the caller's transaction).

    Raises ValueError for a version this llmflow cannot upgrade (newer, or unknown).
    """
    if found > target:
        raise ValueError(
            f"{where} has run store schema {found}, newer than this llmflow reads"
            f" ({target}): upgrade llmflow"
        )
    for version in range(found, target):
        step = STEPS.get(version)
        if step is None:
            raise ValueError(f"{where} has run store schema {found}; no upgrade to {target}")
        step(c)
    if found != target:
        c.execute("UPDATE meta SET value = ? WHERE key = 'schema_version'", (str(target),))
        _log.info("store.schema_upgraded", path=where, from_version=found, to_version=target)
