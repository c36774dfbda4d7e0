"""kill -9 mid-run, then resume: every request is billed exactly once.

Real processes end to end: ``llmflow emulator`` serves on loopback, ``llmflow run
--backend anthropic`` talks to it through the SDK, the test watches the run store
(read-only SQLite) and SIGKILLs the run at a chosen point, then resumes it with the
same ``--run-id``. The emulator's billing ledger is the ground truth:

* sync: a killed process loses at most the responses in flight at that moment (paid
  but unrecorded, their reserved upper bounds carried into ``unrecorded_usd``), and
  never pays twice for a finished one;
* batch: the submitted batch is polled on resume, never resubmitted;
* batch creation: killed while ``batches.create`` is in flight (the emulator creates the
  batch, then answers slowly), the resumed run finds the batch by listing the API's
  batches and adopts it; exactly one batch is ever created.

Every wait is bounded; if a kill lands too late (the run already finished), the test
fails saying so rather than passing without having tested anything.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import sqlite3
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from llmflow.catalog import TokenUsage, cost, load_catalog
from llmflow.emulator.ledger import entry_usage
from llmflow.executor.sync_step import reserved_ahead

ROOT = Path(__file__).resolve().parents[2]
FIXTURES = ROOT / "tests" / "fixtures" / "executor"
POLICY = FIXTURES / "policy.yaml"
ITEMS = len((FIXTURES / "data" / "items.jsonl").read_text().splitlines())
MAX_CONCURRENCY = 4  # limits.max_concurrency of the fixture policy
MODEL = "claude-haiku-4-5"
RUN_ID = "kill-resume"
API_KEY = "test"

STARTUP_TIMEOUT = 20.0  # seconds for a process to come up (imports take ~4 s here)
RUN_TIMEOUT = 30.0  # seconds for a resumed run to finish
POLL = 0.005

_LLMFLOW = "import sys; from llmflow.cli import main; sys.argv[0] = 'llmflow'; main()"

Process = subprocess.Popen[bytes]


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass(frozen=True)
class Emulator:
    """A running ``llmflow emulator`` subprocess."""

    url: str

    def call(self, path: str, method: str = "GET") -> Any:
        req = urllib.request.Request(self.url + path, method=method, headers={"x-api-key": API_KEY})
        with urllib.request.urlopen(req, timeout=5) as response:
            return json.loads(response.read())

    def ledger(self) -> list[dict[str, Any]]:
        entries: list[dict[str, Any]] = self.call("/_emulator/ledger")["requests"]
        return entries


def _spawn(args: list[str], log: Path, env: dict[str, str] | None = None) -> Process:
    """Start ``llmflow ARGS...`` with its output in ``log``."""
    with log.open("wb") as out:
        return subprocess.Popen(
            [sys.executable, "-c", _LLMFLOW, *args],
            cwd=ROOT,
            env={**os.environ, "NO_PROXY": "127.0.0.1,localhost", **(env or {})},
            stdout=out,
            stderr=subprocess.STDOUT,
        )


def _stop(proc: Process) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)


@pytest.fixture(scope="module")
def emulator(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Emulator]:
    """One emulator for the module (80 ms latency, batches end 4 s after creation, and
    1.5 s pass between creating a batch and answering the create request)."""
    port = _free_port()
    log = tmp_path_factory.mktemp("emulator") / "emulator.log"
    proc = _spawn(
        ["emulator", "--host", "127.0.0.1", "--port", str(port), "--latency-ms", "80",
         "--batch-seconds", "4", "--batch-create-delay-ms", "1500"],
        log,
    )  # fmt: skip
    try:
        yield _wait_until_up(proc, Emulator(f"http://127.0.0.1:{port}"))
    finally:
        _stop(proc)


def _wait_until_up(proc: Process, emulator: Emulator) -> Emulator:
    deadline = time.monotonic() + STARTUP_TIMEOUT
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            pytest.fail(f"the emulator exited with {proc.returncode} before answering")
        with contextlib.suppress(OSError):
            emulator.call("/_emulator/ledger")
            return emulator
        time.sleep(0.05)
    pytest.fail(f"the emulator did not answer within {STARTUP_TIMEOUT:.0f} s")


@pytest.fixture
def fresh(emulator: Emulator) -> Emulator:
    """The module's emulator with an empty ledger and no batches."""
    emulator.call("/_emulator/reset", "POST")
    return emulator


@pytest.fixture
def spawn_run(fresh: Emulator, tmp_path: Path) -> Iterator[Callable[[str, str], Process]]:
    """``spawn_run(pipeline, log_name)`` starts ``llmflow run`` on the fresh emulator;
    every run still alive at teardown is stopped."""
    procs: list[Process] = []
    env = {"ANTHROPIC_API_KEY": API_KEY, "ANTHROPIC_BASE_URL": fresh.url}

    def start(pipeline: str, log: str) -> Process:
        args = [
            "run", str(FIXTURES / pipeline), "--policy", str(POLICY), "--backend", "anthropic",
            "--run-id", RUN_ID, "--state-dir", str(tmp_path / "state"), "--log-format", "json",
        ]  # fmt: skip
        procs.append(_spawn(args, tmp_path / log, env))
        return procs[-1]

    yield start
    for proc in procs:
        _stop(proc)


