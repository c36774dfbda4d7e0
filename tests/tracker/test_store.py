"""The SQLite run store: WAL, durability across reopen and kill -9, resume, outputs."""

from __future__ import annotations

import json
import signal
import sqlite3
import subprocess
import sys
import textwrap
from collections.abc import Callable
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from llmflow.catalog import TokenUsage
from llmflow.errors import RunStoreError
from llmflow.tracker.budget import BudgetAlert
from llmflow.tracker.records import Response, RunInfo, request_key
from llmflow.tracker.store import DB_NAME, RunStore

D = Decimal
MakeInfo = Callable[..., RunInfo]
MakeResponse = Callable[..., Response]


def test_wal_mode_and_files(store: RunStore, make_info: MakeInfo) -> None:
    if store.db.dialect == "sqlite":
        assert store.journal_mode() == "wal"
        assert (store.state_dir / DB_NAME).exists()
    store.start_run("r1", make_info())
    store.finish_run("r1", "succeeded")
    assert (store.state_dir / "runs" / "r1").is_dir()
    assert store.get_run("r1").status == "succeeded"


def test_reopen_sees_finished_keys(
    tmp_path: Path, make_info: MakeInfo, make_response: MakeResponse
) -> None:
    first = RunStore.open(tmp_path / "s")
    first.start_run("r1", make_info())
    for i in (0, 2, 4):
        first.record_success("r1", make_response("classify", i))
    first.record_failure("r1", "classify", request_key("classify", 1), 1, error="boom")
    first.close()  # no finish_run: as if the process stopped here
    second = RunStore.open(tmp_path / "s")
    assert second.finished_keys("r1", "classify") == {request_key("classify", i) for i in (0, 2, 4)}
    assert second.finished_keys("r1", "digest") == set()
    assert second.run_spent("r1") == D("0.003")
    second.close()


def test_run_ids_and_pipelines_are_checked(
    store: RunStore, tmp_path: Path, make_info: MakeInfo
) -> None:
    store.start_run("r1", make_info())
    with pytest.raises(RunStoreError, match="already exists"):
        store.start_run("r1", make_info())
    with pytest.raises(RunStoreError, match="belongs to pipeline 'triage'"):
        store.resume_run("r1", make_info(pipeline="other"))
    with pytest.raises(RunStoreError, match="no run"):
        store.resume_run("nope", make_info())
    with pytest.raises(ValueError):
        store.start_run("../evil", make_info())
    if store.db.dialect == "sqlite":
        # a second process (here: a second store) cannot run the same run concurrently
        other = RunStore.open(tmp_path / "state")
        with pytest.raises(RunStoreError, match="another process"):
            other.resume_run("r1", make_info())
        store.finish_run("r1", "partial")  # releases the lock
        other.resume_run("r1", make_info())
        other.close()


def test_resume_keeps_whole_history(
    tmp_path: Path, make_info: MakeInfo, make_response: MakeResponse
) -> None:
    s1 = RunStore.open(tmp_path / "s")
    s1.start_run("r1", make_info(budget_limit=D("5")))
    for i in range(5):
        s1.mark_dispatched(
            "r1", "classify", request_key("classify", i), i,
            model="claude-haiku-4-5", tier="haiku", mode="sync", reserved=D("0.01"),
        )  # fmt: skip
        s1.record_success("r1", make_response("classify", i))
    # item 5 was in flight when the process died
    s1.mark_dispatched(
        "r1", "classify", request_key("classify", 5), 5,
        model="claude-haiku-4-5", tier="haiku", mode="sync", reserved=D("0.02"),
    )  # fmt: skip
    s1.close()

    s2 = RunStore.open(tmp_path / "s")
    run, resumed = s2.open_run("r1", make_info())
    assert resumed
    assert run.sessions == 2
    assert run.unrecorded_usd == D("0.02")
    assert run.budget_limit == D("5")  # kept from the first session
    assert s2.keys_with_status("r1", ["pending"]) == {request_key("classify", 5): "pending"}
    for i in range(5, 10):
        s2.record_success("r1", make_response("classify", i, cost="0.002"))
    s2.record_success("r1", make_response("digest", 0, cost="0.01", input=100, output=50))
    s2.finish_run("r1", "succeeded")

    totals = {t.step_id: t for t in s2.step_totals("r1")}
    assert totals["classify"].succeeded == 10
    assert totals["classify"].requests == 10
    assert totals["classify"].cost == D("0.015")
    assert totals["classify"].usage == TokenUsage(input=100, output=20)
    assert totals["digest"].cost == D("0.01")
    summary = s2.summary("r1")
    assert summary.total.cost == D("0.025")
    assert summary.total.cost == sum((t.cost for t in totals.values()), D(0))
    assert summary.status == "succeeded"
    s2.close()


