"""One worker among several on a run (a PostgreSQL store): lease, step barriers, the end.

Every worker runs the same plan, wave by wave, claiming requests as it goes
(:mod:`llmflow.tracker.workers`). A worker with nothing left to claim in a step waits
until no live worker holds any of the step's requests, taking back those of workers
whose lease expired, so that the next wave reads complete outputs. At the end each
worker waits until the others are done (or dead), the last one writes the run's final
status, and every worker returns that status: a scheduler reads the same exit code
from each. On SQLite (one process per run) none of this waits for anything.
"""

from __future__ import annotations

import asyncio
import contextlib
from dataclasses import dataclass, field

import structlog

from llmflow.tracker import Tracker
from llmflow.tracker.records import FinalStatus
from llmflow.tracker.workers import LEASE_SECONDS, new_worker_id

_log = structlog.get_logger("llmflow.executor")

#: How often a waiting worker looks at the store again.
POLL_SECONDS = 0.5

_STOPS: dict[str, FinalStatus] = {
    "budget": "budget_stopped",
    "backend": "failed",
    "interrupted": "interrupted",
}


@dataclass
class WorkerSession:
    """This process as a worker of the run: its id, its lease, what it waits for."""

    tracker: Tracker
    shared: bool
    worker_id: str = field(default_factory=new_worker_id)
    lease: float = LEASE_SECONDS
    _heartbeat: asyncio.Task[None] | None = None

    def start(self) -> None:
        """Register with a lease, renewed in the background while the run goes on."""
        store, run_id = self.tracker.store, self.tracker.run_id
        store.register_worker(run_id, self.worker_id, self.lease)
        if self.shared:
            self._heartbeat = asyncio.create_task(self._renew())
        _log.info("worker.started", run_id=run_id, worker=self.worker_id, shared=self.shared)

    async def _renew(self) -> None:
        store, run_id = self.tracker.store, self.tracker.run_id
        while True:
            await asyncio.sleep(self.lease / 3)
            store.renew_lease(run_id, self.worker_id, self.lease)

    async def stop_heartbeat(self) -> None:
        if self._heartbeat is not None:
            self._heartbeat.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._heartbeat
            self._heartbeat = None

    async def step_settled(self, step_id: str, stopping: asyncio.Event | None = None) -> bool:
        """Wait until no other live worker holds a request of the step. True when dead
        workers' requests were taken back (the caller passes over the step again)."""
        if not self.shared:
            return False
        store, run_id = self.tracker.store, self.tracker.run_id
        while True:
            live, dead = store.step_holds(run_id, step_id, self.worker_id)
            if dead:
                taken = store.reclaim_dead(run_id, self.tracker.scopes)
                _log.warning("worker.reclaimed", run_id=run_id, step=step_id, requests=taken)
                if not taken:  # a dead worker's batch: the next pass adopts it, unhurried
                    await asyncio.sleep(POLL_SECONDS)
                return True
            if not live or (stopping is not None and stopping.is_set()):
                return False
            await asyncio.sleep(POLL_SECONDS)

    async def final_status(
        self, mine: FinalStatus, stop_detail: str | None
    ) -> tuple[FinalStatus, bool]:
        """The run's final status once every worker is done, and whether this worker
        writes it (the last one standing). ``mine`` is how this worker's part ended."""
        store, run_id = self.tracker.store, self.tracker.run_id
        if not self.shared:
            return mine, True
        reason = _reason_of(mine)
        if reason is not None:
            store.set_stop(run_id, reason, stop_detail)
        interrupted = mine == "interrupted"
        store.end_worker(run_id, self.worker_id, release_claims=interrupted)
        if interrupted and store.live_workers(run_id):
            return "interrupted", False  # the others finish the run
        while store.live_workers(run_id):
            run = store.get_run(run_id)
            if run.status != "running":
                return _final(run.status), False
            await asyncio.sleep(POLL_SECONDS)
        run = store.get_run(run_id)
        if run.status != "running":
            return _final(run.status), False
        return self._settled_status(), True

    def _settled_status(self) -> FinalStatus:
        """What the store says of the whole run: complete, or why not."""
        store, run_id = self.tracker.store, self.tracker.run_id
        complete = all(t.succeeded >= t.requests for t in store.step_totals(run_id))
        if complete:
            return "succeeded"
        reason, _ = store.stop_of(run_id)
        if reason is None and store.open_batches(run_id):
            return "pending"  # batches left running (--detach): a later session collects
        return _STOPS.get(reason or "", "partial")


def _reason_of(status: FinalStatus) -> str | None:
    return next((reason for reason, s in _STOPS.items() if s == status), None)


def _final(status: str) -> FinalStatus:
    assert status != "running"
    return status  # type: ignore[return-value]
