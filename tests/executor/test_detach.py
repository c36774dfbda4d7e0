"""``llmflow run --detach``: submit the batches, exit 75, collect on a later run.

Real processes against an ``llmflow emulator`` subprocess whose batches take 3 s: the
first run submits and exits 75 ("pending"); running the same id at once polls once and
exits 75 again; once the batch has ended, the same command collects it and exits 0.
Exactly one batch is ever created.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.executor.test_kill_resume import (
    API_KEY,
    FIXTURES,
    ITEMS,
    POLICY,
    RUN_TIMEOUT,
    STARTUP_TIMEOUT,
    Emulator,
    _free_port,
    _query,
    _spawn,
    _stop,
    _wait_until_up,
)

BATCH_SECONDS = 3.0


@pytest.fixture(scope="module")
def emulator(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Emulator]:
    port = _free_port()
    log = tmp_path_factory.mktemp("emulator") / "emulator.log"
    proc = _spawn(
        ["emulator", "--host", "127.0.0.1", "--port", str(port), "--batch-seconds",
         str(BATCH_SECONDS)],
        log,
    )  # fmt: skip
    try:
        yield _wait_until_up(proc, Emulator(f"http://127.0.0.1:{port}"))
    finally:
        _stop(proc)


def _run(emulator: Emulator, state: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "ANTHROPIC_API_KEY": API_KEY, "ANTHROPIC_BASE_URL": emulator.url,
           "NO_PROXY": "127.0.0.1,localhost"}  # fmt: skip
    args = [
        "run", str(FIXTURES / "batch.yaml"), "--policy", str(POLICY), "--backend", "anthropic",
        "--run-id", "detached", "--store", str(state), "--detach", *extra,
    ]  # fmt: skip
    return subprocess.run(
        [sys.executable, "-c",
         "import sys; from llmflow.cli import main; sys.argv[0] = 'llmflow'; main()", *args],
        env=env, capture_output=True, text=True, timeout=STARTUP_TIMEOUT + RUN_TIMEOUT,
    )  # fmt: skip


def test_detach_submits_exits_75_and_a_later_run_collects(
    emulator: Emulator, tmp_path: Path
) -> None:
    emulator.call("/_emulator/reset", "POST")
    state = tmp_path / "state"
    db = state / "llmflow.db"
    started = time.monotonic()
    first = _run(emulator, state)
    assert first.returncode == 75, first.stdout + first.stderr
    assert "batches are still running; collect with:" in first.stderr
    assert "--detach" in first.stderr.splitlines()[-1]
    ((status,),) = _query(db, "SELECT status FROM runs WHERE run_id = ?", "detached")
    assert status == "pending"
    assert len(_query(db, "SELECT batch_id FROM batches WHERE run_id = ?", "detached")) == 1

    if time.monotonic() - started < BATCH_SECONDS - 0.5:  # still running: polled once, 75
        again = _run(emulator, state)
        assert again.returncode == 75, again.stdout + again.stderr

    time.sleep(max(0.0, BATCH_SECONDS + 0.5 - (time.monotonic() - started)))
    last = _run(emulator, state)
    assert last.returncode == 0, last.stdout + last.stderr
    statuses = _query(
        db, "SELECT status, count(*) FROM requests WHERE run_id = ? GROUP BY 1", "detached"
    )
    assert dict(statuses) == {"succeeded": ITEMS}
    listed = emulator.call("/v1/messages/batches?limit=100")
    assert len(listed["data"]) == 1, "the detached chunk was submitted again"
