"""What every step of a run shares: the client, the tracker, routes, outputs, the stop flag."""

from __future__ import annotations

import asyncio
import contextlib
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

import anthropic
import structlog

from llmflow.catalog import Catalog, ModelInfo
from llmflow.errors import BudgetExceeded
from llmflow.executor.coworkers import WorkerSession
from llmflow.executor.pacing import RatePacer
from llmflow.executor.retry import Backoff
from llmflow.executor.static_counts import StaticCounts
from llmflow.planner import RequestTemplate, steps_namespace, tier_model
from llmflow.spec.loader import PipelineFile
from llmflow.spec.policy import Policy
from llmflow.tracker import Tracker

Mode = Literal["sync", "batch"]
StopReason = Literal["budget", "backend", "interrupted"]

_log = structlog.get_logger("llmflow.executor")

#: How often a refused dispatch looks again while other processes hold reservations.
OTHERS_POLL_SECONDS = 0.25
#: How long in all a run waits for other processes' reservations to settle.
OTHERS_WAIT_SECONDS = 30.0


def _others_may_free_room(refusal: BudgetExceeded) -> bool:
    """Other processes hold reservations, and were they to settle at nothing the
    refused request would fit: worth waiting for them."""
    return refusal.reserved > 0 and refusal.spent + refusal.needed <= refusal.limit


class Observer(Protocol):
    """Receives progress as the run goes (the CLI's display implements it)."""

    def run_started(self, tracker: Tracker) -> None: ...
    def step_started(self, step_id: str, total: int) -> None: ...
    def request_done(self, step_id: str) -> None: ...
    def step_finished(self, step_id: str) -> None: ...


class NullObserver:
    """An observer that ignores everything."""

    def run_started(self, tracker: Tracker) -> None:
        return None

    def step_started(self, step_id: str, total: int) -> None:
        return None

    def request_done(self, step_id: str) -> None:
        return None

    def step_finished(self, step_id: str) -> None:
        return None


@dataclass
class StepRoute:
    """Where a step's requests go now; ``downgrade`` moves it to the cheaper tier."""

    step_id: str
    tier: str
    model: ModelInfo
    mode: Mode
    template: RequestTemplate
    downgrade_to: str | None
    structured: bool
    stream: bool
    abort_after_tokens: int | None
    downgraded: bool = False

    def downgrade(self, policy: Policy, catalog: Catalog) -> bool:
        """Switch to the route's ``downgrade_to`` tier once; False when not allowed."""
        if self.downgraded or self.downgrade_to is None:
            return False
        model = tier_model(policy, self.downgrade_to, catalog)
        _log.warning(
            "budget.downgrade", step=self.step_id, from_tier=self.tier, to_tier=self.downgrade_to
        )
        self.tier, self.model, self.downgraded = self.downgrade_to, model, True
        self.template = self.template.on_model(model)
        return True

    def params(self, context: dict[str, Any]) -> dict[str, Any]:
        """The request body for one item."""
        return self.template.params(context)


