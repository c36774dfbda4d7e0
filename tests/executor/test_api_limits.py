"""The API's own limits, end to end: the organisation's spend cap and enforced rate limits.

``llmflow emulator`` runs as a real subprocess on loopback (``--spend-cap-usd``,
``--rate-limits``); ``llmflow run --backend anthropic`` talks to it through the SDK
(``ANTHROPIC_BASE_URL``), invoked in-process through the CLI so the suite does not pay
a second interpreter start per test. The emulator's log says how many 429s it sent
(``emulator.error``) and its ledger (``GET /_emulator/ledger``) is what was billed.

* The spend cap is a budget stop (exit 3), never a retry: the refused requests are
  recorded as failed after one attempt, the message and the resume line say the cap
  must be raised, and the store's usage is exactly the ledger.
* Enforced rate limits are paced from the ``anthropic-ratelimit-*`` headers: the run
  waits for the bucket to refill (``ratelimit.paced``) instead of spending its
  ``max_attempts: 2`` on 429s, and every item succeeds. The tests at the end pin, without
  a clock race, that nothing is sent once a stop is decided, and that a new observation
  never hands out a slot already promised to a waiting request.
"""

from __future__ import annotations

import contextlib
import json
import os
import shlex
import socket
import sqlite3
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from structlog.testing import capture_logs
from typer.testing import CliRunner

from llmflow.catalog import TokenUsage
from llmflow.cli import app
from llmflow.emulator.config import EmulatorConfig
from llmflow.emulator.ledger import entry_cost, entry_usage
from llmflow.emulator.spendcap import ERROR_CODE, spend_limit_error
from llmflow.executor.pacing import RatePacer
from llmflow.executor.retry import Failure, Verdict, spend_cap_message

ROOT = Path(__file__).resolve().parents[2]
FIXTURES = ROOT / "tests" / "fixtures" / "executor"
PIPELINE = FIXTURES / "sync.yaml"  # one sync step over 60 items, max_tokens 8
POLICY = FIXTURES / "policy.yaml"  # limits.max_concurrency 4, limits.max_attempts 2
SERIAL_POLICY = ROOT / "tests" / "fixtures" / "api_limits" / "serial-policy.yaml"  # 1 in flight
ITEMS = len((FIXTURES / "data" / "items.jsonl").read_text().splitlines())
MAX_CONCURRENCY = 4
API_KEY = "test"
RUN_ID = "api-limits"

# A request of the fixture costs about $0.000072 on claude-haiku-4-5 (~32 input and 8
# output tokens): the cap lets about ten of them through.
SPEND_CAP_USD = Decimal("0.0007")
# The emulator's buckets start full: the first RPM requests go at once (~1 s, one at a
# time), the other ITEMS - RPM wait for the refill (RPM/60 a second): ~4.3 s in all.
RPM = 56

STARTUP_TIMEOUT = 30.0  # seconds for the emulator to answer (imports take seconds)
_LLMFLOW = "import sys; from llmflow.cli import main; sys.argv[0] = 'llmflow'; main()"

runner = CliRunner()
Process = subprocess.Popen[bytes]


@dataclass(frozen=True)
class Emulator:
    """A running ``llmflow emulator`` subprocess and its log."""

    url: str
    log: Path
    proc: Process

    def call(self, path: str, method: str = "GET") -> Any:
        req = urllib.request.Request(self.url + path, method=method, headers={"x-api-key": API_KEY})
        with urllib.request.urlopen(req, timeout=5) as response:
            return json.loads(response.read())

    def ledger(self) -> list[dict[str, Any]]:
        entries: list[dict[str, Any]] = self.call("/_emulator/ledger")["requests"]
        return entries

    def log_size(self) -> int:
        return self.log.stat().st_size

    def log_lines(self, since: int = 0) -> list[str]:
        with self.log.open("rb") as f:
            f.seek(since)
            return f.read().decode("utf-8", "replace").splitlines()

    def refusals_429(self, since: int) -> int:
        """How many 429s the emulator answered since the log had ``since`` bytes."""
        return sum(
            "emulator.error" in line and "error_type=rate_limit_error" in line
            for line in self.log_lines(since)
        )


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _start(log: Path, *options: str) -> Emulator:
    """Start ``llmflow emulator OPTIONS...`` on a free loopback port."""
    port = _free_port()
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-c", _LLMFLOW, "emulator", "--host", "127.0.0.1",
             "--port", str(port), *options],
            cwd=ROOT, env={**os.environ, "PYTHONUNBUFFERED": "1"},
            stdout=out, stderr=subprocess.STDOUT,
        )  # fmt: skip
    return Emulator(f"http://127.0.0.1:{port}", log, proc)


