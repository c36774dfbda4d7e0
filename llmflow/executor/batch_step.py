"""Running a batch step through the Message Batches API (0.5× on every category).

Requests are chunked (``limits.batch_chunk_requests``, within the API's 100,000 requests
and 256 MB). Before a chunk is created its intent is made durable: its request keys
and the reservation of their upper bounds, in one transaction. The batch id is
committed as soon as the API returns it. A process killed in between leaves an intent
that the resumed run reconciles with the API (:mod:`llmflow.executor.reconcile`)
instead of paying for the chunk twice.

Memory stays bounded by the chunk, not the step: a chunk's request bodies are dropped
once it is created, results are matched against the store's rows of their batch, and a
request that must be sent again is rendered again from its dataset item. Errored-but-
retryable and expired requests are resubmitted up to ``limits.batch_attempts`` times.

With ``detach`` the step submits its chunks and polls each batch once: a batch still
running leaves the run ``pending`` (exit 75) for a later run of the same id to collect.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Iterable, Iterator
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
from llmflow.executor.reconcile import reconcile
from llmflow.executor.responses import output_of, ttl_of, usage_of
from llmflow.executor.retry import Verdict, classify, raise_if_fatal
from llmflow.executor.static_counts import request_bound
from llmflow.planner import retarget, tier_model
from llmflow.tracker import BatchRecord, Completed, Failed, Reservation
from llmflow.tracker.tracker import new_intent_id

_log = structlog.get_logger("llmflow.executor")

#: Errored result types worth another submission.
RETRYABLE_ERRORS = frozenset({"api_error", "overloaded_error", "rate_limit_error", "timeout_error"})
_PAGE = 500
_RESULT_ATTEMPTS = 8  # reading results is free: transient trouble is waited out

Work = tuple[str, int, dict[str, Any]]  # (key, item_index, params)
ItemsAt = Callable[[set[int]], Iterator[tuple[int, str, Any]]]


class BatchStep:
    """Sends one step's requests as Message Batches and records their results.

    ``items_at(indexes)`` yields the step's ``(item_index, key, item)`` for those
    indexes again (requests to resubmit are rendered anew, never kept in memory).
    """

    def __init__(self, ctx: RunContext, route: StepRoute, items_at: ItemsAt) -> None:
        self.ctx = ctx
        self.route = route
        self.items_at = items_at
        self._texts: dict[str, str] = {}
        self._ttl: str | None = None  # the cache TTL the step's requests ask for
        self.pending = False  # a batch was left running (detach)

    # -- resume ------------------------------------------------------------------

    async def resume(self, batches: Iterable[BatchRecord]) -> None:
        """Settle what an earlier session submitted (never resubmit it): intents are
        reconciled with the API, batches polled and collected. Results that ask for
        another submission are recorded as failed; the step's run() sends them again."""
        for record in batches:
            batch_id: str | None = record.batch_id
            if record.status == "creating":
                batch_id = await self._reconcile(record)
            if batch_id is not None:
                await self._collect(batch_id, self._priced_on(batch_id))
            if self.ctx.interrupted:
                break

    async def _reconcile(self, record: BatchRecord) -> str | None:
        """The batch an intent became, or None when none exists (the intent is dropped)."""
        ctx, tracker = self.ctx, self.ctx.tracker
        store = tracker.store
        known = store.known_batch_ids()  # of every run: never another run's batch
        verdict = await reconcile(
            ctx.client, intent_at=record.submitted_at, keys=record.keys, known=known
        )
        _log.info(
            "batch.intent_reconciled", step=record.step_id, intent=record.batch_id,
            outcome=verdict.outcome, batch_id=verdict.batch_id, requests=len(record.keys),
        )  # fmt: skip
        if verdict.outcome == "found" and verdict.batch_id is not None:
            store.batch_created(tracker.run_id, record.batch_id, verdict.batch_id)
            return verdict.batch_id
        if verdict.outcome == "none":
            held = tracker.resume_reservations([record.batch_id])
            tracker.release(held.values())
            store.batch_abandoned(tracker.run_id, record.batch_id)
            return None
        self.pending = True  # several candidates still running: ask again later
        return None

    def _priced_on(self, batch_id: str) -> tuple[ModelInfo, str]:
        """The model and tier a batch's requests were priced on when it was submitted."""
        tier = self.ctx.tracker.store.batch_tier(self.ctx.tracker.run_id, batch_id)
        if tier is None or tier == self.route.tier:
            return self.route.model, self.route.tier
        return tier_model(self.ctx.policy, tier, self.ctx.catalog), tier

    # -- run ---------------------------------------------------------------------

    async def run(self, items: Iterable[tuple[int, str, Any]]) -> None:
        """Submit every ``(item_index, key, item)`` and record all results."""
        attempt = 1
        work: Iterator[Work] = self._render(items)
        while True:
            submitted = await self._submit_all(work)
            priced_on = (self.route.model, self.route.tier)
            # One batch at a time: a batch's rows and results are in memory while it is
            # collected, so memory stays bounded by a chunk however many there are.
            outcomes = [await self._collect(b, priced_on) for b in submitted]
            again = set().union(*outcomes) if outcomes else set()
            if not again or self.ctx.stopping:
                return
            attempt += 1
            if attempt > self.ctx.policy.limits.batch_attempts:
                return
            _log.info("batch.resubmit", step=self.route.step_id, requests=len(again))
            work = self._render(self.items_at(again))

    def _render(self, items: Iterable[tuple[int, str, Any]]) -> Iterator[Work]:
        for index, key, item in items:
            if self.ctx.stopping:
                return
            params = self._shared(self.route.params(self.ctx.context_for(item)))
            self._ttl = self._ttl or ttl_of(params)
            yield key, index, params

    def _shared(self, params: dict[str, Any]) -> dict[str, Any]:
        """Reuse one string object for identical system texts of a chunk."""
        for block in params.get("system") or ():
            block["text"] = self._texts.setdefault(block["text"], block["text"])
        return params

    async def _submit_all(self, work: Iterator[Work]) -> list[str]:
        index_of: dict[str, int] = {}

        def pairs() -> Iterator[tuple[str, dict[str, Any]]]:
            for key, index, params in work:
                index_of[key] = index
                yield key, params

        limits = self.ctx.policy.limits
        submitted: list[str] = []
        for chunk in chunk_requests(pairs(), max_requests=limits.batch_chunk_requests):
            entries = self._claimed([(key, index_of.pop(key), params) for key, params in chunk])
            del chunk
            while entries and not self.ctx.stopping:
                batch_id, entries = await self._submit_chunk(entries)
                if batch_id is None:
                    break
                submitted.append(batch_id)
            self._texts.clear()  # per chunk: per-item system texts must not pile up
            if self.ctx.stopping:
                break
        return submitted

    def _claimed(self, entries: list[Work]) -> list[Work]:
        """The entries this worker claimed (all of them on a store of one worker)."""
        held = self.ctx.claimed(self.route.step_id, [(key, index) for key, index, _ in entries])
        return entries if held is None else [e for e in entries if e[0] in held]

    async def _submit_chunk(self, entries: list[Work]) -> tuple[str | None, list[Work]]:
        """Reserve and submit as much of ``entries`` as the budget allows: the batch id
        (None when nothing fits or no batch could be created) and the entries left over."""
        ctx, route, tracker = self.ctx, self.route, self.ctx.tracker
        while True:
            counts = ctx.static_counts
            priced = [
                (key, index, await request_bound(counts, route.step_id, p, route.model, batch=True))
                for key, index, p in entries
            ]
            fitting = _fitting(priced, tracker.headroom())
            if fitting == len(priced):
                break
            needed = sum((upper for _, _, upper in priced[: fitting + 1]), Decimal(0))
            if ctx.on_budget_exceeded(route, tracker.refusal(needed)):  # downgraded
                entries = [(k, i, retarget(p, route.model)) for k, i, p in entries]
                continue
            if fitting == 0:
                return None, []
            _log.warning(
                "batch.partial_for_budget", step=route.step_id, fits=fitting, of=len(priced)
            )
            break
        head, rest = entries[:fitting], entries[fitting:]
        intent = new_intent_id()
        try:
            reservations = tracker.reserve_batch(
                route.step_id, priced[:fitting], model=route.model.id, tier=route.tier,
                intent_id=intent,
            )  # fmt: skip
        except BudgetExceeded as refused:  # another process took the room meanwhile
            ctx.stop_for_budget(refused)
            return None, []
        batch = await self._create(head, intent, reservations)
        if batch is None:
            return None, []
        tracker.batch_submitted(
            route.step_id, batch.id, priced[:fitting], model=route.model.id, tier=route.tier,
            intent_id=intent,
        )  # fmt: skip
        tracker.unhold(reservations.values())  # collecting takes them from the store again
        return batch.id, rest

    async def _create(
        self, head: list[Work], intent: str, reservations: dict[str, Reservation]
    ) -> MessageBatch | None:
        """POST the batch, retrying only failures after which no batch can exist.

        A failure after which one may exist (a timeout once the body was sent) is not
        retried: the intent stays, holding its reservations, the run stops, and the next
        run of this id asks the API what exists. None is returned.
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
                if failure.maybe_billed:
                    _log.error("batch.create_ambiguous", step=route.step_id, intent=intent)
                    ctx.stop("backend")
                    ctx.backend_error = BackendError(
                        f"creating a batch of {len(head)} requests failed ambiguously"
                        f" ({failure.message}); the next run of this id asks the API whether"
                        " it exists before sending anything again"
                    )
                    return None
                retry = failure.verdict is Verdict.RETRY
                if not retry or attempt >= ctx.policy.limits.max_attempts or ctx.stopping:
                    self._abandon(intent, reservations)
                    raise_if_fatal(failure)
                    raise BackendError(
                        f"cannot create a message batch: {failure.status or ''}"
                        f" {failure.error_type}: {failure.message}"
                    ) from exc
                await ctx.pause(ctx.backoff.delay(attempt, failure))
            except BaseException:
                # cancelled or killed mid-create: the intent stays for the next run
                raise

    def _abandon(self, intent: str, reservations: dict[str, Reservation]) -> None:
        """No batch exists for the intent: release its reservations, forget it."""
        tracker = self.ctx.tracker
        tracker.release(reservations.values())
        tracker.store.batch_abandoned(tracker.run_id, intent)

    # -- results -----------------------------------------------------------------

    async def _collect(self, batch_id: str, priced_on: tuple[ModelInfo, str]) -> set[int]:
        """Poll until the batch ends, then record every result; the indexes to retry."""
        ctx, route, tracker = self.ctx, self.route, self.ctx.tracker
        batch = await self._wait(batch_id)
        if batch == "pending":
            self.pending = True
            return set()
        if batch == "interrupted":  # it stays open in the run store: a resume polls it
            _log.warning("batch.left_in_flight", step=route.step_id, batch_id=batch_id)
            ctx.settled()
            return set()
        held = tracker.store.batch_reservations(tracker.run_id, batch_id)
        reservations = tracker.resume_reservations([batch_id])
        if batch is None:  # the API no longer knows it: its requests are sent again
            _log.error("batch.lost", step=route.step_id, batch_id=batch_id, requests=len(held))
            tracker.batch_ended(batch_id, reservations, status="lost")
            ctx.settled()
            return {index for index, _, _ in held.values()}
        retry: set[int] = set()
        page = _Page(self, priced_on, reservations)
        async for entry in self._results(batch_id):
            known = held.pop(entry.custom_id, None)
            if known is None:
                continue
            if page.add(entry, known[0]):
                retry.add(known[0])
            ctx.observer.request_done(route.step_id)
            if page.full:
                await page.flush()
        await page.flush()
        tracker.batch_ended(batch_id, reservations, status=batch.processing_status)
        ctx.settled()
        return retry

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

    async def _wait(self, batch_id: str) -> MessageBatch | Literal["interrupted", "pending"] | None:
        """The ended batch, polled with backoff; None when the API does not know it;
        "interrupted" when the run was interrupted first (the batch goes on); "pending"
        when detached and the batch is still running."""
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
            if self.ctx.detach:
                _log.info("batch.pending", batch_id=batch_id, status=batch.processing_status)
                return "pending"
            _log.info(
                "batch.polled", batch_id=batch_id, status=batch.processing_status,
                processing=batch.request_counts.processing, next_poll=delay,
            )  # fmt: skip
            await self.ctx.pause(delay, interrupt_only=True)  # a budget stop still collects
            delay = min(delay * 2, limits.batch_poll_max_seconds)


class _Page:
    """Results of a batch gathered for one group-committed recording."""

    def __init__(
        self,
        step: BatchStep,
        priced_on: tuple[ModelInfo, str],
        reservations: dict[str, Reservation],
    ) -> None:
        self.step = step
        self.model, self.tier = priced_on
        self.reservations = reservations
        self.completed: list[Completed] = []
        self.failed: list[Failed] = []

    @property
    def full(self) -> bool:
        return len(self.completed) + len(self.failed) >= _PAGE

    def add(self, entry: MessageBatchIndividualResponse, index: int) -> bool:
        """Take one result; True when it asks for another submission."""
        route, tracker = self.step.route, self.step.ctx.tracker
        key, result = entry.custom_id, entry.result
        reservation = self.reservations.pop(key, None)
        if result.type == "succeeded":
            message = result.message
            extracted = output_of(message, structured=route.structured)
            done = Completed(
                route.step_id, key, index, self.model, self.tier, "batch",
                usage_of(message.usage, default_ttl=self.step._ttl or "5m"), reservation,
                message.id, extracted.output, message.stop_reason,
                message.usage.service_tier, message.usage.speed, message.usage.inference_geo,
            )  # fmt: skip
            if extracted.error is None:
                self.completed.append(done)
            else:
                tracker.record_failure(
                    route.step_id, key, index, error=extracted.error,
                    reservation=reservation, billed=done,
                )  # fmt: skip
            return False
        error_type: str = result.type
        if result.type == "errored":
            error_type = result.error.error.type
        self.failed.append(
            Failed(
                route.step_id, key, index, f"batch result {result.type}: {error_type}", reservation
            )
        )
        return result.type == "expired" or error_type in RETRYABLE_ERRORS

    async def flush(self) -> None:
        if self.completed or self.failed:
            await self.step.ctx.tracker.record_async(self.completed, self.failed)
        self.completed, self.failed = [], []


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
