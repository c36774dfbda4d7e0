"""Running a batch step through the Message Batches API (0.5× on every category).

Requests are chunked within the API's limits (100,000 requests, 256 MB); a chunk
reserves the upper bound of all its requests before it is submitted, and its batch id
is committed to the run store before the first poll, so a resumed run polls it instead
of paying for it twice. Results are recorded page by page; errored-but-retryable and
expired requests are resubmitted up to ``limits.batch_attempts`` times.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterable, Iterator
from dataclasses import dataclass
from decimal import Decimal
from typing import Any, Literal, cast

import anthropic
import httpx2
import structlog
from anthropic.types.messages import MessageBatch, MessageBatchIndividualResponse

from llmflow.catalog import ModelInfo
from llmflow.errors import BackendError, BudgetExceeded
from llmflow.executor.chunking import chunk_requests
from llmflow.executor.context import RunContext, StepRoute
from llmflow.executor.responses import output_of, ttl_of, usage_of
from llmflow.executor.retry import Verdict, classify, raise_if_fatal
from llmflow.planner import request_max_cost, retarget, tier_model
from llmflow.tracker import Completed, Failed, Reservation

_log = structlog.get_logger("llmflow.executor")

#: Errored result types worth another submission.
RETRYABLE_ERRORS = frozenset({"api_error", "overloaded_error", "rate_limit_error", "timeout_error"})
_PAGE = 500
_RESULT_ATTEMPTS = 8  # reading results is free: transient trouble is waited out


@dataclass
class _Pending:
    """A submitted request awaiting its result."""

    index: int
    params: dict[str, Any] | None  # kept only while it may be resubmitted
    reservation: Reservation | None
    model: ModelInfo
    tier: str


@dataclass
class _Outcome:
    """What one batch left to do: requests to submit again."""

    retry: list[tuple[str, int, dict[str, Any]]]


class BatchStep:
    """Sends one step's requests as Message Batches and records their results."""

    def __init__(self, ctx: RunContext, route: StepRoute) -> None:
        self.ctx = ctx
        self.route = route
        self._texts: dict[str, str] = {}

    async def resume(
        self, batches: Iterable[tuple[str, str | None, dict[str, tuple[int, Decimal]]]]
    ) -> None:
        """Poll batches submitted by an earlier session (never resubmit them).

        ``batches`` are ``(batch_id, tier, {key: (item_index, reserved)})``; results are
        priced on the tier the batch was submitted on (a downgrade may have happened).
        """
        ctx = self.ctx
        batches = list(batches)
        reservations = ctx.tracker.resume_reservations(batch_id for batch_id, _, _ in batches)

        def priced_on(tier: str | None) -> tuple[ModelInfo, str]:
            if tier is None or tier == self.route.tier:
                return self.route.model, self.route.tier
            return tier_model(ctx.policy, tier, ctx.catalog), tier

        # Results that need another submission are recorded as failed here; the step's
        # own run() then renders and submits them again like any unfinished item.
        await asyncio.gather(
            *(
                self._collect(
                    batch_id,
                    {
                        key: _Pending(index, None, reservations.get(key), *priced_on(tier))
                        for key, (index, _) in pending.items()
                    },
                )
                for batch_id, tier, pending in batches
            )
        )

    async def run(self, items: Iterable[tuple[int, str, Any]]) -> None:
        """Submit every ``(item_index, key, item)`` and record all results."""
        attempt = 1
        work: Iterable[tuple[str, int, dict[str, Any]]] = self._render(items)
        while True:
            submitted = await self._submit_all(work)
            outcomes = await asyncio.gather(*(self._collect(bid, p) for bid, p in submitted))
            retry = [r for outcome in outcomes for r in outcome.retry]
            if not retry or self.ctx.stopping:
                for key, index, _ in retry:
                    self.ctx.tracker.record_failure(
                        self.route.step_id, key, index, error="batch result not retried",
                        reservation=None,
                    )  # fmt: skip
                return
            attempt += 1
            if attempt > self.ctx.policy.limits.batch_attempts:
                for key, index, _ in retry:
                    self.ctx.tracker.record_failure(
                        self.route.step_id, key, index,
                        error=f"no result after {attempt - 1} batch submissions", reservation=None,
                    )  # fmt: skip
                return
            _log.info("batch.resubmit", step=self.route.step_id, requests=len(retry))
            work = retry

    def _render(
        self, items: Iterable[tuple[int, str, Any]]
    ) -> Iterator[tuple[str, int, dict[str, Any]]]:
        for index, key, item in items:
            if self.ctx.stopping:
                return
            yield key, index, self._shared(self.route.params(self.ctx.context_for(item)))

    def _shared(self, params: dict[str, Any]) -> dict[str, Any]:
        """Reuse one string object for identical system texts (bounded memory in big chunks)."""
        for block in params.get("system") or ():
            block["text"] = self._texts.setdefault(block["text"], block["text"])
        return params

    async def _submit_all(
        self, work: Iterable[tuple[str, int, dict[str, Any]]]
    ) -> list[tuple[str, dict[str, _Pending]]]:
        index_of: dict[str, int] = {}

        def pairs() -> Iterator[tuple[str, dict[str, Any]]]:
            for key, index, params in work:
                index_of[key] = index
                yield key, params

        submitted: list[tuple[str, dict[str, _Pending]]] = []
        for chunk in chunk_requests(pairs()):
            entries = [(key, index_of.pop(key), params) for key, params in chunk]
            while entries and not self.ctx.stopping:
                done = await self._submit_chunk(entries)
                if done is None:
                    break
                submitted.append(done[0])
                entries = done[1]
            if self.ctx.stopping:
                break
        return submitted

    async def _submit_chunk(
        self, entries: list[tuple[str, int, dict[str, Any]]]
    ) -> tuple[tuple[str, dict[str, _Pending]], list[tuple[str, int, dict[str, Any]]]] | None:
        """Reserve and submit as much of ``entries`` as the budget allows.

        Returns the submitted batch and the entries left over, or None when nothing fits.
        """
        ctx, route, tracker = self.ctx, self.route, self.ctx.tracker
        while True:
            priced = [
                (key, index, request_max_cost(params, route.model, batch=True))
                for key, index, params in entries
            ]
            fitting = _fitting(priced, tracker.budget.headroom())
            if fitting == len(priced):
                break
            if ctx.on_budget_exceeded(route):
                entries = [(k, i, self._repriced(p)) for k, i, p in entries]
                continue
            if fitting == 0:
                return None
            _log.warning(
                "batch.partial_for_budget", step=route.step_id, fits=fitting, of=len(priced)
            )
            break
        head, rest = entries[:fitting], entries[fitting:]
        reserved = priced[:fitting]
        try:
            reservations = tracker.reserve_batch(route.step_id, reserved)
        except BudgetExceeded:
            if not rest:
                ctx.stop("budget")
            return None
        try:
            batch = await self._create(head, reservations)
        except BaseException:
            tracker.release(reservations.values())
            raise
        if batch is None:
            return None
        tracker.batch_submitted(
            route.step_id, batch.id, reserved, model=route.model.id, tier=route.tier
        )
        pending = {
            key: _Pending(index, params, reservations[key], route.model, route.tier)
            for key, index, params in head
        }
        if rest and ctx.stopping is False and fitting < len(priced):
            ctx.stop("budget")
        return (batch.id, pending), rest

    async def _create(
        self, head: list[tuple[str, int, dict[str, Any]]], reservations: dict[str, Reservation]
    ) -> MessageBatch | None:
        """POST the batch, retrying only failures after which no batch can exist.

        A failure after which one may exist (a timeout once the body was sent) cannot be
        retried without risking paying twice: its requests count as possibly billed and
        fail (resumable), the run stops, and None is returned.
        """
        ctx, route = self.ctx, self.route
        body = cast(Any, [{"custom_id": k, "params": p} for k, _, p in head])
        attempt = 0
        while True:
            attempt += 1
            try:
                batch: MessageBatch = await ctx.client.messages.batches.create(requests=body)
                return batch
            except (anthropic.APIError, httpx2.TransportError, TimeoutError) as exc:
                failure = classify(exc)
                raise_if_fatal(failure)
                if failure.maybe_billed:
                    _log.error("batch.create_ambiguous", step=route.step_id, requests=len(head))
                    for key, index, _ in head:
                        ctx.tracker.record_possibly_billed(
                            route.step_id, key, index, reservations.pop(key), error=failure.message
                        )
                        ctx.tracker.record_failure(
                            route.step_id, key, index, reservation=None,
                            error=f"batch create failed ambiguously: {failure.message}",
                        )  # fmt: skip
                    ctx.stop("backend")
                    ctx.settled()
                    return None
                retry = failure.verdict is Verdict.RETRY
                if not retry or attempt >= ctx.policy.limits.max_attempts or ctx.stopping:
                    raise BackendError(
                        f"cannot create a message batch: {failure.status or ''}"
                        f" {failure.error_type}: {failure.message}"
                    ) from exc
                await ctx.pause(ctx.backoff.delay(attempt, failure))

    def _repriced(self, params: dict[str, Any]) -> dict[str, Any]:
        return retarget(params, self.route.model)

    async def _collect(self, batch_id: str, pending: dict[str, _Pending]) -> _Outcome:
        """Poll until the batch ends, then record every result."""
        ctx, route = self.ctx, self.route
        batch = await self._wait(batch_id)
        if batch == "interrupted":  # it stays open in the run store: a resume polls it
            _log.warning("batch.left_in_flight", step=route.step_id, batch_id=batch_id)
            ctx.tracker.release(p.reservation for p in pending.values() if p.reservation)
            ctx.settled()
            return _Outcome([])
        if batch is None:  # the API no longer knows it: its requests are sent again
            _log.error("batch.lost", step=route.step_id, batch_id=batch_id, requests=len(pending))
            reservations = {k: p.reservation for k, p in pending.items() if p.reservation}
            ctx.tracker.batch_ended(batch_id, reservations, status="lost")
            ctx.settled()
            return _Outcome(
                [(k, p.index, p.params) for k, p in pending.items() if p.params is not None]
            )
        retry: list[tuple[str, int, dict[str, Any]]] = []
        completed: list[Completed] = []
        failed: list[Failed] = []
        seen: set[str] = set()
        async for entry in self._results(batch_id):
            key = entry.custom_id
            waiting = pending.get(key)
            if waiting is None or key in seen:
                continue
            seen.add(key)
            result = entry.result
            if result.type == "succeeded":
                message = result.message
                params = waiting.params or {}
                extracted = output_of(message, structured=route.structured)
                done = Completed(
                    route.step_id, key, waiting.index, waiting.model, waiting.tier, "batch",
                    usage_of(message.usage, default_ttl=ttl_of(params)), waiting.reservation,
                    message.id, extracted.output, message.stop_reason,
                    message.usage.service_tier, message.usage.speed, message.usage.inference_geo,
                )  # fmt: skip
                if extracted.error is None:
                    completed.append(done)
                else:
                    ctx.tracker.record_failure(
                        route.step_id, key, waiting.index, error=extracted.error,
                        reservation=waiting.reservation, billed=done,
                    )  # fmt: skip
            else:
                error_type: str = result.type
                if result.type == "errored":
                    error_type = result.error.error.type
                error = f"batch result {result.type}: {error_type}"
                failed.append(Failed(route.step_id, key, waiting.index, error, waiting.reservation))
                again = result.type == "expired" or error_type in RETRYABLE_ERRORS
                if again and waiting.params is not None:
                    retry.append((key, waiting.index, waiting.params))
            ctx.observer.request_done(route.step_id)
            if len(completed) + len(failed) >= _PAGE:
                ctx.tracker.record_batch(completed, failed)
                completed, failed = [], []
        ctx.tracker.record_batch(completed, failed)
        reservations = {k: p.reservation for k, p in pending.items() if p.reservation is not None}
        ctx.tracker.batch_ended(batch_id, reservations, status=batch.processing_status)
        ctx.settled()
        return _Outcome(retry)

    async def _results(self, batch_id: str) -> AsyncIterator[MessageBatchIndividualResponse]:
        """The batch's results; a transient failure part-way fetches them again (the
        caller skips custom_ids it has already taken)."""
        attempt = 0
        while True:
            try:
                async for entry in await self.ctx.client.messages.batches.results(batch_id):
                    yield entry
                return
            except (anthropic.APIError, httpx2.TransportError, TimeoutError) as exc:
                attempt += 1
                failure = classify(exc)
                raise_if_fatal(failure)
                if failure.verdict is not Verdict.RETRY or attempt >= _RESULT_ATTEMPTS:
                    raise BackendError(
                        f"cannot read the results of batch {batch_id}: {failure.message}"
                    ) from exc
                _log.warning("batch.results_failed", batch_id=batch_id, attempt=attempt)
                await self.ctx.pause(self.ctx.backoff.delay(attempt, failure), interrupt_only=True)

    async def _wait(self, batch_id: str) -> MessageBatch | Literal["interrupted"] | None:
        """The ended batch, polled with backoff; None when the API does not know it;
        "interrupted" when the run was interrupted first (the batch goes on)."""
        limits = self.ctx.policy.limits
        delay = limits.batch_poll_seconds
        while True:
            if self.ctx.interrupted:
                return "interrupted"
            try:
                batch = await self.ctx.client.messages.batches.retrieve(batch_id)
            except anthropic.NotFoundError:
                return None
            except (anthropic.APIError, httpx2.TransportError, TimeoutError) as exc:
                failure = classify(exc)  # polling is free: transient trouble is waited out
                raise_if_fatal(failure)
                if failure.verdict is not Verdict.RETRY:
                    raise
                _log.warning(
                    "batch.poll_failed", batch_id=batch_id, status=failure.status,
                    error_type=failure.error_type, next_poll=delay,
                )  # fmt: skip
                await self.ctx.pause(max(delay, failure.retry_after or 0), interrupt_only=True)
                delay = min(delay * 2, limits.batch_poll_max_seconds)
                continue
            if batch.processing_status == "ended":
                return batch
            _log.info(
                "batch.polled", batch_id=batch_id, status=batch.processing_status,
                processing=batch.request_counts.processing, next_poll=delay,
            )  # fmt: skip
            await self.ctx.pause(delay, interrupt_only=True)  # a budget stop still collects
            delay = min(delay * 2, limits.batch_poll_max_seconds)


def _fitting(priced: list[tuple[str, int, Decimal]], headroom: Decimal | None) -> int:
    """How many leading requests fit the headroom (all when there is no limit)."""
    if headroom is None:
        return len(priced)
    total = Decimal(0)
    for count, (_, _, upper) in enumerate(priced):
        total += upper
        if total > headroom:
            return count
    return len(priced)