def _wait_until_up(emulator: Emulator, deadline: float) -> None:
    while time.monotonic() < deadline:
        if emulator.proc.poll() is not None:
            pytest.fail(f"the emulator exited ({emulator.proc.returncode}):\n{_tail(emulator)}")
        with contextlib.suppress(OSError):
            emulator.call("/_emulator/ledger")
            return
        time.sleep(0.05)
    pytest.fail(f"the emulator did not answer within {STARTUP_TIMEOUT:.0f} s")


def _tail(emulator: Emulator) -> str:
    return "\n".join(emulator.log_lines()[-20:])


def _stop(proc: Process) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)


@dataclass(frozen=True)
class Emulators:
    capped: Emulator  # --spend-cap-usd
    limited: Emulator  # --rate-limits


@pytest.fixture(scope="module")
def emulators(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Emulators]:
    """Both emulators of the module, started at once (each start is seconds of imports)."""
    logs = tmp_path_factory.mktemp("emulators")
    started = Emulators(
        _start(logs / "capped.log", "--spend-cap-usd", str(SPEND_CAP_USD), "--latency-ms", "10"),
        _start(logs / "limited.log", "--rate-limits", f"rpm={RPM}"),
    )
    try:
        deadline = time.monotonic() + STARTUP_TIMEOUT
        _wait_until_up(started.capped, deadline)
        _wait_until_up(started.limited, deadline)
        yield started
    finally:
        _stop(started.capped.proc)
        _stop(started.limited.proc)


@dataclass(frozen=True)
class RunResult:
    exit_code: int
    stdout: str
    stderr: str
    events: list[dict[str, Any]]  # the JSON log
    seconds: float

    def named(self, event: str) -> list[dict[str, Any]]:
        return [e for e in self.events if e.get("event") == event]


def _run(emulator: Emulator, state: Path, policy: Path = POLICY) -> RunResult:
    """``llmflow run --backend anthropic --log-format json`` against ``emulator``."""
    args = [
        "run", str(PIPELINE), "--policy", str(policy), "--backend", "anthropic",
        "--run-id", RUN_ID, "--state-dir", str(state), "--log-format", "json",
    ]  # fmt: skip
    env = {"ANTHROPIC_API_KEY": API_KEY, "ANTHROPIC_BASE_URL": emulator.url}
    env["NO_PROXY"] = "127.0.0.1,localhost"
    started = time.monotonic()
    result = runner.invoke(app, args, env=env)
    seconds = time.monotonic() - started
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        raise result.exception
    events = []
    for line in result.stderr.splitlines():
        if line.startswith("{"):
            events.append(json.loads(line))
    return RunResult(result.exit_code, result.stdout, result.stderr, events, seconds)


def _query(db: Path, sql: str, *args: Any) -> list[tuple[Any, ...]]:
    conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=5)
    try:
        return conn.execute(sql, args).fetchall()
    finally:
        conn.close()


def _statuses(db: Path) -> dict[str, int]:
    sql = "SELECT status, count(*) FROM requests WHERE run_id = ? GROUP BY status"
    return {status: n for status, n in _query(db, sql, RUN_ID)}