def test_outputs_in_item_order(
    store: RunStore, make_info: MakeInfo, make_response: MakeResponse
) -> None:
    store.start_run("r1", make_info())
    for i in (3, 0, 7, 1):
        store.record_success("r1", make_response("classify", i))
    store.record_responses(
        "r1",
        [make_response("classify", 2)],
        failed=[("classify", 4, request_key("classify", 4), "errored")],
    )
    assert store.step_outputs("r1", "classify") == [f"label-{i}" for i in (0, 1, 2, 3, 7)]
    path = store.write_outputs("r1", "classify")
    assert path == store.state_dir / "runs" / "r1" / "outputs" / "classify.jsonl"
    lines = [json.loads(x) for x in path.read_text().splitlines()]
    assert [x["item"] for x in lines] == [0, 1, 2, 3, 7]
    assert lines[0] == {"item": 0, "key": "classify-0", "output": "label-0"}
    store.finish_run("r1", "partial")
    assert (store.run_dir("r1") / "outputs" / "digest.jsonl").read_text() == ""


def test_structured_output_round_trips(store: RunStore, make_info: MakeInfo) -> None:
    store.start_run("r1", make_info())
    resp = Response(
        "classify", "k1", 0, "claude-haiku-4-5", "haiku", "batch", TokenUsage(input=1),
        D("0.1"), output={"label": "bug", "score": 0.5, "tags": ["ü"]},
    )  # fmt: skip
    store.record_success("r1", resp)
    assert store.step_outputs("r1", "classify") == [{"label": "bug", "score": 0.5, "tags": ["ü"]}]


def test_never_dispatch_a_succeeded_request(
    store: RunStore, make_info: MakeInfo, make_response: MakeResponse
) -> None:
    store.start_run("r1", make_info())
    store.record_success("r1", make_response("classify", 0))
    with pytest.raises(RunStoreError, match="already succeeded"):
        store.mark_dispatched(
            "r1", "classify", request_key("classify", 0), 0,
            model="m", tier=None, mode="sync", reserved=D(1),
        )  # fmt: skip
    with pytest.raises(RunStoreError, match="already succeeded"):
        store.record_batch_submitted(
            "r1", "classify", "msgbatch_1", [(request_key("classify", 0), 0, D(1))],
            model="m", tier=None,
        )  # fmt: skip
    assert store.open_batches("r1") == []  # the refused batch left nothing behind
    # a failure recorded late does not overwrite the success
    store.record_failure("r1", "classify", request_key("classify", 0), 0, error="late")
    assert store.finished_keys("r1") == {request_key("classify", 0)}


def test_key_must_be_a_custom_id(store: RunStore, make_info: MakeInfo) -> None:
    store.start_run("r1", make_info())
    with pytest.raises(ValueError, match="custom_id"):
        store.record_failure("r1", "classify", "bad key!", 2, error="x")


def test_batches_lifecycle(
    store: RunStore, make_info: MakeInfo, make_response: MakeResponse
) -> None:
    store.start_run("r1", make_info())
    reqs = [(request_key("classify", i), i, D("0.01")) for i in range(4)]
    store.record_batch_submitted("r1", "classify", "msgbatch_a", reqs, model="m", tier="haiku")
    [batch] = store.open_batches("r1")
    assert batch.batch_id == "msgbatch_a"
    assert batch.keys == tuple(k for k, _, _ in reqs)
    assert set(store.batch_in_flight("r1", "msgbatch_a")) == {k for k, _, _ in reqs}
    store.set_batch_status("r1", "msgbatch_a", "canceling")
    store.record_responses("r1", [make_response("classify", 0), make_response("classify", 2)])
    store.record_failure("r1", "classify", request_key("classify", 3), 3, error="expired")
    assert store.batch_in_flight("r1", "msgbatch_a") == {request_key("classify", 1): (1, D("0.01"))}
    missing = store.mark_batch_ended("r1", "msgbatch_a")
    assert missing == [request_key("classify", 1)]
    assert store.open_batches("r1") == []
    assert store.batches("r1")[0].status == "ended"
    totals = {t.step_id: t for t in store.step_totals("r1")}["classify"]
    assert (totals.succeeded, totals.failed) == (2, 2)


