"""A store created by an older schema (version 1, or 3 on either database) is upgraded when
it is opened (version 4 to 5, the usage roll-ups: tests/tracker/test_rollups.py)."""

from __future__ import annotations

import sqlite3
import threading
from contextlib import nullcontext
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from structlog.testing import capture_logs

from llmflow.catalog import TokenUsage
from llmflow.errors import RunStoreError
from llmflow.tracker import migrations
from llmflow.tracker.db import Cursor
from llmflow.tracker.records import Response, RunInfo, request_key
from llmflow.tracker.schema import SCHEMA_VERSION
from llmflow.tracker.store import DB_NAME, RunStore
from tests.postgres import fresh_schema

D = Decimal
V1_DDL = Path(__file__).with_name("schema_v1.sql").read_text("utf-8")
NEW_COLUMNS = ["thinking_tokens", "speed", "inference_geo"]


def _v1_store(state: Path) -> Path:
    """A store as llmflow with schema 1 left it: one run, one billed response."""
    state.mkdir(parents=True)
    (state / "runs").mkdir()
    path = state / DB_NAME
    with sqlite3.connect(path) as c:
        c.executescript(V1_DDL)
        c.execute("INSERT INTO meta VALUES ('schema_version', '1')")
        c.execute(
            "INSERT INTO runs (run_id, pipeline, policy, status, started_at)"
            " VALUES ('old', 'triage', 'default', 'succeeded', '2026-05-20T12:00:00.000000+00:00')"
        )
        c.execute(
            "INSERT INTO requests (run_id, key, step_id, item_index, status, model, mode,"
            " input_tokens, output_tokens, cost_usd, output_json)"
            " VALUES ('old', 'classify-0', 'classify', 0, 'succeeded', 'claude-haiku-4-5',"
            " 'sync', 100, 20, '0.0002', '\"bug\"')"
        )
        c.execute(
            "INSERT INTO usage (run_id, step_id, key, item_index, attempt, model, mode,"
            " input_tokens, cache_write_5m, cache_write_1h, cache_read, output_tokens,"
            " cost_usd, recorded_at) VALUES ('old', 'classify', 'classify-0', 0, 1,"
            " 'claude-haiku-4-5', 'sync', 100, 0, 0, 0, 20, '0.0002',"
            " '2026-05-20T12:00:01.000000+00:00')"
        )
    return state


def _version(path: Path) -> int:
    with sqlite3.connect(path) as c:
        return int(c.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone()[0])


def _schema(path: Path) -> dict[str, list[tuple[object, ...]]]:
    """Every table's columns (name, type, not null, default), and every index name."""
    with sqlite3.connect(path) as c:
        tables = [r[0] for r in c.execute("SELECT name FROM sqlite_master WHERE type = 'table'")]
        out = {t: [tuple(r[1:5]) for r in c.execute(f"PRAGMA table_info({t})")] for t in tables}
        out["<indexes>"] = sorted(
            (r[0],) for r in c.execute("SELECT name FROM sqlite_master WHERE type = 'index'")
        )
    return out


def test_an_old_store_is_upgraded_and_its_history_kept(tmp_path: Path) -> None:
    state = _v1_store(tmp_path / "state")
    with capture_logs() as logs:
        store = RunStore.open(state)
    upgraded = [e for e in logs if e["event"] == "store.schema_upgraded"]
    assert [(e["from_version"], e["to_version"]) for e in upgraded] == [(1, SCHEMA_VERSION)]
    assert _version(state / DB_NAME) == SCHEMA_VERSION == 6
    # what was recorded before still counts, read with the new columns
    assert store.run_spent("old") == D("0.0002")
    [totals] = store.step_totals("old")
    assert totals.usage == TokenUsage(input=100, output=20)  # thinking 0: not recorded then
    assert store.step_outputs("old", "classify") == ["bug"]
    # and new responses record thinking, speed and inference_geo
    store.resume_run("old", RunInfo(pipeline="triage", policy="default"))
    usage = TokenUsage(input=10, output=50, thinking=30)
    store.record_success(
        "old",
        Response(
            "classify", request_key("classify", 1), 1, "claude-opus-5-5", None, "sync", usage,
            D("0.0021"), speed="fast", inference_geo="us",
        ),
    )  # fmt: skip
    [totals] = store.step_totals("old")
    assert totals.usage == TokenUsage(input=110, output=70, thinking=30)
    store.close()
    with sqlite3.connect(state / DB_NAME) as c:
        rows = c.execute(
            "SELECT key, thinking_tokens, speed, inference_geo FROM usage ORDER BY id"
        ).fetchall()
    assert rows == [("classify-0", 0, None, None), ("classify-1", 30, "fast", "us")]


def test_the_upgraded_schema_is_the_new_stores_schema(tmp_path: Path) -> None:
    old = _v1_store(tmp_path / "old")
    RunStore.open(old).close()
    RunStore.open(tmp_path / "new").close()
    upgraded, fresh = _schema(old / DB_NAME), _schema(tmp_path / "new" / DB_NAME)
    assert upgraded == fresh
    assert [c[0] for c in fresh["usage"][-3:]] == NEW_COLUMNS
    assert [c[0] for c in fresh["requests"][-5:]] == [*NEW_COLUMNS, "worker_id", "reserved_on"]
    assert "budget_counters" in fresh and "workers" in fresh


