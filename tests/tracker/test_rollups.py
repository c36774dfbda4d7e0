"""The usage roll-ups (schema version 5) always equal the ledger they sum.

A mixed run (steps on several tiers, models and modes, a billed failure, a duplicate
result, a resume that finds requests left in flight, amounts past 12 decimals, a UTC
midnight crossed) is recorded through the store; what reports read from the roll-ups is
compared with a direct aggregate of the ``usage`` and ``requests`` rows, on SQLite and
PostgreSQL. A version 4 store is upgraded to the same roll-ups, and concurrent writers
of one run never lose an addition.
"""

from __future__ import annotations

import threading
from collections import Counter
from contextlib import nullcontext
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from structlog.testing import capture_logs

from llmflow.catalog import ZERO, TokenUsage, load_catalog
from llmflow.reporting import build_report, load_settings
from llmflow.tracker.records import Response, RunInfo, StepPlan, request_key
from llmflow.tracker.schema import SCHEMA_VERSION
from llmflow.tracker.store import RunStore
from llmflow.tracker.store_queries import step_usage
from llmflow.tracker.store_rollup import rebuild, second_of
from tests.postgres import fresh_schema

D = Decimal
RUN = "mix"
INFO = RunInfo(
    pipeline="mixed", policy="default",
    steps=(
        StepPlan("a", 6, "claude-haiku-4-5", "haiku", "sync"),
        StepPlan("b", 5, "claude-sonnet-4-6", "sonnet", "batch"),
        StepPlan("c", 3),
        StepPlan("never", 2, "claude-haiku-4-5", "haiku", "sync"),
    ),
)  # fmt: skip
TOKENS = ("input", "cache_write_5m", "cache_write_1h", "cache_read", "output", "thinking")


def _resp(step: str, i: int, model: str, tier: str | None, mode: str, cost: str, **u: int) -> Response:  # fmt: skip
    return Response(
        step, request_key(step, i), i, model, tier, mode, TokenUsage(**u), D(cost),  # type: ignore[arg-type]
        stop_reason="end_turn", output=f"{step}{i}",
    )  # fmt: skip


def _dispatch(store: RunStore, r: Response) -> None:
    store.mark_dispatched(
        RUN, r.step_id, r.key, r.item_index, model=r.model, tier=r.tier, mode=r.mode,
        reserved=D(1),
    )  # fmt: skip


def mixed_run(store: RunStore, clock: Any) -> None:
    """Record the mixed run (it ends across a UTC midnight)."""
    clock.now = datetime(2026, 5, 20, 23, 59, 57, 250_000, tzinfo=UTC)
    store.start_run(RUN, INFO)
    # a: sync haiku, cache writes then reads; one amount has 19 decimals
    for i, (cost, cache) in enumerate(
        [("0.0001234567890123456789", {"cache_write_5m": 900}), ("0.00002", {"cache_read": 900}),
         ("0.000021", {"cache_read": 900}), ("0.5", {"cache_write_1h": 40})]
    ):  # fmt: skip
        clock.advance(seconds=0.4)
        r = _resp(
            "a", i, "claude-haiku-4-5", "haiku", "sync", cost, input=50 + i, output=7, **cache
        )
        _dispatch(store, r)
        assert store.record_success(RUN, r)
    # b: one batch of four results in one commit, a failure billed, one not billed
    clock.advance(seconds=1)
    batch = [
        _resp("b", i, "claude-sonnet-4-6", "sonnet", "batch", f"0.00{i}5", input=3000, output=90,
              thinking=40, **({"cache_read": 2048} if i else {"cache_write_5m": 2048}))
        for i in range(4)
    ]  # fmt: skip
    for r in batch:
        _dispatch(store, r)
    failed = ("b", 4, request_key("b", 4), "overloaded_error")
    assert store.record_responses(RUN, batch, failed=[failed]) == {r.key for r in batch}
    billed = _resp("c", 0, "claude-opus-4-7", None, "sync", "0.0375", input=10, output=1500)
    _dispatch(store, billed)
    store.record_failure(RUN, "c", billed.key, 0, error="refusal", billed=billed)
    # the same batch result delivered again: never counted twice
    clock.advance(seconds=0.3)
    assert store.record_responses(RUN, batch[:2]) == set()
    # c: left in flight by a process that dies; the resume sends it again
    lost = _resp("c", 1, "claude-opus-4-7", "opus", "sync", "0.25", input=100, output=300)
    _dispatch(store, lost)
    clock.advance(seconds=1.5)  # past midnight
    store.resume_run(RUN, INFO)
    _dispatch(store, lost)
    assert store.record_success(RUN, lost)
    later = _resp("a", 4, "claude-haiku-4-5", "haiku", "batch", "0.0000005", input=1)
    _dispatch(store, later)
    assert store.record_success(RUN, later)
    store.record_failure(RUN, "a", request_key("a", 5), 5, error="skipped", status="skipped")