@dataclass
class RunContext:
    """Shared by the steps of one run (one asyncio loop)."""

    client: anthropic.AsyncAnthropic
    tracker: Tracker
    pipeline_file: PipelineFile
    policy: Policy
    catalog: Catalog
    inputs: dict[str, Any]
    observer: Observer = field(default_factory=NullObserver)
    backoff: Backoff = field(default_factory=Backoff)
    outputs: dict[str, list[Any]] = field(default_factory=dict)
    stop_reason: StopReason | None = None
    backend_error: BaseException | None = None
    budget_error: BudgetExceeded | None = None  # the refusal that stopped the run
    pacer: RatePacer = field(default_factory=RatePacer)
    static_counts: StaticCounts | None = None  # exact counts for tight reservations
    detach: bool = False  # batches are submitted and polled once, not waited for
    shared: bool = False  # other workers may run this run (a shared store)
    pending_steps: set[str] = field(default_factory=set)
    worker: WorkerSession | None = None
    _waited_for_others: float = 0.0
    _steps_namespace: dict[str, dict[str, Any]] | None = None
    _settled: asyncio.Event = field(default_factory=asyncio.Event)
    _stopped: asyncio.Event = field(default_factory=asyncio.Event)
    _interrupted: asyncio.Event = field(default_factory=asyncio.Event)

    @property
    def stopping(self) -> bool:
        """True once no new request may be dispatched."""
        return self.stop_reason is not None

    def stop(self, reason: StopReason) -> None:
        """Dispatch nothing more; in-flight work settles and is recorded."""
        if reason == "interrupted":
            self._interrupted.set()  # even after another stop: it ends batch polling
        if self.stop_reason is None:
            self.stop_reason = reason
            self._stopped.set()
            _log.warning("run.stopping", run_id=self.tracker.run_id, reason=reason)

    @property
    def worker_id(self) -> str | None:
        return None if self.worker is None else self.worker.worker_id

    def claimed(self, step_id: str, rows: list[tuple[str, int]]) -> set[str] | None:
        """The keys of ``rows`` ``(key, item_index)`` this worker claimed, or None on a
        store of one worker (where everything is this process's to send)."""
        if not self.shared or self.worker_id is None:
            return None
        store = self.tracker.store
        return store.claim(
            self.tracker.run_id, [(step_id, key, index) for key, index in rows], self.worker_id
        )

    async def step_settled(self, step_id: str) -> bool:
        """Wait for other workers' requests of the step (a shared store); True when dead
        workers' requests were taken back and the step needs another pass."""
        if self.worker is None:
            return False
        return await self.worker.step_settled(step_id, self._stopped)

    @property
    def interrupted(self) -> bool:
        """True once the run was interrupted (whatever stopped it first)."""
        return self._interrupted.is_set()

    async def pause(self, seconds: float, *, interrupt_only: bool = False) -> None:
        """Sleep ``seconds``, or less if the run starts stopping (or, with
        ``interrupt_only``, is interrupted) meanwhile."""
        event = self._interrupted if interrupt_only else self._stopped
        if event.is_set():
            return
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(event.wait(), seconds)

    def settled(self) -> None:
        """A reservation was settled or released: wake dispatchers waiting for headroom."""
        self._settled.set()
        self._settled = asyncio.Event()

    async def headroom_or_stop(
        self, route: StepRoute, refusal: BudgetExceeded | None = None
    ) -> bool:
        """A dispatch was refused by the budget: True when it may be tried again.

        While this run has requests in flight their reservations (upper bounds) will
        shrink to actual costs, so wait for one to settle. While only other processes
        sharing the store hold reservations that could free enough room, poll for a
        while (:data:`OTHERS_WAIT_SECONDS` in all). Otherwise downgrade once if the
        policy allows it, else stop the run (resumable, exit 3).
        """
        if self.stopping:
            return False
        if self.tracker.budget.open_reservations > 0:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._settled.wait(), OTHERS_POLL_SECONDS)
            return not self.stopping
        waited = self._waited_for_others
        if refusal is not None and _others_may_free_room(refusal) and waited < OTHERS_WAIT_SECONDS:
            self._waited_for_others += OTHERS_POLL_SECONDS
            await self.pause(OTHERS_POLL_SECONDS)
            return not self.stopping
        return self.on_budget_exceeded(route, refusal)

    def stop_for_budget(self, error: BudgetExceeded) -> None:
        """Stop the run for a budget (an organisation cap the API enforces, say)."""
        if self.budget_error is None:
            self.budget_error = error
        self.stop("budget")

    def on_budget_exceeded(self, route: StepRoute, refusal: BudgetExceeded | None = None) -> bool:
        """``on_exceed`` of the policy: True when the step was downgraded (try again);
        else the run stops, and ``refusal`` says which limit stopped it."""
        if self.policy.budget.on_exceed == "downgrade" and route.downgrade(
            self.policy, self.catalog
        ):
            return True
        if refusal is not None and self.budget_error is None:
            self.budget_error = refusal
        self.stop("budget")
        return False

    def set_outputs(self, step_id: str, values: list[Any]) -> None:
        """Make a finished step's outputs (in item order) visible to later steps."""
        self.outputs[step_id] = values
        self._steps_namespace = None

    def context_for(self, item: Any) -> dict[str, Any]:
        """The template context of one request."""
        if self._steps_namespace is None:
            self._steps_namespace = steps_namespace(self.outputs)
        return {"inputs": self.inputs, "steps": self._steps_namespace, "item": item}
