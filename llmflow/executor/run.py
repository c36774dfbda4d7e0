"""Executing a plan: wave by wave, each step sync or batch, tracked and within budget.

:func:`execute` is what ``llmflow run`` calls. Steps of a wave run together; a step
whose upstream did not fully succeed is skipped (resumable: a later run with the same
run id sends only what is missing).
"""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import Any

import anthropic
import httpx2
import structlog

from llmflow.catalog import Catalog
from llmflow.errors import BackendError, BudgetExceeded, LlmflowError
from llmflow.executor.batch_step import BatchStep
from llmflow.executor.context import Observer, RunContext, StepRoute
from llmflow.executor.coworkers import WorkerSession
from llmflow.executor.items import step_item_count, step_items
from llmflow.executor.retry import Backoff
from llmflow.executor.static_counts import StaticCounts
from llmflow.executor.sync_step import SyncStep
from llmflow.planner import PlanResult, inputs_namespace, tier_model
from llmflow.planner.budget_check import policy_limits
from llmflow.spec.dag import step_dependencies
from llmflow.spec.loader import PipelineFile, PolicyFile
from llmflow.spec.routing import resolve_route
from llmflow.tracker import LimitSpec, RunInfo, RunStore, RunSummary, Tracker, request_key
from llmflow.tracker import StepPlan as TrackedStep
from llmflow.tracker.records import FinalStatus, PricedWith
from llmflow.tracker.workers import new_worker_id

_log = structlog.get_logger("llmflow.executor")

EXIT_CODES: dict[FinalStatus, int] = {
    "succeeded": 0,
    "partial": 1,
    "budget_stopped": 3,
    "failed": 4,
    "pending": 75,
    "interrupted": 130,
}


@dataclass(frozen=True, slots=True)
class RunOutcome:
    """How a run ended, for the CLI (exit code) and for tests."""

    run_id: str
    status: FinalStatus
    exit_code: int
    summary: RunSummary
    summary_path: Path
    error: LlmflowError | None = None
    budget_error: BudgetExceeded | None = None  # the limit that stopped the run


@dataclass(frozen=True, slots=True)
class RunRequest:
    """Everything ``execute`` needs; built by the CLI (or a test)."""

    pipeline_file: PipelineFile
    policy_file: PolicyFile
    plan: PlanResult
    catalog: Catalog
    client: anthropic.AsyncAnthropic
    store: RunStore
    run_id: str
    inputs: Mapping[str, str]
    budget_usd: Decimal | None = None
    backoff: Backoff = field(default_factory=Backoff)
    detach: bool = False  # submit batches and end "pending" (exit 75) while they run


def limits_of(request: RunRequest) -> list[LimitSpec]:
    """The policy's budgets (``--budget`` replaces the per-run one)."""
    return policy_limits(request.policy_file.policy, request.budget_usd)


def priced_with(request: RunRequest) -> PricedWith:
    """What the run's reports price with, fixed now: the baseline tier's model (with its
    overrides) and the policy's cache thresholds."""
    policy = request.policy_file.policy
    return PricedWith(
        baseline=tier_model(policy, policy.baseline_tier, request.catalog),
        min_hit_ratio=policy.cache.min_hit_ratio_warning,
        batch_hit_rate=policy.cache.batch_hit_rate,
    )


def run_info(request: RunRequest) -> RunInfo:
    """What the run store keeps about the run and its plan."""
    plan = request.plan.plan
    per_run = request.budget_usd or request.policy_file.policy.budget.per_run_usd
    return RunInfo(
        pipeline=plan.pipeline,
        policy=plan.policy,
        pipeline_path=str(request.pipeline_file.path),
        policy_path=str(request.policy_file.path),
        plan_hash=hashlib.sha256(plan.to_json().encode()).hexdigest()[:16],
        tags=dict(request.policy_file.policy.tags),
        budget_limit=per_run,
        plan_cost_expected=Decimal(plan.total.cost_expected),
        plan_cost_max=Decimal(plan.total.cost_max),
        plan_cost_baseline=Decimal(plan.total.cost_baseline),
        report_settings=priced_with(request).to_json(),
        steps=tuple(
            TrackedStep(
                s.id,
                s.requests,
                model=s.model,
                tier=s.tier,
                mode=s.mode,
                plan_cost_expected=Decimal(s.cost.expected),
                plan_cost_max=Decimal(s.cost.max),
            )
            for s in plan.steps
        ),
    )


