"""Several workers on one run over a shared PostgreSQL store, as real processes.

The same ``llmflow run --run-id X --store postgresql://...`` is started three times at
once (from two working directories) against one ``llmflow emulator``: the workers
split the items with claims, every request is sent exactly once (the emulator's
ledger is the ground truth), and every worker exits with the run's final code. Then a
worker is killed mid-run: the survivor takes back its claims once its lease expires,
and finishes the run; what the dead worker had in flight stays counted as unrecorded.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path

import psycopg
import pytest

from tests.executor.test_kill_resume import (
    API_KEY,
    FIXTURES,
    ITEMS,
    POLICY,
    RUN_TIMEOUT,
    STARTUP_TIMEOUT,
    Emulator,
    Process,
    _free_port,
    _spawn,
    _stop,
    _wait_until_up,
)

RUN_ID = "shared-run"
LEASE = 2.0  # seconds: a dead worker's claims come back quickly in the test


@pytest.fixture(scope="module")
def emulator(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Emulator]:
    port = _free_port()
    log = tmp_path_factory.mktemp("emulator") / "emulator.log"
    proc = _spawn(
        ["emulator", "--host", "127.0.0.1", "--port", str(port), "--latency-ms", "250",
         "--batch-seconds", "1"],
        log,
    )  # fmt: skip
    try:
        yield _wait_until_up(proc, Emulator(f"http://127.0.0.1:{port}"))
    finally:
        _stop(proc)


def _worker(emulator: Emulator, url: str, pipeline: str, cwd: Path, log: Path) -> Process:
    env = {
        **os.environ,
        "ANTHROPIC_API_KEY": API_KEY,
        "ANTHROPIC_BASE_URL": emulator.url,
        "NO_PROXY": "127.0.0.1,localhost",
        "LLMFLOW_WORKER_LEASE_SECONDS": str(LEASE),
        "PYTHONPATH": str(Path(__file__).resolve().parents[2]),
    }
    args = [
        "run", str(FIXTURES / pipeline), "--policy", str(POLICY), "--backend", "anthropic",
        "--run-id", RUN_ID, "--store", url, "--log-format", "json",
    ]  # fmt: skip
    cwd.mkdir(parents=True, exist_ok=True)
    with log.open("wb") as out:
        return subprocess.Popen(
            [
                sys.executable,
                "-c",
                "import sys; from llmflow.cli import main; sys.argv[0] = 'llmflow'; main()",
                *args,
            ],
            cwd=cwd,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
        )


def _rows(url: str, sql: str) -> list[tuple[object, ...]]:
    with psycopg.connect(url, autocommit=True) as conn:
        return list(conn.execute(sql, (RUN_ID,)).fetchall())


def _wait(proc: Process, log: Path) -> int:
    try:
        return proc.wait(STARTUP_TIMEOUT + RUN_TIMEOUT)
    except subprocess.TimeoutExpired:
        proc.kill()
        pytest.fail(f"a worker did not finish:\n{log.read_text()[-3000:]}")


@pytest.mark.parametrize("pipeline", ["sync.yaml", "batch.yaml"])
def test_three_workers_split_one_run_and_send_every_request_once(
    emulator: Emulator, pg_url: str, tmp_path: Path, pipeline: str
) -> None:
    emulator.call("/_emulator/reset", "POST")
    logs = [tmp_path / f"worker{i}.log" for i in range(3)]
    dirs = [tmp_path / "a", tmp_path / "b", tmp_path / "a"]  # two working directories
    procs = [_worker(emulator, pg_url, pipeline, d, log) for d, log in zip(dirs, logs, strict=True)]
    try:
        codes = [_wait(p, log) for p, log in zip(procs, logs, strict=True)]
    finally:
        for p in procs:
            _stop(p)
    assert codes == [0, 0, 0], "\n".join(log.read_text()[-2000:] for log in logs)
    statuses = _rows(pg_url, "SELECT status, count(*) FROM requests WHERE run_id = %s GROUP BY 1")
    assert dict(statuses) == {"succeeded": ITEMS}
    ledger = emulator.ledger()
    assert len(ledger) == ITEMS, "a request was sent by two workers"
    usage = _rows(pg_url, "SELECT request_id FROM usage WHERE run_id = %s")
    assert len(usage) == ITEMS
    if pipeline == "sync.yaml":
        assert {rid for (rid,) in usage} == {e["request_id"] for e in ledger}
    senders = _rows(pg_url, "SELECT count(DISTINCT worker_id) FROM requests WHERE run_id = %s")
    if pipeline == "sync.yaml":  # 60 requests, 4 at a time, 250 ms each: room for all three
        assert int(str(senders[0][0])) >= 2, "the workers did not split the run"
    ((status,),) = _rows(pg_url, "SELECT status FROM runs WHERE run_id = %s")
    assert status == "succeeded"
    ((spent, reserved),) = _rows(
        pg_url, "SELECT spent, reserved FROM budget_counters WHERE scope = 'run/' || %s"
    )
    assert Decimal(reserved) == 0 and Decimal(spent) > 0


def test_a_killed_workers_claims_are_taken_back_after_its_lease(
    emulator: Emulator, pg_url: str, tmp_path: Path
) -> None:
    emulator.call("/_emulator/reset", "POST")
    first = _worker(emulator, pg_url, "sync.yaml", tmp_path / "a", tmp_path / "w1.log")
    deadline = time.monotonic() + STARTUP_TIMEOUT + RUN_TIMEOUT
    while True:
        done = _rows(
            pg_url, "SELECT count(*) FROM requests WHERE run_id = %s AND status = 'succeeded'"
        )[0][0] if _has_run(pg_url) else 0  # fmt: skip
        if int(str(done)) >= 8:
            break
        if first.poll() is not None or time.monotonic() > deadline:
            pytest.fail(f"the first worker never got going:\n{(tmp_path / 'w1.log').read_text()}")
        time.sleep(0.01)
    os.kill(first.pid, signal.SIGKILL)
    first.wait(5)
    in_flight = _rows(
        pg_url,
        "SELECT count(*), coalesce(sum(reserved_usd), 0) FROM requests WHERE run_id = %s"
        " AND status = 'in_flight'",
    )[0]

    second = _worker(emulator, pg_url, "sync.yaml", tmp_path / "b", tmp_path / "w2.log")
    assert _wait(second, tmp_path / "w2.log") == 0, (tmp_path / "w2.log").read_text()[-3000:]
    statuses = _rows(pg_url, "SELECT status, count(*) FROM requests WHERE run_id = %s GROUP BY 1")
    assert dict(statuses) == {"succeeded": ITEMS}
    ledger = emulator.ledger()
    lost = len(ledger) - ITEMS
    assert 0 <= lost <= int(str(in_flight[0]))  # only what was in flight may be paid twice
    ((unrecorded,),) = _rows(pg_url, "SELECT unrecorded_usd FROM runs WHERE run_id = %s")
    assert Decimal(str(unrecorded)) == Decimal(str(in_flight[1]))  # counted, not forgotten
    log = (tmp_path / "w2.log").read_text()
    assert "worker.reclaimed" in log or "run.resumed" in log


def _has_run(url: str) -> bool:
    try:
        return bool(_rows(url, "SELECT 1 FROM runs WHERE run_id = %s"))
    except psycopg.Error:
        return False