def _ledger(store: RunStore) -> tuple[dict[tuple[Any, ...], list[Any]], Counter[Any], dict[str, Any]]:  # fmt: skip
    """Directly from the rows: per group [responses, succeeded, reading, writing, *tokens,
    cost]; requests per (step, status); per UTC second (cost, last recorded_at)."""
    with store.db.reading() as c:
        usage = c.execute(
            "SELECT step_id, tier, model, mode, key, input_tokens, cache_write_5m, cache_write_1h,"
            " cache_read, output_tokens, thinking_tokens, cost_usd, recorded_at FROM usage"
            " WHERE run_id = ?",
            (RUN,),
        ).fetchall()
        requests = c.execute(
            "SELECT step_id, status, tier, model, mode FROM requests WHERE run_id = ?", (RUN,)
        ).fetchall()
    succeeded = Counter(
        (s, t, m, mode) for s, status, t, m, mode in requests if status == "succeeded"
    )
    groups: dict[tuple[Any, ...], list[Any]] = {}
    seconds: dict[str, Any] = {}
    for s, tier, model, mode, _, *tokens, cost, at in usage:
        g = groups.setdefault(
            (s, tier, model, mode), [0, succeeded[s, tier, model, mode], 0, 0, *[0] * 6, ZERO]
        )
        g[0] += 1
        g[2] += tokens[3] > 0
        g[3] += tokens[1] + tokens[2] > 0
        for k, n in enumerate(tokens):
            g[4 + k] += n
        g[10] += D(cost)
        cost_so_far, last = seconds.get(second_of(at), (ZERO, ""))
        seconds[second_of(at)] = (cost_so_far + D(cost), max(last, at))
    return groups, Counter((s, status) for s, status, *_ in requests), seconds


