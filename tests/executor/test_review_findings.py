"""Regression tests for executor bugs found in review; each names the bug it pins down.

Runs go through the in-process emulator, wrapped where a test needs the API to answer
one particular request badly. Every run is bounded by ``_BOUND`` seconds so a
regression shows up as a failure, not a hung suite.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
import structlog.testing

from llmflow.emulator.config import EmulatorConfig
from llmflow.executor.retry import Backoff
from llmflow.executor.run import RunOutcome, RunRequest, execute
from llmflow.planner import build_plan_async
from llmflow.spec.loader import load_pair
from llmflow.tracker import RunStore

from .conftest import CATALOG, Emulated  # type: ignore[import-not-found]

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "review"
_BOUND = 20.0  # seconds: a hang guard, not a timing assertion

Scope = dict[str, Any]
Receive = Callable[[], Any]
Send = Callable[[dict[str, Any]], Any]
Asgi = Callable[[Scope, Receive, Send], Any]


class Faulty:
    """An ASGI wrapper that answers chosen ``POST /v1/messages`` calls with an error."""

    def __init__(
        self,
        app: Asgi,
        fail: Callable[[int], tuple[int, str, bool] | None],
        matches: Callable[[str, str], bool] = lambda method, path: (
            (method, path) == ("POST", "/v1/messages")
        ),
    ) -> None:
        self.app = app
        self.fail = fail  # call number (from 1) -> (status, error type, retryable) or None
        self.matches = matches  # (method, path) -> whether the call counts
        self.calls = 0

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and self.matches(scope["method"], scope["path"]):
            self.calls += 1
            verdict = self.fail(self.calls)
            if verdict is not None:
                await _error(send, *verdict)
                return
        await self.app(scope, receive, send)


async def _error(send: Send, status: int, error_type: str, retryable: bool) -> None:
    body = json.dumps(
        {"type": "error", "error": {"type": error_type, "message": "injected"}, "request_id": "x"}
    ).encode()
    should_retry = b"true" if retryable else b"false"
    headers = [(b"content-type", b"application/json"), (b"x-should-retry", should_retry)]
    if status == 429:
        headers.append((b"retry-after", b"5"))
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


async def _run(
    emu: Emulated,
    pipeline: str,
    state: Path,
    *,
    policy: str = "policy.yaml",
    run_id: str = "r1",
    budget: Decimal | None = None,
    interrupt: asyncio.Event | None = None,
    backoff: Backoff | None = None,
) -> RunOutcome:
    pipeline_file, policy_file = load_pair(FIXTURES / pipeline, FIXTURES / policy, inputs={})
    assert policy_file is not None
    plan = await build_plan_async(pipeline_file, policy_file, inputs={}, catalog=CATALOG)
    client = emu.client()
    store = RunStore.open(state)
    try:
        request = RunRequest(
            pipeline_file, policy_file, plan, CATALOG, client, store, run_id, {},
            budget_usd=budget, backoff=backoff or Backoff(base_seconds=0.001, max_seconds=0.01),
        )  # fmt: skip
        run = asyncio.create_task(execute(request, interrupt=interrupt))
        done, _ = await asyncio.wait({run}, timeout=_BOUND)
        if not done:  # execute() ends "interrupted" when cancelled: do not mistake that
            run.cancel()
            await asyncio.gather(run, return_exceptions=True)
            raise AssertionError(f"the run did not end within {_BOUND} s")
        return run.result()
    finally:
        await client.close()
        store.close()


def _step_counts(outcome: RunOutcome) -> dict[str, tuple[int, int]]:
    summary = json.loads(outcome.summary_path.read_text())
    return {s["id"]: (s["succeeded"], s["failed"]) for s in summary["steps"]}


@pytest.mark.parametrize(
    "status,error_type,attempts",
    [(400, "invalid_request_error", 1), (529, "overloaded_error", 3)],  # 3 = max_attempts
)
async def test_followers_do_not_hang_when_the_warm_leader_fails_for_good(
    emulated: Callable[[EmulatorConfig], Emulated],
    tmp_path: Path,
    status: int,
    error_type: str,
    attempts: int,
) -> None:
    """Bug: a cache-warm leader that failed for good (a non-retryable error, or retries
    exhausted) returned without opening or handing over the gate: every follower
    waited forever and the run never ended."""
    emu = emulated(EmulatorConfig(latency_ms=5))
    # the leader goes alone: calls 1..attempts are its attempts (400: not retried;
    # 529: retried until limits.max_attempts, then it fails for good)
    faulty = Faulty(
        emu.app, lambda n: (status, error_type, status >= 500) if n <= attempts else None
    )
    outcome = await _run(Emulated(faulty), "fanout.yaml", tmp_path / "state")  # type: ignore[arg-type]
    assert outcome.status == "partial" and outcome.exit_code == 1
    assert _step_counts(outcome) == {"answer": (5, 1)}
    ledger = await emu.ledger()
    writes = [e for e in ledger["requests"] if e["usage"]["cache_creation_input_tokens"] > 0]
    assert len(ledger["requests"]) == 5 and len(writes) == 1  # a follower took over the lead


async def _until(condition: Callable[[], bool]) -> None:
    """Wait (bounded) until ``condition`` holds."""
    for _ in range(int(_BOUND / 0.01)):
        if condition():
            return
        await asyncio.sleep(0.01)
    raise AssertionError("condition never held")


async def test_an_interrupt_during_a_retry_wait_sends_nothing_more(
    emulated: Callable[[EmulatorConfig], Emulated], tmp_path: Path
) -> None:
    """Bug: a request waiting out a 429's retry-after slept the whole delay after the
    run was interrupted, then sent another (billable) attempt anyway."""
    emu = emulated(EmulatorConfig())
    faulty = Faulty(emu.app, lambda n: (429, "rate_limit_error", True) if n == 1 else None)
    interrupt = asyncio.Event()
    run = asyncio.create_task(
        _run(
            Emulated(faulty),  # type: ignore[arg-type]
            "single.yaml",
            tmp_path / "state",
            interrupt=interrupt,
            backoff=Backoff(max_seconds=60),  # honour retry-after: 5 s
        )
    )
    await _until(lambda: faulty.calls == 1)
    await asyncio.sleep(0.1)  # the 429 is being waited out (if not yet: same expectation)
    interrupt.set()
    outcome = await run
    assert outcome.status == "interrupted" and outcome.exit_code == 130
    assert faulty.calls == 1  # no attempt after the interrupt
    assert _step_counts(outcome) == {"answer": (0, 1)}  # recorded, resumable
    resumed = await _run(emu, "single.yaml", tmp_path / "state")
    assert resumed.status == "succeeded" and len((await emu.ledger())["requests"]) == 1


async def test_an_interrupt_while_a_batch_is_processing_ends_the_run_and_resume_polls_it(
    emulated: Callable[[EmulatorConfig], Emulated], tmp_path: Path
) -> None:
    """Bug: an interrupted run kept polling its in-flight batch until the batch ended
    (up to 24 h): Ctrl-C / SIGTERM could not stop ``llmflow run``."""
    now = [1_000_000.0]
    emu = emulated(EmulatorConfig(batch_seconds=3600, clock=lambda: now[0]))
    interrupt = asyncio.Event()
    state = tmp_path / "state"
    run = asyncio.create_task(_run(emu, "batch.yaml", state, interrupt=interrupt))
    store = RunStore.open(state)
    try:
        await _until(lambda: bool(store.batches("r1")))
    finally:
        store.close()
    interrupt.set()
    outcome = await run
    assert outcome.status == "interrupted" and outcome.exit_code == 130
    now[0] += 3601  # the batch ends while no run is watching
    resumed = await _run(emu, "batch.yaml", state)
    assert resumed.status == "succeeded" and _step_counts(resumed) == {"classify": (6, 0)}
    ledger = await emu.ledger()
    assert len(ledger["requests"]) == 6  # polled on resume, not submitted again


async def test_resuming_two_batch_steps_of_a_wave_leaks_no_reservation(
    emulated: Callable[[EmulatorConfig], Emulated], tmp_path: Path
) -> None:
    """Bug: each batch step's resume re-reserved the open batches of *every* step of the
    run, and settled only its own: the other steps' copies stayed reserved for the
    rest of the run (shrinking its budget, and a refused dispatch waited for them to
    settle, which never happens)."""
    now = [1_000_000.0]
    emu = emulated(EmulatorConfig(batch_seconds=3600, clock=lambda: now[0]))
    interrupt = asyncio.Event()
    state = tmp_path / "state"
    run = asyncio.create_task(_run(emu, "two_batches.yaml", state, interrupt=interrupt))
    store = RunStore.open(state)
    try:
        await _until(lambda: len(store.batches("r1")) == 2)
    finally:
        store.close()
    interrupt.set()
    assert (await run).status == "interrupted"
    now[0] += 3601
    # $0.003 covers the batches' cost (~$0.0005) plus digest's upper bound (~$0.0017),
    # not also the leaked copies of the batches' upper bounds (~$0.0015)
    with structlog.testing.capture_logs() as logs:
        resumed = await _run(emu, "two_batches.yaml", state, budget=Decimal("0.003"))
    assert resumed.status == "succeeded", resumed
    assert _step_counts(resumed) == {"label": (6, 0), "product": (6, 0), "digest": (1, 0)}
    assert [e for e in logs if e["event"] == "budget.unsettled_at_finish"] == []
    assert len((await emu.ledger())["requests"]) == 13  # each request billed once


async def test_a_transient_error_while_polling_a_batch_is_retried(
    emulated: Callable[[EmulatorConfig], Emulated], tmp_path: Path
) -> None:
    """Bug: the client has no SDK retries, and batch polling had none of its own: one
    500/529 on a poll (likely over a batch's hours) crashed ``llmflow run`` with a
    traceback, no summary and the run left 'running'."""
    emu = emulated(EmulatorConfig(batch_seconds=0))

    def is_poll(method: str, path: str) -> bool:
        return method == "GET" and path.startswith("/v1/messages/batches/msgbatch")

    faulty = Faulty(emu.app, lambda n: (529, "overloaded_error", True) if n <= 2 else None, is_poll)
    outcome = await _run(Emulated(faulty), "batch.yaml", tmp_path / "state")  # type: ignore[arg-type]
    assert outcome.status == "succeeded" and _step_counts(outcome) == {"classify": (6, 0)}
    assert faulty.calls >= 3 and len((await emu.ledger())["requests"]) == 6