def test_reopening_an_upgraded_store_changes_nothing(tmp_path: Path) -> None:
    state = _v1_store(tmp_path / "state")
    RunStore.open(state).close()
    before = _schema(state / DB_NAME)
    with capture_logs() as logs:
        RunStore.open(state).close()
    assert "store.schema_upgraded" not in [e["event"] for e in logs]
    assert _schema(state / DB_NAME) == before


def test_a_failed_upgrade_leaves_the_old_store_as_it_was(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    state = _v1_store(tmp_path / "state")
    before = _schema(state / DB_NAME)

    def half_done(c: Cursor, dialect: str) -> None:
        migrations.add_missing_columns(c, "requests", migrations.V2_RESPONSE_COLUMNS)
        raise sqlite3.OperationalError("disk I/O error")

    monkeypatch.setitem(migrations.STEPS, 1, half_done)
    with pytest.raises(RunStoreError, match="disk I/O error"):
        RunStore.open(state)
    assert _schema(state / DB_NAME) == before
    assert _version(state / DB_NAME) == 1
    monkeypatch.undo()
    RunStore.open(state).close()
    assert _version(state / DB_NAME) == SCHEMA_VERSION


def test_a_newer_or_unknown_store_is_refused_untouched(tmp_path: Path) -> None:
    state = _v1_store(tmp_path / "state")
    for version, message in ((SCHEMA_VERSION + 1, "newer than this llmflow"), (0, "no upgrade")):
        with sqlite3.connect(state / DB_NAME) as c:
            c.execute("UPDATE meta SET value = ? WHERE key = 'schema_version'", (str(version),))
        before = _schema(state / DB_NAME)
        with pytest.raises(RunStoreError, match=message):
            RunStore.open(state)
        assert _schema(state / DB_NAME) == before
        assert _version(state / DB_NAME) == version


def test_processes_opening_an_old_store_together_upgrade_it_once(tmp_path: Path) -> None:
    state = _v1_store(tmp_path / "state")
    errors: list[BaseException] = []
    start = threading.Barrier(4)

    def open_it() -> None:
        try:
            start.wait()
            RunStore.open(state).close()
        except BaseException as exc:  # reported below
            errors.append(exc)

    with capture_logs() as logs:
        threads = [threading.Thread(target=open_it) for _ in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=30)
    assert errors == []
    assert [e["event"] for e in logs].count("store.schema_upgraded") == 1
    assert _version(state / DB_NAME) == SCHEMA_VERSION


#: The report indexes of version 4 that remain (``usage_group`` went in version 5), and
#: those of version 3 they replace.
V4_INDEXES = {"usage_spend", "requests_truncated"}
V3_INDEXES = {
    "usage_run": "CREATE INDEX usage_run ON usage (run_id, step_id)",
    "usage_time": "CREATE INDEX usage_time ON usage (recorded_at)",
}


def _as_v3(c: Any) -> None:
    """Make a current store what schema 3 left: the old report indexes, no roll-ups,
    version 3."""
    for name in V4_INDEXES:
        c.execute(f"DROP INDEX {name}")
    for ddl in V3_INDEXES.values():
        c.execute(ddl)
    c.execute("DROP TABLE usage_totals")
    c.execute("DROP TABLE usage_seconds")
    c.execute("UPDATE meta SET value = '3' WHERE key = 'schema_version'")


def _indexes(c: Any, dialect: str) -> set[str]:
    sql = (
        "SELECT name FROM sqlite_master WHERE type = 'index' AND name NOT LIKE 'sqlite_%'"
        if dialect == "sqlite"
        else "SELECT indexname FROM pg_indexes WHERE schemaname = current_schema()"
        " AND indexname NOT LIKE '%_pkey'"
    )
    return {str(r[0]) for r in c.execute(sql).fetchall()}


@pytest.mark.parametrize("dialect", ["sqlite", "postgresql"])
def test_a_version_3_store_gets_the_report_indexes(tmp_path: Path, dialect: str) -> None:
    with fresh_schema() if dialect == "postgresql" else nullcontext(str(tmp_path / "s")) as spec:
        store = RunStore.open(spec, runs_dir=tmp_path / "runs")
        store.start_run("r", RunInfo(pipeline="p", policy="default"))
        for i, cost in enumerate(("0.0002", "150.5")):
            key = request_key("a", i)
            store.mark_dispatched("r", "a", key, i, model="m", tier="t", mode="sync", reserved=D(1))
            usage = TokenUsage(input=10)
            store.record_success("r", Response("a", key, i, "m", "t", "sync", usage, D(cost)))
        with store.db.transaction() as c:
            _as_v3(c)
            current = _indexes(c, dialect)
        store.close()
        assert set(V3_INDEXES) <= current and not V4_INDEXES & current
        with capture_logs() as logs:
            store = RunStore.open(spec, runs_dir=tmp_path / "runs")
        assert [(e["from_version"], e["to_version"]) for e in logs] == [(3, SCHEMA_VERSION)]
        with store.db.reading() as c:
            current = _indexes(c, dialect)
            version = c.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone()
        assert current >= V4_INDEXES and not {*V3_INDEXES, "usage_group"} & current
        assert int(version[0]) == SCHEMA_VERSION
        assert store.run_spent("r") == D("150.5002")
        assert [c.responses for c in store.usage_cells("r")] == [2]
        store.close()


def test_every_version_before_this_one_has_an_upgrade_step() -> None:
    assert sorted(migrations.STEPS) == list(range(1, SCHEMA_VERSION))
