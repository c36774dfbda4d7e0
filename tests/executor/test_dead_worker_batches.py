"""A worker killed while its batch runs, resumed before its lease expires (PostgreSQL).

What ``bench/kill_trials.py --pg-lease 60`` found: ``llmflow run`` on a PostgreSQL
store is killed (-9) while its batch is in progress, and the same run id is started
again at once. The new worker does not take the batch when the step starts (the dead
worker's lease still holds), so it waits in ``step_settled``; once the lease has
expired it takes back the dead worker's work (``reclaim_dead``: the batch row loses
its worker). But a batch step resumes open batches only when it starts, and the
batch's requests stay ``in_flight`` under the dead worker's id: every later
``step_settled`` sees them held by a dead worker again, reclaims nothing, returns
True, and the step passes again, without ever awaiting anything that suspends. The
process spins (thousands of ``worker.reclaimed`` a second, its own lease no longer
renewed) and the batch is never collected: the run never ends.

Made deterministic in-process: a first ``execute`` (``--detach``) submits the batch
and ends; its worker row is then made to look alive for one more second (as a
killed worker's is until its lease expires); a second ``execute`` must collect the
batch, without creating another, within a bounded time (a SIGALRM watchdog: the spin
never yields to the event loop).

The second test is what that first ``--detach`` showed: on a shared store it ends
``partial`` (exit 1), not ``pending`` (exit 75) as the README says.

Both failed before the fix: a batch step now adopts open batches on every pass (and
``open_batches`` moves their in-flight requests to the adopter), and a shared run
with batches left running ends ``pending``.
"""

from __future__ import annotations

import asyncio
import signal
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import FrameType

import psycopg
import pytest

from llmflow.emulator.config import EmulatorConfig
from llmflow.executor.retry import Backoff
from llmflow.executor.run import RunOutcome, RunRequest, execute
from llmflow.planner import build_plan_async
from llmflow.spec.loader import load_pair
from llmflow.tracker import RunStore
from llmflow.tracker.schema import timestamp
from tests.executor.conftest import CATALOG, Emulated

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "executor"
ITEMS = len((FIXTURES / "data" / "items.jsonl").read_text().splitlines())
RUN_ID = "dead-worker"
LEASE_LEFT = 1.0  # seconds the dead worker still looks alive to the new one
PATIENCE = 15.0  # the resumed run takes ~3 s; a hung one is stopped after this


async def _run(emu: Emulated, url: str, runs_dir: Path, *, detach: bool) -> RunOutcome:
    pipeline, policy = load_pair(FIXTURES / "batch.yaml", FIXTURES / "policy.yaml", inputs={})
    assert policy is not None
    plan = await build_plan_async(pipeline, policy, inputs={}, catalog=CATALOG)
    client = emu.client()
    store = RunStore.open(url, runs_dir=runs_dir)
    try:
        request = RunRequest(
            pipeline, policy, plan, CATALOG, client, store, RUN_ID, {}, detach=detach,
            backoff=Backoff(base_seconds=0.001, max_seconds=0.01),
        )  # fmt: skip
        return await execute(request)
    finally:
        await client.close()
        store.close()


class Hung(Exception):
    """The run did not end in time."""


@contextmanager
def watchdog(seconds: float) -> Iterator[None]:
    """Fail the test if the block runs longer than ``seconds``. A SIGALRM, since the
    hung run never yields to its event loop (``asyncio.wait_for`` could not fire)."""
    fired: list[bool] = []

    def expire(signum: int, frame: FrameType | None) -> None:
        fired.append(True)
        raise Hung  # wherever the run is: the store may wrap it in its own error

    previous = signal.signal(signal.SIGALRM, expire)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    except Exception:
        if not fired:
            raise
        pytest.fail(
            f"the resumed run did not end within {seconds:.0f} s: it never collects the"
            " dead worker's batch once its lease has expired"
        )
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


def _rows(url: str, sql: str) -> list[tuple[object, ...]]:
    with psycopg.connect(url, autocommit=True) as conn:
        return list(conn.execute(sql, (RUN_ID,)).fetchall())


def test_a_dead_workers_running_batch_is_collected_once_its_lease_expires(
    emulated: Callable[[EmulatorConfig], Emulated], pg_url: str, tmp_path: Path
) -> None:
    emu = emulated(EmulatorConfig(batch_seconds=1.5))
    asyncio.run(_run(emu, pg_url, tmp_path, detach=True))  # "pending": see below
    ((batch_id, worker),) = _rows(
        pg_url, "SELECT batch_id, worker_id FROM batches WHERE run_id = %s"
    )  # fmt: skip
    held = _rows(
        pg_url, "SELECT count(*) FROM requests WHERE run_id = %s AND status = 'in_flight'"
    )  # fmt: skip
    assert held == [(ITEMS,)]
    # The first worker did not end: it was killed, and its lease holds a little longer.
    until = timestamp(datetime.now(UTC) + timedelta(seconds=LEASE_LEFT))
    with psycopg.connect(pg_url, autocommit=True) as conn:
        conn.execute(
            "UPDATE workers SET ended_at = NULL, lease_until = %s WHERE run_id = %s"
            " AND worker_id = %s",
            (until, RUN_ID, worker),
        )

    with watchdog(PATIENCE):
        second = asyncio.run(_run(emu, pg_url, tmp_path, detach=False))
    assert second.status == "succeeded"
    statuses = _rows(pg_url, "SELECT status, count(*) FROM requests WHERE run_id = %s GROUP BY 1")
    assert statuses == [("succeeded", ITEMS)]
    ledger = asyncio.run(emu.ledger())["requests"]
    assert {e["batch_id"] for e in ledger} == {batch_id}, "the chunk was submitted again"
    assert len(ledger) == ITEMS


def test_detach_on_a_shared_store_ends_pending(
    emulated: Callable[[EmulatorConfig], Emulated], pg_url: str, tmp_path: Path
) -> None:
    """``--detach`` with a batch still running is "pending" (exit 75) on PostgreSQL too."""
    emu = emulated(EmulatorConfig(batch_seconds=30))
    outcome = asyncio.run(_run(emu, pg_url, tmp_path, detach=True))
    assert (outcome.status, outcome.exit_code) == ("pending", 75)