def test_what_reports_read_equals_the_ledger(store: RunStore, clock: Any) -> None:
    mixed_run(store, clock)
    groups, statuses, seconds = _ledger(store)
    cells = store.usage_cells(RUN)
    assert {
        (c.step_id, c.tier, c.model, c.mode): [
            c.responses, c.succeeded, c.reading, c.writing,
            *(getattr(c.usage, t) for t in TOKENS), c.cost,
        ]
        for c in cells
    } == groups  # fmt: skip
    assert ("c", None, "claude-opus-4-7", "sync") in groups  # a response without a tier
    total = sum((g[10] for g in groups.values()), ZERO)
    amounts = ["0.0001234567890123456789", "0.00002", "0.000021", "0.5", "0.0005", "0.0015",
               "0.0025", "0.0035", "0.0375", "0.25", "0.0000005"]  # fmt: skip
    assert total == sum(map(D, amounts), ZERO)
    assert store.runs_spent([RUN]) == {RUN: total}
    steps = {t.step_id: t for t in store.step_totals(RUN)}
    assert list(steps) == ["a", "b", "c", "never"]
    for step_id, t in steps.items():
        counts = {status: n for (s, status), n in statuses.items() if s == step_id}
        assert (t.succeeded, t.failed, t.skipped) == (
            counts.get("succeeded", 0),
            counts.get("failed", 0),
            counts.get("skipped", 0),
        )
        assert t.requests == max(t.planned_requests, sum(counts.values()))
        mine = [g for key, g in groups.items() if key[0] == step_id]
        assert t.cost == sum((g[10] for g in mine), ZERO)
        assert [getattr(t.usage, k) for k in TOKENS] == [
            sum(g[4 + j] for g in mine) for j in range(6)
        ]
    assert store.step_totals(RUN, usage=step_usage(cells)) == list(steps.values())
    assert (steps["a"].succeeded, steps["a"].skipped, steps["b"].failed) == (5, 1, 1)
    assert (steps["c"].succeeded, steps["c"].failed, steps["never"].requests) == (1, 1, 2)
    buckets = store.spend_buckets(RUN, width_ms=1000)
    assert [(b.cost, b.last) for b in buckets] == [
        (cost, datetime.fromisoformat(last)) for _, (cost, last) in sorted(seconds.items())
    ]
    assert {b.day for b in buckets} == {"2026-05-20", "2026-05-21"}
    # the report and the run summary show the same totals
    report = build_report(store, RUN, load_settings(None, load_catalog()), now=clock.now)
    assert report.summary.total.cost == total == report.series[-1].cumulative
    assert sum(t.responses for t in report.tiers) == sum(g[0] for g in groups.values()) == 11
    assert [(s.id, s.succeeded, s.failed, s.skipped) for s in report.steps] == [
        (t.step_id, t.succeeded, t.failed, t.skipped) for t in steps.values()
    ]
    assert store.summary(RUN).total.cost == total


def _rollup_rows(store: RunStore) -> tuple[list[Any], list[Any]]:
    with store.db.reading() as c:
        totals = c.execute(
            "SELECT run_id, step_id, tier, model, mode, responses, succeeded, reading, writing,"
            " input_tokens, cache_write_5m, cache_write_1h, cache_read, output_tokens,"
            " thinking_tokens, cost_usd FROM usage_totals ORDER BY id"
        ).fetchall()
        seconds = c.execute(
            "SELECT run_id, second, last_at, cost_usd FROM usage_seconds ORDER BY run_id, second"
        ).fetchall()
    # money as Decimal (text on SQLite, NUMERIC on PostgreSQL)
    return [(*r[:-1], D(r[-1])) for r in totals], [(*r[:-1], D(r[-1])) for r in seconds]


def _as_v4(c: Any) -> None:
    """Make a current store what schema 4 left: no roll-ups, the ledger's group index."""
    c.execute("DROP TABLE usage_totals")
    c.execute("DROP TABLE usage_seconds")
    c.execute(
        "CREATE INDEX usage_group ON usage (run_id, step_id, tier, model, mode, id,"
        " input_tokens, cache_write_5m, cache_write_1h, cache_read, output_tokens,"
        " thinking_tokens, cost_usd)"
    )
    c.execute("UPDATE meta SET value = '4' WHERE key = 'schema_version'")


@pytest.mark.parametrize("dialect", ["sqlite", "postgresql"])
def test_a_version_4_store_gets_the_rollups_its_ledger_sums_to(
    tmp_path: Path, clock: Any, dialect: str
) -> None:
    with fresh_schema() if dialect == "postgresql" else nullcontext(str(tmp_path / "s")) as spec:
        store = RunStore.open(spec, clock=clock, runs_dir=tmp_path / "runs")
        mixed_run(store, clock)
        store.start_run("empty", RunInfo(pipeline="mixed", policy="default"))
        written = _rollup_rows(store)
        with store.db.transaction() as c:
            _as_v4(c)
        store.close()
        with capture_logs() as logs:
            store = RunStore.open(spec, clock=clock, runs_dir=tmp_path / "runs")
        upgraded = [e for e in logs if e["event"] == "store.schema_upgraded"]
        assert [(e["from_version"], e["to_version"]) for e in upgraded] == [(4, SCHEMA_VERSION)]
        # the same rows, groups in the same first-use order, as recording wrote them
        assert _rollup_rows(store) == written
        with store.db.reading() as c:
            assert c.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone()[
                0
            ] == str(SCHEMA_VERSION)
        assert store.usage_cells("empty") == [] and store.runs_spent(["empty"])["empty"] == 0
        store.close()