def _query(db: Path, sql: str, *args: Any) -> list[tuple[Any, ...]]:
    """Read the run store without taking part in its writes (read-only URI)."""
    conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=5)
    try:
        return conn.execute(sql, args).fetchall()
    finally:
        conn.close()


def _count(db: Path, sql: str) -> int:
    if not db.exists():
        return 0
    try:
        return int(_query(db, sql, RUN_ID)[0][0])
    except sqlite3.OperationalError:  # schema not created yet, or a busy moment
        return 0


def _kill_when(proc: Process, ready: Callable[[], bool], what: str) -> None:
    """SIGKILL ``proc`` as soon as ``ready()``; fail if it ends first or never gets there."""
    deadline = time.monotonic() + STARTUP_TIMEOUT + RUN_TIMEOUT
    while not ready():
        if proc.poll() is not None:
            pytest.fail(f"the run exited ({proc.returncode}) before the kill point: {what}")
        if time.monotonic() > deadline:
            pytest.fail(f"the run never reached the kill point: {what}")
        time.sleep(POLL)
    os.kill(proc.pid, signal.SIGKILL)
    assert proc.wait(5) == -signal.SIGKILL


def _finish(proc: Process, log: Path) -> None:
    try:
        code = proc.wait(RUN_TIMEOUT)
    except subprocess.TimeoutExpired:
        proc.kill()
        pytest.fail(f"the resumed run did not finish within {RUN_TIMEOUT:.0f} s")
    assert code == 0, f"resumed run exited {code}:\n{log.read_text()[-3000:]}"


_STORE_USAGE = (
    "SELECT key, request_id, mode, input_tokens, cache_write_5m, cache_write_1h, cache_read,"
    " output_tokens FROM usage WHERE run_id = ?"
)


def _store_usage(db: Path) -> list[tuple[str, str, str, TokenUsage]]:
    return [
        (key, rid, mode, TokenUsage(input=i, cache_write_5m=w5, cache_write_1h=w1,
                                    cache_read=r, output=o))
        for key, rid, mode, i, w5, w1, r, o in _query(db, _STORE_USAGE, RUN_ID)
    ]  # fmt: skip


def _assert_every_item_succeeded_once(db: Path) -> None:
    statuses = _query(
        db, "SELECT status, count(*) FROM requests WHERE run_id = ? GROUP BY 1", RUN_ID
    )
    assert dict(statuses) == {"succeeded": ITEMS}
    keys = [key for key, *_ in _store_usage(db)]
    assert len(keys) == len(set(keys)) == ITEMS, "a finished request was recorded twice"


def test_sync_kill_resume_bills_every_request_once(
    fresh: Emulator, spawn_run: Callable[[str, str], Process], tmp_path: Path
) -> None:
    db = tmp_path / "state" / "llmflow.db"
    succeeded = "SELECT count(*) FROM requests WHERE run_id = ? AND status = 'succeeded'"

    first = spawn_run("sync.yaml", "run1.log")
    # Three rounds in: 60 items at 4 in flight and 80 ms each leave ~1 s of work to kill.
    _kill_when(first, lambda: _count(db, succeeded) >= 3 * MAX_CONCURRENCY, "12 succeeded")

    done_at_kill = _count(db, succeeded)
    in_flight = _query(
        db, "SELECT key, reserved_usd FROM requests WHERE run_id = ? AND status = 'in_flight'",
        RUN_ID,
    )  # fmt: skip
    if done_at_kill >= ITEMS:
        pytest.fail(f"the kill landed after the run finished ({done_at_kill} of {ITEMS} done)")
    # in flight for the store: those sent, and those reserved ahead of a free slot
    assert len(in_flight) <= MAX_CONCURRENCY + reserved_ahead(MAX_CONCURRENCY)

    second = spawn_run("sync.yaml", "run2.log")
    _finish(second, tmp_path / "run2.log")

    _assert_every_item_succeeded_once(db)
    ledger = fresh.ledger()
    assert {e["model"] for e in ledger} == {MODEL}
    assert {e["service_tier"] for e in ledger} == {"standard"}
    billed = {e["request_id"]: entry_usage(e) for e in ledger}
    assert len(billed) == len(ledger)
    # Only responses in flight at the kill may have been paid without being recorded.
    assert ITEMS <= len(ledger) <= ITEMS + min(len(in_flight), MAX_CONCURRENCY)
    recorded = {rid: usage for _, rid, _, usage in _store_usage(db)}
    assert recorded.keys() <= billed.keys(), "the store recorded a response nobody billed"
    for rid, usage in recorded.items():
        assert usage == billed[rid], f"{rid}: store {usage} != ledger {billed[rid]}"
    lost = billed.keys() - recorded.keys()
    assert len(lost) == len(ledger) - ITEMS <= len(in_flight)
    # The budget does not forget them: the reserved upper bounds of what was in flight
    # became the run's unrecorded spend, and they cover what was actually billed.
    ((unrecorded, sessions),) = _query(
        db, "SELECT unrecorded_usd, sessions FROM runs WHERE run_id = ?", RUN_ID
    )
    assert sessions == 2
    assert Decimal(unrecorded) == sum((Decimal(r) for _, r in in_flight), Decimal(0))
    haiku = load_catalog().get(MODEL)
    assert haiku is not None
    assert Decimal(unrecorded) >= sum((cost(billed[rid], haiku) for rid in lost), Decimal(0))