def _assert_tracker_equals_ledger(db: Path, ledger: list[dict[str, Any]]) -> None:
    """Every billed response is recorded once, with the very usage the API billed."""
    rows = _query(
        db,
        "SELECT request_id, input_tokens, cache_write_5m, cache_write_1h, cache_read,"
        " output_tokens, thinking_tokens, cost_usd FROM usage WHERE run_id = ?",
        RUN_ID,
    )
    recorded = {
        rid: TokenUsage(input=i, cache_write_5m=w5, cache_write_1h=w1, cache_read=r,
                        output=o, thinking=t)
        for rid, i, w5, w1, r, o, t, _ in rows
    }  # fmt: skip
    assert len(recorded) == len(rows), "a response was recorded twice"
    billed = {e["request_id"]: entry_usage(e) for e in ledger}
    assert len(billed) == len(ledger)
    assert recorded == billed
    spent = sum((Decimal(c) for *_, c in rows), Decimal(0))
    assert spent == sum((entry_cost(e) for e in ledger), Decimal(0))


def test_the_organisation_spend_cap_is_a_budget_stop_never_retried(
    emulators: Emulators, tmp_path: Path
) -> None:
    emulator = emulators.capped
    emulator.call("/_emulator/reset", "POST")
    since = emulator.log_size()
    db = tmp_path / "state" / "llmflow.db"

    run = _run(emulator, tmp_path / "state")

    assert run.exit_code == 3, run.stdout + run.stderr
    assert f"run {RUN_ID}: budget_stopped" in run.stdout
    # The message is the one the executor writes for the cap, with the API's error code.
    api_error = spend_limit_error()
    expected = spend_cap_message(
        Failure(
            Verdict.SPEND_CAP, 429, api_error.error_type, api_error.message, None, None,
            error_code=ERROR_CODE,
        )
    )  # fmt: skip
    assert "organisation's monthly spend cap is reached" in expected
    assert f"(429 {ERROR_CODE})" in expected
    assert "stopped by the budget after $" in run.stderr
    assert expected in run.stderr, run.stderr
    # The resume line says a resume can only succeed once the cap is raised, and it does
    # not offer a larger --budget (this run's own budget is not what stopped it).
    (resume,) = [line for line in run.stderr.splitlines() if line.startswith("resume with")]
    when, _, command = resume.partition(": ")
    assert when == "resume with (once the organisation's spend cap is raised or its month resets)"
    argv = shlex.split(command)
    assert argv[:3] == ["llmflow", "run", str(PIPELINE)]
    assert argv[argv.index("--run-id") + 1] == RUN_ID
    assert argv[argv.index("--backend") + 1] == "anthropic"
    assert "--budget" not in argv

    # Some requests succeeded before the cap; the run stopped long before the end.
    statuses = _statuses(db)
    succeeded, failed = statuses.get("succeeded", 0), statuses.get("failed", 0)
    # (pending: reserved ahead of a free slot, never sent, given back at the stop)
    assert set(statuses) <= {"succeeded", "failed", "pending"}, statuses
    assert succeeded >= 1 and succeeded + failed < ITEMS // 2, statuses
    unsent = _query(
        db, "SELECT attempts, reserved_usd FROM requests WHERE run_id = ? AND status = 'pending'",
        RUN_ID,
    )  # fmt: skip
    assert all(row == (0, None) for row in unsent), unsent
    # Each refused request was sent once: the emulator's 429s are exactly the failed
    # requests, one attempt each. (How many were sent after the stop: see the test
    # below; were nothing dispatched after it, at most MAX_CONCURRENCY would be refused.)
    refusals = emulator.refusals_429(since)
    assert 1 <= refusals == failed
    failures = _query(
        db, "SELECT attempts, error FROM requests WHERE run_id = ? AND status = 'failed'", RUN_ID
    )
    assert all(attempts == 1 for attempts, _ in failures), failures
    assert all(error.startswith("429 rate_limit_error:") for _, error in failures), failures
    assert all("spend limit" in error for _, error in failures), failures
    assert run.named("request.retry") == []
    assert len(run.named("request.failed")) == failed
    assert [e["reason"] for e in run.named("run.stopping")] == ["budget"]
    assert any("emulator.spend_cap.reached" in line for line in emulator.log_lines(since))

    # Tracker == ledger: the store recorded exactly what the API billed.
    ledger = emulator.ledger()
    assert len(ledger) == succeeded
    assert sum((entry_cost(e) for e in ledger), Decimal(0)) >= SPEND_CAP_USD
    _assert_tracker_equals_ledger(db, ledger)