def test_rebuilding_one_run_leaves_the_others_alone(store: RunStore, clock: Any) -> None:
    mixed_run(store, clock)
    store.start_run("other", RunInfo(pipeline="mixed", policy="default"))
    r = _resp("x", 0, "claude-haiku-4-5", "haiku", "sync", "0.125", input=1)
    store.mark_dispatched("other", "x", r.key, 0, model=r.model, tier="haiku", mode="sync", reserved=D(1))  # fmt: skip
    store.record_success("other", r)
    before = _rollup_rows(store)
    with store.db.transaction() as c:
        c.execute("UPDATE usage_totals SET cost_usd = '9' WHERE run_id = ?", (RUN,))
        rebuild(c, [RUN])
    assert sorted(map(str, _rollup_rows(store)[0])) == sorted(map(str, before[0]))
    assert _rollup_rows(store)[1] == before[1]
    with store.db.transaction() as c:
        rebuild(c, [])  # no runs: nothing changes
    assert store.run_spent("other") == D("0.125")


@pytest.mark.parametrize("dialect", ["sqlite", "postgresql"])
def test_writers_of_one_run_at_once_lose_no_addition(tmp_path: Path, dialect: str) -> None:
    """Four processes' stores record into one run at once (PostgreSQL: several workers
    of a run); every response lands in the roll-ups exactly once."""
    with fresh_schema() if dialect == "postgresql" else nullcontext(str(tmp_path / "s")) as spec:
        first = RunStore.open(spec, runs_dir=tmp_path / "runs")
        first.start_run(RUN, RunInfo(pipeline="mixed", policy="default"))
        errors: list[BaseException] = []
        start = threading.Barrier(4)

        def work(n: int) -> None:
            store = RunStore.open(spec, runs_dir=tmp_path / "runs")
            try:
                start.wait()
                for i in range(n * 100, n * 100 + 25):
                    mode = "batch" if i % 2 else "sync"
                    r = _resp("w", i, "claude-haiku-4-5", "haiku", mode, "0.0000000000001", input=i)
                    store.record_success(RUN, r)
            except BaseException as exc:  # reported below
                errors.append(exc)
            finally:
                store.close()

        threads = [threading.Thread(target=work, args=(n,)) for n in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=120)
        assert errors == []
        cells = {c.mode: c for c in first.usage_cells(RUN)}
        items = [i for n in range(4) for i in range(n * 100, n * 100 + 25)]
        assert cells["sync"].responses == sum(1 for i in items if i % 2 == 0) == 52
        assert cells["batch"].responses == 48 and cells["batch"].succeeded == 48
        assert first.run_spent(RUN) == D("0.0000000000001") * 100
        assert sum(c.usage.input for c in cells.values()) == sum(items)
        assert sum(b.cost for b in first.spend_buckets(RUN, width_ms=1000)) == first.run_spent(RUN)
        first.close()


def test_the_series_buckets_are_whole_seconds(store: RunStore, clock: Any) -> None:
    mixed_run(store, clock)
    _, _, seconds = _ledger(store)
    start = datetime(2026, 5, 20, 23, 59, 57, tzinfo=UTC)
    [wide] = [
        b for b in store.spend_buckets(RUN, width_ms=1) if b.last < start + timedelta(seconds=1)
    ]
    assert wide.cost == seconds[second_of("2026-05-20T23:59:57.000000+00:00")][0]
    two = store.spend_buckets(RUN, width_ms=1500)  # two seconds a bucket
    assert sum(b.cost for b in two) == sum(c for c, _ in seconds.values())
    assert len(two) < len(seconds)