def test_batch_kill_resume_polls_instead_of_resubmitting(
    fresh: Emulator, spawn_run: Callable[[str, str], Process], tmp_path: Path
) -> None:
    db = tmp_path / "state" / "llmflow.db"

    first = spawn_run("batch.yaml", "run1.log")
    _kill_when(
        first,
        lambda: (
            _count(db, "SELECT count(*) FROM batches WHERE run_id = ? AND status <> 'creating'")
            >= 1
        ),
        "the batch recorded as submitted",
    )
    at_kill = _query(db, "SELECT batch_id, status, ended_at FROM batches WHERE run_id = ?", RUN_ID)
    assert len(at_kill) == 1
    ((batch_id, _, ended_at),) = at_kill
    if ended_at is not None:
        pytest.fail("the kill landed after the batch ended; nothing was left to resume")
    in_flight = _query(
        db, "SELECT count(*) FROM requests WHERE run_id = ? AND status = 'in_flight'"
        " AND batch_id = ?", RUN_ID, batch_id,
    )  # fmt: skip
    assert in_flight == [(ITEMS,)]

    second = spawn_run("batch.yaml", "run2.log")
    _finish(second, tmp_path / "run2.log")

    _assert_every_item_succeeded_once(db)
    # Exactly one batch was ever created: the resumed run polled it.
    listed = fresh.call("/v1/messages/batches?limit=100")
    assert [b["id"] for b in listed["data"]] == [batch_id]
    assert listed["data"][0]["request_counts"]["succeeded"] == ITEMS
    assert _query(db, "SELECT batch_id, status FROM batches WHERE run_id = ?", RUN_ID) == [
        (batch_id, "ended")
    ]
    ledger = fresh.ledger()
    assert len(ledger) == ITEMS
    assert {e["service_tier"] for e in ledger} == {"batch"}
    assert {e.get("batch_id") for e in ledger} == {batch_id}
    billed = {e["custom_id"]: entry_usage(e) for e in ledger}
    assert len(billed) == ITEMS
    recorded = {key: (mode, usage) for key, _, mode, usage in _store_usage(db)}
    assert recorded == {key: ("batch", usage) for key, usage in billed.items()}


def test_batch_killed_while_being_created_is_found_and_adopted(
    fresh: Emulator, spawn_run: Callable[[str, str], Process], tmp_path: Path
) -> None:
    db = tmp_path / "state" / "llmflow.db"
    first = spawn_run("batch.yaml", "run1.log")
    _kill_when(
        first,
        lambda: (
            _count(db, "SELECT count(*) FROM batches WHERE run_id = ? AND status = 'creating'") >= 1
            and len(fresh.call("/v1/messages/batches")["data"]) == 1
        ),
        "the intent durable and the batch created, its create request not yet answered",
    )
    ((intent, requests),) = _query(
        db, "SELECT batch_id, requests FROM batches WHERE run_id = ?", RUN_ID
    )
    assert intent.startswith("intent_") and requests == ITEMS
    held = _query(
        db, "SELECT count(*), sum(CAST(reserved_usd AS REAL)) FROM requests WHERE run_id = ?"
        " AND status = 'in_flight' AND batch_id = ?", RUN_ID, intent,
    )  # fmt: skip
    assert held[0][0] == ITEMS and held[0][1] > 0  # reserved before the create was sent

    second = spawn_run("batch.yaml", "run2.log")
    _finish(second, tmp_path / "run2.log")

    _assert_every_item_succeeded_once(db)
    listed = fresh.call("/v1/messages/batches?limit=100")
    assert len(listed["data"]) == 1, "the chunk was submitted twice"
    ((batch_id, status),) = _query(
        db, "SELECT batch_id, status FROM batches WHERE run_id = ?", RUN_ID
    )
    assert (batch_id, status) == (listed["data"][0]["id"], "ended")
    log = (tmp_path / "run2.log").read_text()
    assert '"outcome": "found"' in log or '"outcome":"found"' in log
    (((spent, reserved),)) = _query(
        db, "SELECT spent, reserved FROM budget_counters WHERE scope = ?", f"run/{RUN_ID}"
    )
    assert Decimal(reserved) == 0 and Decimal(spent) > 0