def _routes(request: RunRequest) -> dict[str, StepRoute]:
    policy = request.policy_file.policy
    routes: dict[str, StepRoute] = {}
    for step_id, step in request.pipeline_file.pipeline.steps.items():
        decision = resolve_route(policy, step)
        routes[step_id] = StepRoute(
            step_id=step_id,
            tier=decision.tier,
            model=tier_model(policy, decision.tier, request.catalog),
            mode=decision.mode,
            template=request.plan.templates[step_id],
            downgrade_to=decision.downgrade_to,
            structured=step.output_schema is not None,
            stream=step.stream,
            abort_after_tokens=step.abort_after_tokens,
        )
    return routes


async def execute(
    request: RunRequest,
    observer: Observer | None = None,
    interrupt: asyncio.Event | None = None,
) -> RunOutcome:
    """Run (or resume) the plan; never spends past the budget.

    Setting ``interrupt`` stops dispatching; in-flight requests settle and are recorded,
    and the run ends ``interrupted`` (resumable).
    """
    policy = request.policy_file.policy
    baseline = tier_model(policy, policy.baseline_tier, request.catalog)
    worker_id = new_worker_id()
    tracker = Tracker.open(
        request.store, request.run_id, run_info(request), limits=limits_of(request),
        alert_at=policy.budget.alert_at, baseline=baseline, worker_id=worker_id,
    )  # fmt: skip
    worker = WorkerSession(tracker, request.store.shared, worker_id)
    ctx = RunContext(
        client=request.client,
        tracker=tracker,
        pipeline_file=request.pipeline_file,
        policy=policy,
        catalog=request.catalog,
        inputs=inputs_namespace(request.pipeline_file, request.inputs),
        backoff=request.backoff,
        detach=request.detach,
        shared=request.store.shared,
        worker=worker,
        static_counts=StaticCounts(request.client),
    )
    if observer is not None:
        ctx.observer = observer
    worker.start()
    ctx.observer.run_started(tracker)
    watcher = asyncio.create_task(_watch(interrupt, ctx)) if interrupt is not None else None
    routes = _routes(request)
    slots = asyncio.Semaphore(policy.limits.max_concurrency)
    incomplete: set[str] = set()
    error: LlmflowError | None = None
    bug: BaseException | None = None
    try:
        for wave in request.plan.plan.waves:
            # Every step of the wave settles (return_exceptions): the run is finished
            # only once nothing is in flight.
            results = await asyncio.gather(
                *(_run_step(ctx, routes[s], slots, incomplete, request.store) for s in wave),
                return_exceptions=True,
            )
            for result in results:
                if isinstance(result, BaseException):
                    error, bug = _failure(ctx, result, error, bug)
            if ctx.stopping:
                break
    except asyncio.CancelledError:
        ctx.stop("interrupted")
    finally:
        if watcher is not None:
            watcher.cancel()
        await worker.stop_heartbeat()
    if error is None and isinstance(ctx.backend_error, LlmflowError):
        error = ctx.backend_error
    mine = _status(ctx, incomplete)
    detail = str(ctx.budget_error or error or "") or None
    status, writer = await worker.final_status(mine, detail)
    summary, path = tracker.finish(status, write=writer)
    if bug is not None:
        raise bug  # a defect, not bad input: the run is recorded as failed first
    exit_code = EXIT_CODES[status]
    if error is not None and status != "interrupted":
        exit_code = error.exit_code
    budget_error = ctx.budget_error if status == "budget_stopped" else None
    return RunOutcome(request.run_id, status, exit_code, summary, path, error, budget_error)


def _failure(
    ctx: RunContext,
    exc: BaseException,
    error: LlmflowError | None,
    bug: BaseException | None,
) -> tuple[LlmflowError | None, BaseException | None]:
    """Classify what a step raised: llmflow's own error, the API failing, or a defect."""
    if isinstance(exc, asyncio.CancelledError):
        ctx.stop("interrupted")
        return error, bug
    if isinstance(exc, LlmflowError):
        ctx.stop("backend")
        return error or exc, bug
    if isinstance(exc, anthropic.APIError | httpx2.TransportError):
        ctx.stop("backend")
        wrapped = BackendError(f"the API failed: {type(exc).__name__}: {exc}")
        return error or wrapped, bug
    _log.error("run.defect", error_type=type(exc).__name__)
    ctx.stop("backend")
    return error, bug or exc


