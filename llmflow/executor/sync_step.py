"""Running a sync step: bounded concurrency, cache-warm fan-out, retries, early abort.

Requests are reserved in groups: every free concurrency slot is filled at once and
the group's upper bounds are reserved in one store transaction (group commit), which
commits before any of them is sent. A response gives its slot to the next request at
once; its usage is recorded (group-committed with whatever else finished, or was
reserved, in the same event-loop tick) while its reservation, at least what it cost,
still holds the budget. A failure releases its reservation. The first request of a
cached prefix goes alone and releases the others once its response has begun
(:mod:`llmflow.executor.warmup`). Dispatch is paced by the API's rate-limit headers
(:mod:`llmflow.executor.pacing`); the organisation's spend cap stops the run (exit 3).
"""

from __future__ import annotations

import asyncio
import itertools
import time
from collections import deque
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

import anthropic
import structlog
from anthropic.types import Message

from llmflow.catalog import ModelInfo
from llmflow.errors import BackendError, BackendUnreachable, BudgetExceeded, OrganisationSpendCap
from llmflow.executor.context import RunContext, StepRoute
from llmflow.executor.responses import output_of, ttl_of, usage_of
from llmflow.executor.retry import Verdict, classify, raise_if_fatal, spend_cap_message
from llmflow.executor.static_counts import request_bound
from llmflow.executor.warmup import WarmGate
from llmflow.planner import split_sdk_params
from llmflow.planner.tokens import estimate_text
from llmflow.tracker import Completed, Reservation

_log = structlog.get_logger("llmflow.executor")

#: At most this many requests are reserved in one transaction.
_GROUP = 256