def test_batch_requests_survive_resume(tmp_path: Path, make_info: MakeInfo) -> None:
    s1 = RunStore.open(tmp_path / "s")
    s1.start_run("r1", make_info())
    reqs = [(request_key("classify", i), i, D("0.01")) for i in range(3)]
    s1.record_batch_submitted("r1", "classify", "msgbatch_a", reqs, model="m", tier="haiku")
    s1.close()
    s2 = RunStore.open(tmp_path / "s")
    run = s2.resume_run("r1", make_info())
    assert run.unrecorded_usd == 0  # batch requests are polled, not lost
    assert [b.batch_id for b in s2.open_batches("r1")] == ["msgbatch_a"]
    assert len(s2.batch_in_flight("r1", "msgbatch_a")) == 3
    s2.close()


def test_alerts_are_stored_once(store: RunStore, make_info: MakeInfo) -> None:
    store.start_run("r1", make_info())
    alert = BudgetAlert("run", D("5"), D("4"), D("4.1"), store._clock())
    store.record_alerts("r1", [alert])
    store.record_alerts("r1", [alert])
    assert store.alerts("r1") == [alert]


def test_list_runs_newest_first(store: RunStore, clock: Any, make_info: MakeInfo) -> None:
    for run_id in ("r1", "r2", "r3"):
        store.start_run(run_id, make_info(pipeline="x" if run_id == "r2" else "triage"))
        clock.advance(minutes=1)
    assert [r.run_id for r in store.list_runs()] == ["r3", "r2", "r1"]
    assert [r.run_id for r in store.list_runs(pipeline="triage", limit=1)] == ["r3"]
    last = store.last_run()
    assert last is not None and last.run_id == "r3"


_CHILD = textwrap.dedent(
    """
    import sys
    from decimal import Decimal
    from llmflow.catalog import TokenUsage
    from llmflow.tracker.records import Response, RunInfo, request_key
    from llmflow.tracker.store import RunStore

    store = RunStore.open(sys.argv[1])
    store.start_run("killed", RunInfo(pipeline="triage", policy="default"))
    for i in range(1_000_000):
        key = request_key("classify", i)
        store.mark_dispatched("killed", "classify", key, i, model="m", tier=None,
                              mode="sync", reserved=Decimal("0.01"))
        usage = TokenUsage(input=i, output=1)
        store.record_success("killed", Response("classify", key, i, "m", None, "sync",
                             usage, Decimal("0.001"), output={"i": i}))
        print("ACK", i, flush=True)
    """
)


def test_kill_9_loses_nothing_committed(tmp_path: Path) -> None:
    state = tmp_path / "state"
    proc = subprocess.Popen(
        [sys.executable, "-c", _CHILD, str(state)],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    assert proc.stdout is not None
    acknowledged = -1
    try:
        for line in proc.stdout:  # structlog's console lines are interleaved
            if not line.startswith("ACK "):
                continue
            acknowledged = int(line.split()[1])
            if acknowledged >= 150:
                break
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
    assert acknowledged >= 150, "the child did not get going"

    with sqlite3.connect(state / DB_NAME) as raw:
        assert raw.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    reopened = RunStore.open(state)
    done = reopened.finished_keys("killed", "classify")
    acked = {request_key("classify", i) for i in range(acknowledged + 1)}
    assert acked <= done  # everything the child saw committed is there
    n = len(done)
    assert done == {request_key("classify", i) for i in range(n)}  # no holes
    assert reopened.run_spent("killed") == D("0.001") * n  # one usage row per response
    outputs = reopened.step_outputs("killed", "classify")
    assert outputs == [{"i": i} for i in range(n)]
    # at most the one request in flight at the kill is lost; resuming re-queues it
    run = reopened.resume_run("killed", RunInfo(pipeline="triage", policy="default"))
    assert run.unrecorded_usd in (D(0), D("0.01"))
    assert reopened.finished_keys("killed") == done
    reopened.close()