def test_enforced_rate_limits_are_paced_not_retried_into_failure(
    emulators: Emulators, tmp_path: Path
) -> None:
    emulator = emulators.limited
    emulator.call("/_emulator/reset", "POST")  # every bucket full
    since = emulator.log_size()
    db = tmp_path / "state" / "llmflow.db"

    run = _run(emulator, tmp_path / "state", SERIAL_POLICY)

    assert run.exit_code == 0, run.stdout + run.stderr
    assert f"run {RUN_ID}: succeeded" in run.stdout
    assert _statuses(db) == {"succeeded": ITEMS}
    # The run waited for the requests bucket to refill rather than sending into a 429.
    # (It must: its first RPM requests normally take ~1 s, the bucket refills one
    # request's worth every 60/RPM s, and the API admits no more than that.)
    paced = run.named("ratelimit.paced")
    assert paced, f"the run never waited for the rate limit ({run.seconds:.1f} s)"
    assert {e["limit"] for e in paced} == {"requests"}
    assert all(0 < e["delay"] <= 60 / RPM + 0.01 for e in paced)  # one request's refill
    assert run.seconds >= (ITEMS - RPM) * 60 / RPM * 0.95
    # Paced, not retried: the API refused nothing, every request went once.
    refusals = emulator.refusals_429(since)
    assert refusals == 0, f"{refusals} requests were refused: pacing did not hold them"
    assert run.named("request.retry") == []
    assert run.named("request.failed") == []
    ((attempts,),) = _query(db, "SELECT max(attempts) FROM requests WHERE run_id = ?", RUN_ID)
    assert attempts == 1

    ledger = emulator.ledger()
    assert len(ledger) == ITEMS
    _assert_tracker_equals_ledger(db, ledger)


async def test_nothing_is_sent_once_the_spend_cap_has_stopped_the_run(
    emulated: Any, run_pipeline: Any, tmp_path: Path
) -> None:
    """In-process and deterministic: a cap already reached refuses the first request, so
    only the first group (every concurrency slot, sent at once) may reach the API."""
    emu = emulated(EmulatorConfig(spend_cap_usd=Decimal(0), latency_ms=5))
    with capture_logs() as logs:
        outcome = await run_pipeline(emu, PIPELINE, POLICY, run_id=RUN_ID)
    assert (outcome.status, outcome.exit_code) == ("budget_stopped", 3)
    assert (await emu.ledger())["requests"] == []
    refused = [e for e in logs if e["event"] == "emulator.error"]
    assert [e["event"] for e in logs if e["event"] == "request.retry"] == []
    assert len(refused) == MAX_CONCURRENCY


def test_an_observation_does_not_hand_out_a_slot_already_promised_to_a_waiting_request() -> None:
    """What the concurrent end-to-end run shows (~1 run in 4 ends ``partial``: paced
    delays 1.03, 2.08, then 1.05 s; the third request collides with the first, gets a
    429, and its retry a second one). A response reporting ``remaining: 0`` arrives
    while two reservations wait to be sent: it cannot have counted them, so a third
    reservation must come after both (limit 60/min: one slot a second)."""
    wall = 1_800_000_000.0
    reset = datetime.fromtimestamp(wall + 60, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    headers = {
        "anthropic-ratelimit-requests-limit": "60",
        "anthropic-ratelimit-requests-remaining": "0",
        "anthropic-ratelimit-requests-reset": reset,
    }
    pacer = RatePacer(clock=lambda: 0.0, wall_clock=lambda: wall)
    pacer.observe(headers, 0.0)
    first = pacer.reserve(input_tokens=0, output_tokens=0, now=0.0)
    second = pacer.reserve(input_tokens=0, output_tokens=0, now=0.0)
    assert (first, second) == (1.0, 2.0)
    pacer.observe(headers, 0.01)  # the response of a request sent before both
    third = pacer.reserve(input_tokens=0, output_tokens=0, now=0.01)
    assert 0.01 + third >= 3.0 - 1e-6, f"released at {0.01 + third:.2f} s, with the first"