async def _watch(interrupt: asyncio.Event, ctx: RunContext) -> None:
    await interrupt.wait()
    ctx.stop("interrupted")


def _status(ctx: RunContext, incomplete: set[str]) -> FinalStatus:
    if ctx.stop_reason == "interrupted":
        return "interrupted"
    if ctx.pending_steps and ctx.stop_reason is None:
        return "pending"
    if ctx.stop_reason == "backend":
        return "failed"
    if ctx.stop_reason == "budget":
        return "budget_stopped"
    return "partial" if incomplete else "succeeded"


async def _run_step(
    ctx: RunContext,
    route: StepRoute,
    slots: asyncio.Semaphore,
    incomplete: set[str],
    store: RunStore,
) -> None:
    step_id = route.step_id
    run_id = ctx.tracker.run_id
    pipeline_file = ctx.pipeline_file
    blocked = sorted(step_dependencies(pipeline_file.pipeline, step_id) & incomplete)
    total = step_item_count(pipeline_file, step_id, ctx.outputs) if not blocked else 0
    ctx.tracker.set_step_total(step_id, total)
    ctx.observer.step_started(step_id, total)
    if blocked:
        incomplete.add(step_id)
        _log.warning("step.skipped", step=step_id, because=", ".join(blocked))
        ctx.observer.step_finished(step_id)
        return
    pending = False
    if route.mode == "batch":
        pending = await _run_batch(ctx, route, store)
    elif not ctx.stopping:
        passes = True
        while passes and not ctx.stopping:
            finished = store.finished_keys(run_id, step_id, in_flight=ctx.shared)
            await SyncStep(ctx, route, slots=slots).run(_pending_items(ctx, step_id, finished))
            passes = await ctx.step_settled(step_id)
    if _succeeded(store, run_id, step_id) != total:
        incomplete.add(step_id)
    elif _read_later(pipeline_file, step_id):  # only then are its outputs loaded
        ctx.set_outputs(step_id, store.step_outputs(run_id, step_id))
    if pending:
        ctx.pending_steps.add(step_id)
    ctx.observer.step_finished(step_id)


async def _run_batch(ctx: RunContext, route: StepRoute, store: RunStore) -> bool:
    """Settle what earlier sessions of a batch step submitted, then send the rest; True
    when a batch is left running (detach). Neither the open batches' records nor the
    finished keys outlive their use (a step of a million items holds them)."""
    step_id, run_id = route.step_id, ctx.tracker.run_id
    batches = BatchStep(ctx, route, lambda wanted: _items_at(ctx, step_id, wanted))
    worker_id = ctx.worker_id if ctx.shared else None
    passes = True
    while passes and not ctx.stopping:
        # Every pass: a dead worker's batches are this worker's once its lease expired.
        await batches.resume(
            b for b in store.open_batches(run_id, worker_id=worker_id) if b.step_id == step_id
        )
        if ctx.stopping:
            break
        finished = store.finished_keys(run_id, step_id, in_flight=True)
        await batches.run(_pending_items(ctx, step_id, finished))
        del finished  # not alive with the next pass's
        passes = not batches.pending and await ctx.step_settled(step_id)
    return batches.pending


def _succeeded(store: RunStore, run_id: str, step_id: str) -> int:
    """How many of the step's requests succeeded, counted by the store (a step of a
    million items is not loaded to be counted)."""
    counts = store.step_totals(run_id, usage={})  # counts only: the ledger is not summed
    return next((t.succeeded for t in counts if t.step_id == step_id), 0)


def _read_later(pipeline_file: PipelineFile, step_id: str) -> bool:
    """True when another step of the pipeline reads this step's outputs."""
    pipeline = pipeline_file.pipeline
    return any(step_id in step_dependencies(pipeline, other) for other in pipeline.steps)


def _items_at(ctx: RunContext, step_id: str, wanted: set[int]) -> Iterator[tuple[int, str, Any]]:
    """The step's items at the ``wanted`` indexes, read again from their source."""
    for index, item in step_items(ctx.pipeline_file, step_id, ctx.outputs):
        if index in wanted:
            yield index, request_key(step_id, index), item


def _pending_items(
    ctx: RunContext, step_id: str, finished: set[str]
) -> Iterator[tuple[int, str, Any]]:
    for index, item in step_items(ctx.pipeline_file, step_id, ctx.outputs):
        key = request_key(step_id, index)
        if key not in finished:
            yield index, key, item