def reserved_ahead(max_concurrency: int) -> int:
    """How many requests a sync step keeps reserved ahead of a free slot, at most: their
    reservations are group-committed while every slot is busy, off the requests' path.
    They are in flight for the store (a kill counts their upper bounds as unrecorded,
    like those sent); a stop gives them back."""
    return max(1, max_concurrency // 2)


@dataclass(frozen=True, slots=True)
class _Dispatched:
    """A request as reserved: its body, reservation, and the model it was priced on."""

    params: dict[str, Any]
    reservation: Reservation
    model: ModelInfo
    tier: str


class SyncStep:
    """Sends one step's requests through the Messages API."""

    def __init__(self, ctx: RunContext, route: StepRoute, *, slots: asyncio.Semaphore) -> None:
        self.ctx = ctx
        self.route = route
        self.slots = slots  # shared by every step of the run: limits.max_concurrency
        self.gate = WarmGate()
        self.any_success = False

    async def run(self, items: Iterable[tuple[int, str, Any]]) -> None:
        """Send every ``(item_index, key, item)``; returns once all have settled."""
        tasks: set[asyncio.Task[None]] = set()
        queue = _Queue(iter(items))
        ahead = reserved_ahead(self.ctx.policy.limits.max_concurrency)
        refusal: BudgetExceeded | None = None
        try:
            while not self.ctx.stopping:
                free = await self._free_slots()
                if not self.ctx.stopping and len(queue.ready) < free and not queue.drained:
                    refusal = await self._reserve(queue, free - len(queue.ready) + ahead)
                sending = 0 if self.ctx.stopping else min(free, len(queue.ready))
                for _ in range(sending):
                    self._start(tasks, *queue.ready.popleft())
                self._release_slots(free - sending)
                if self.ctx.stopping or (not queue.ready and queue.drained):
                    break
                if refusal is not None and not queue.ready:
                    if not await self.ctx.headroom_or_stop(self.route, refusal):
                        break
                    refusal = None
                elif refusal is None and len(queue.ready) <= ahead // 4 and not queue.drained:
                    # reserve the next requests while every slot is busy, off their path
                    refusal = await self._reserve(queue, ahead - len(queue.ready))
        finally:
            if queue.ready:
                self.ctx.tracker.unsend([(key, d.reservation) for _, key, d in queue.ready])
            if tasks:
                await asyncio.gather(*tasks, return_exceptions=True)

    def _start(
        self, tasks: set[asyncio.Task[None]], index: int, key: str, dispatched: _Dispatched
    ) -> None:
        slot = _Slot(self.slots)
        task = asyncio.create_task(self._send(index, key, dispatched, slot))
        tasks.add(task)
        task.add_done_callback(tasks.discard)
        task.add_done_callback(slot.release)

    async def _reserve(self, queue: _Queue, count: int) -> BudgetExceeded | None:
        """Reserve up to ``count`` more requests (the ones this worker claims) into the
        queue's ready ones; the refusal of the first that did not fit, if any."""
        while not self.ctx.stopping:
            group = queue.take(min(count, _GROUP))
            if not group:
                return None
            claimed = self._claimed(group)  # other workers may hold some
            if not claimed:
                continue
            sent, refusal = await self._dispatch(claimed)
            queue.ready.extend((i, k, d) for (i, k, _), d in zip(claimed, sent, strict=False))
            queue.put_back(claimed[len(sent) :])
            return refusal
        return None

    def _claimed(self, group: list[tuple[int, str, Any]]) -> list[tuple[int, str, Any]]:
        """The part of ``group`` this worker claimed (all of it on a store of one worker)."""
        held = self.ctx.claimed(self.route.step_id, [(key, index) for index, key, _ in group])
        return group if held is None else [g for g in group if g[1] in held]

    async def _free_slots(self) -> int:
        """Wait for one concurrency slot, then take every other one that is free."""
        await self.slots.acquire()
        taken = 1
        while taken < _GROUP and not self.slots.locked():
            await self.slots.acquire()  # free: returns without suspending
            taken += 1
        return taken

    def _release_slots(self, count: int) -> None:
        for _ in range(count):
            self.slots.release()

    async def _dispatch(
        self, group: list[tuple[int, str, Any]]
    ) -> tuple[list[_Dispatched], BudgetExceeded | None]:
        """Render the group and reserve the upper bounds of its leading requests that fit,
        in one transaction; the refusal of the first that did not fit, if any."""
        route = self.route
        model, tier = route.model, route.tier  # a later downgrade must not relabel these
        rendered = [route.params(self.ctx.context_for(item)) for _, _, item in group]
        entries = [
            (key, index, await self._upper_bound(params, model))
            for (index, key, _), params in zip(group, rendered, strict=True)
        ]
        reservations, refusal = await self.ctx.tracker.dispatch_many(
            route.step_id, entries, model=model.id, tier=tier, mode="sync"
        )
        sent = [
            _Dispatched(params, reservation, model, tier)
            for params, reservation in zip(rendered, reservations, strict=False)
        ]
        return sent, refusal

    async def _upper_bound(self, params: dict[str, Any], model: ModelInfo) -> Decimal:
        return await request_bound(
            self.ctx.static_counts, self.route.step_id, params, model, batch=False
        )

    async def _send(self, index: int, key: str, sent: _Dispatched, slot: _Slot) -> None:
        try:
            await self._attempts(index, key, sent, slot)
        finally:
            self.ctx.settled()

    async def _attempts(self, index: int, key: str, sent: _Dispatched, slot: _Slot) -> None:
        ctx = self.ctx
        prefix_key = _prefix_key(sent.params)
        leader = prefix_key is not None and await self.gate.enter(prefix_key)
        attempt = _Attempt(sent.reservation)
        try:
            while True:
                attempt.number += 1
                try:
                    message, request_id = await self._call(
                        sent.params, prefix_key if leader else None
                    )
                    break
                except (asyncio.CancelledError, KeyboardInterrupt):
                    raise
                except Exception as exc:
                    if await self._after_failure(index, key, sent, attempt, exc):
                        continue
                    if leader and prefix_key is not None:
                        self.gate.failed(prefix_key)  # the next waiter leads
                    ctx.observer.request_done(self.route.step_id)
                    return
        except BaseException:
            if leader and prefix_key is not None:
                self.gate.failed(prefix_key)
            if attempt.reservation is not None:
                ctx.tracker.record_failure(
                    self.route.step_id, key, index, error="interrupted",
                    reservation=attempt.reservation,
                )  # fmt: skip
            raise
        # The response is in: its slot goes to the next request now. Its reservation
        # (at least what it cost) holds the budget until its usage is recorded.
        slot.release()
        if leader and prefix_key is not None:
            self.gate.opened(prefix_key)
        self.any_success = True
        assert attempt.reservation is not None
        reservation, attempt.reservation = attempt.reservation, None
        await self._record(index, key, sent, reservation, message, request_id)

    async def _after_failure(
        self, index: int, key: str, sent: _Dispatched, attempt: _Attempt, exc: Exception
    ) -> bool:
        """Classify a failed attempt: True to try again; else the failure is recorded
        (or the run stops: a key the API refuses, the organisation's spend cap)."""
        ctx, route = self.ctx, self.route
        failure = classify(exc)
        try:
            raise_if_fatal(failure)
        except BackendError as fatal:
            ctx.backend_error = fatal
            ctx.stop("backend")
            raise
        if failure.verdict is Verdict.SPEND_CAP:
            ctx.stop_for_budget(OrganisationSpendCap(spend_cap_message(failure)))
        if failure.status == 429 and failure.verdict is Verdict.RETRY:
            if isinstance(exc, anthropic.APIStatusError):
                ctx.pacer.observe(exc.response.headers, time.monotonic(), always=True)
            ctx.pacer.backoff(failure.retry_after, time.monotonic())
        retry = failure.verdict is Verdict.RETRY
        if failure.maybe_billed and attempt.reservation is not None:
            ctx.tracker.record_possibly_billed(
                route.step_id, key, index, attempt.reservation, error=failure.message
            )
            attempt.reservation = None
        if retry and attempt.number < ctx.policy.limits.max_attempts and not ctx.stopping:
            delay = ctx.backoff.delay(attempt.number, failure)
            _log.info(
                "request.retry", step=route.step_id, item=index, attempt=attempt.number,
                status=failure.status, error_type=failure.error_type, delay=delay,
            )  # fmt: skip
            await ctx.pause(delay)
            if attempt.reservation is None and not ctx.stopping:
                attempt.reservation = await self._reserve_again(index, key, sent)
            if attempt.reservation is not None and not ctx.stopping:
                return True
        if failure.status is None and not self.any_success and retry and not ctx.stopping:
            ctx.backend_error = BackendUnreachable(f"cannot reach the API: {failure.message}")
            ctx.stop("backend")
        error = f"{failure.status or ''} {failure.error_type}: {failure.message}"
        reservation, attempt.reservation = attempt.reservation, None
        await ctx.tracker.record_failure_async(
            route.step_id, key, index, error=error.strip(), reservation=reservation
        )
        return False

    async def _reserve_again(self, index: int, key: str, sent: _Dispatched) -> Reservation | None:
        """A new reservation for a retry whose last attempt may have been billed; None when
        the budget has no room for it any more (the run is then stopping)."""
        upper = await self._upper_bound(sent.params, sent.model)
        while not self.ctx.stopping:
            made, refusal = await self.ctx.tracker.dispatch_many(
                self.route.step_id, [(key, index, upper)],
                model=sent.model.id, tier=sent.tier, mode="sync",
            )  # fmt: skip
            if made:
                return made[0]
            if not await self.ctx.headroom_or_stop(self.route, refusal):
                return None
        return None

    async def _call(
        self, params: dict[str, Any], lead_key: str | None
    ) -> tuple[Message, str | None]:
        """One attempt. The leader of a cached prefix streams, to release followers as
        soon as its response has begun; ``abort_after_tokens`` also needs a stream."""
        client, route, pacer = self.ctx.client, self.route, self.ctx.pacer
        sdk, extra = split_sdk_params(params)
        if pacer.limited:
            await pacer.wait(input_tokens=_approx_tokens(params), output_tokens=sdk["max_tokens"])
        if lead_key is None and not route.stream:
            raw = await client.messages.with_raw_response.create(**sdk, extra_body=extra)
            pacer.observe(raw.headers, time.monotonic())
            message: Message = await raw.parse()
            return message, raw.request_id
        async with client.messages.stream(**sdk, extra_body=extra) as stream:
            pacer.observe(stream.response.headers, time.monotonic())
            received_bytes = estimated_tokens = 0
            async for event in stream:
                if event.type == "message_start" and lead_key is not None:
                    self.gate.opened(lead_key)
                elif event.type == "content_block_delta" and route.abort_after_tokens:
                    text = str(getattr(event.delta, "text", None) or "")
                    text += str(getattr(event.delta, "partial_json", None) or "")
                    received_bytes += len(text.encode("utf-8"))
                    estimated_tokens += estimate_text(text)
                    if estimated_tokens >= route.abort_after_tokens:
                        snapshot = stream.current_message_snapshot
                        return _aborted(snapshot, received_bytes), stream.request_id
            return await stream.get_final_message(), stream.request_id

    async def _record(
        self,
        index: int,
        key: str,
        sent: _Dispatched,
        reservation: Reservation,
        message: Message,
        request_id: str | None,
    ) -> None:
        ctx, route = self.ctx, self.route
        usage = usage_of(message.usage, default_ttl=ttl_of(sent.params))
        extracted = output_of(message, structured=route.structured)
        # An aborted stream may be billed up to max_tokens: the rest is counted unrecorded.
        aborted = str(message.stop_reason) == "aborted"  # set by _aborted, not an API value
        open_output = max(0, int(sent.params["max_tokens"]) - usage.output) if aborted else 0
        done = Completed(
            route.step_id, key, index, sent.model, sent.tier, "sync", usage, reservation,
            request_id, extracted.output, message.stop_reason, message.usage.service_tier,
            message.usage.speed, message.usage.inference_geo, open_output,
        )  # fmt: skip
        if extracted.error is None:
            await ctx.tracker.record_async([done])
        else:
            await ctx.tracker.record_failure_async(
                route.step_id, key, index, error=extracted.error, reservation=reservation,
                billed=done,
            )  # fmt: skip
        ctx.observer.request_done(route.step_id)


class _Queue:
    """A step's requests not yet sent: reserved ones ready to go (in order), refused
    ones to try again first, then the rest of the items."""

    __slots__ = ("_again", "_source", "drained", "ready")

    def __init__(self, source: Iterator[tuple[int, str, Any]]) -> None:
        self.ready: deque[tuple[int, str, _Dispatched]] = deque()
        self._again: list[tuple[int, str, Any]] = []
        self._source = source
        self.drained = False  # nothing left to reserve

    def take(self, count: int) -> list[tuple[int, str, Any]]:
        taken, self._again = self._again[:count], self._again[count:]
        taken += itertools.islice(self._source, count - len(taken))
        self.drained = not taken and not self._again
        return taken

    def put_back(self, refused: list[tuple[int, str, Any]]) -> None:
        if refused:
            self._again = refused + self._again
            self.drained = False


class _Slot:
    """One request's concurrency slot, given back once: when its response is in, or
    when its task ends (a failure, an interrupt)."""

    __slots__ = ("_held", "_slots")

    def __init__(self, slots: asyncio.Semaphore) -> None:
        self._slots = slots
        self._held = True

    def release(self, _: object = None) -> None:
        if self._held:
            self._held = False
            self._slots.release()


@dataclass(slots=True)
class _Attempt:
    """The state of one request across its attempts."""

    reservation: Reservation | None
    number: int = 0


def _approx_tokens(params: dict[str, Any]) -> int:
    """A quick estimate of a request's input tokens, for pacing only (4 bytes a token)."""
    size = sum(len(str(b.get("text", ""))) for b in params.get("system") or ())
    for message in params.get("messages", ()):
        content = message.get("content")
        size += len(content) if isinstance(content, str) else len(str(content))
    return size // 4 + 1


def _prefix_key(params: dict[str, Any]) -> str | None:
    """A key naming the cached prefix of a request (model + blocks up to the last
    breakpoint), or None when the request caches nothing."""
    blocks: list[Any] = [*params.get("tools", ()), *(params.get("system") or ())]
    last = max((i for i, b in enumerate(blocks) if b.get("cache_control")), default=None)
    if last is None:
        return None
    return repr((params["model"], blocks[: last + 1]))


def _aborted(snapshot: Message, received_bytes: int) -> Message:
    """The partial message of an early abort. Output tokens are bounded by the bytes
    received (a token covers at least one byte): the recorded cost never undercounts."""
    usage = snapshot.usage.model_copy(update={"output_tokens": max(received_bytes, 1)})
    return snapshot.model_copy(update={"usage": usage, "stop_reason": "aborted"})
