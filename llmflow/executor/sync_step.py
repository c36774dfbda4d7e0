"""Running a sync step: bounded concurrency, cache-warm fan-out, retries, early abort.

Per request: reserve the upper bound (the tracker commits it in flight), send, record
the usage before the next dispatch decision, or release the reservation on failure.
The first request of a cached prefix goes alone and releases the others once its
response has begun (:mod:`llmflow.executor.warmup`).
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import structlog
from anthropic.types import Message

from llmflow.catalog import ModelInfo
from llmflow.errors import BackendError, BackendUnreachable, BudgetExceeded
from llmflow.executor.context import RunContext, StepRoute
from llmflow.executor.responses import output_of, ttl_of, usage_of
from llmflow.executor.retry import Verdict, classify, raise_if_fatal
from llmflow.executor.warmup import WarmGate
from llmflow.planner import request_max_cost, split_sdk_params
from llmflow.planner.tokens import estimate_text
from llmflow.tracker import Completed, Reservation

_log = structlog.get_logger("llmflow.executor")


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
        try:
            for index, key, item in items:
                await self.slots.acquire()
                sent = None
                while sent is None and not self.ctx.stopping:
                    try:
                        sent = self._dispatch(index, key, item)
                    except BudgetExceeded:
                        if not await self.ctx.headroom_or_stop(self.route):
                            break
                if sent is None:
                    self.slots.release()
                    break
                task = asyncio.create_task(self._send(index, key, sent))
                tasks.add(task)
                task.add_done_callback(tasks.discard)
                task.add_done_callback(lambda _: self.slots.release())
        finally:
            if tasks:
                await asyncio.gather(*tasks, return_exceptions=True)

    def _dispatch(self, index: int, key: str, item: Any) -> _Dispatched:
        """Render and reserve the request's upper bound (raises BudgetExceeded)."""
        route = self.route
        model, tier = route.model, route.tier  # a later downgrade must not relabel this one
        params = route.params(self.ctx.context_for(item))
        upper = request_max_cost(params, model, batch=False)
        reservation = self.ctx.tracker.dispatch(
            route.step_id, key, index, model=model.id, tier=tier, mode="sync", upper_bound=upper
        )
        return _Dispatched(params, reservation, model, tier)

    async def _send(self, index: int, key: str, sent: _Dispatched) -> None:
        try:
            await self._attempts(index, key, sent)
        finally:
            self.ctx.settled()

    async def _attempts(self, index: int, key: str, sent: _Dispatched) -> None:
        ctx, route = self.ctx, self.route
        params: dict[str, Any] = sent.params
        reservation: Reservation | None = sent.reservation
        prefix_key = _prefix_key(params)
        leader = prefix_key is not None and await self.gate.enter(prefix_key)
        attempt = 0
        try:
            while True:
                attempt += 1
                try:
                    message, request_id = await self._call(params, prefix_key if leader else None)
                    break
                except (asyncio.CancelledError, KeyboardInterrupt):
                    raise
                except Exception as exc:
                    failure = classify(exc)
                    try:
                        raise_if_fatal(failure)
                    except BackendError as fatal:
                        ctx.backend_error = fatal
                        ctx.stop("backend")
                        raise
                    retry = failure.verdict is Verdict.RETRY
                    if failure.maybe_billed and reservation is not None:
                        ctx.tracker.record_possibly_billed(
                            route.step_id, key, index, reservation, error=failure.message
                        )
                        reservation = None
                    if retry and attempt < ctx.policy.limits.max_attempts and not ctx.stopping:
                        delay = ctx.backoff.delay(attempt, failure)
                        _log.info(
                            "request.retry", step=route.step_id, item=index, attempt=attempt,
                            status=failure.status, error_type=failure.error_type, delay=delay,
                        )  # fmt: skip
                        await ctx.pause(delay)
                        if reservation is None and not ctx.stopping:
                            reservation = await self._reserve_again(index, key, sent)
                        if reservation is not None and not ctx.stopping:
                            continue
                    if (
                        failure.status is None
                        and not self.any_success
                        and retry
                        and not ctx.stopping
                    ):
                        ctx.backend_error = BackendUnreachable(
                            f"cannot reach the API: {failure.message}"
                        )
                        ctx.stop("backend")
                    error = f"{failure.status or ''} {failure.error_type}: {failure.message}"
                    if leader and prefix_key is not None:
                        self.gate.failed(prefix_key)  # the next waiter leads
                    ctx.tracker.record_failure(
                        route.step_id, key, index, error=error.strip(), reservation=reservation
                    )
                    reservation = None
                    ctx.observer.request_done(route.step_id)
                    return
        except BaseException:
            if leader and prefix_key is not None:
                self.gate.failed(prefix_key)
            if reservation is not None:
                ctx.tracker.record_failure(
                    route.step_id, key, index, error="interrupted", reservation=reservation
                )
            raise
        if leader and prefix_key is not None:
            self.gate.opened(prefix_key)
        self.any_success = True
        assert reservation is not None
        self._record(index, key, sent, reservation, message, request_id)

    async def _reserve_again(self, index: int, key: str, sent: _Dispatched) -> Reservation | None:
        """A new reservation for a retry whose last attempt may have been billed; None when
        the budget has no room for it any more (the run is then stopping)."""
        upper = request_max_cost(sent.params, sent.model, batch=False)
        while not self.ctx.stopping:
            try:
                return self.ctx.tracker.dispatch(
                    self.route.step_id, key, index,
                    model=sent.model.id, tier=sent.tier, mode="sync", upper_bound=upper,
                )  # fmt: skip
            except BudgetExceeded:
                if not await self.ctx.headroom_or_stop(self.route):
                    return None
        return None

    async def _call(
        self, params: dict[str, Any], lead_key: str | None
    ) -> tuple[Message, str | None]:
        """One attempt. The leader of a cached prefix streams, to release followers as
        soon as its response has begun; ``abort_after_tokens`` also needs a stream."""
        client, route = self.ctx.client, self.route
        sdk, extra = split_sdk_params(params)
        if lead_key is None and not route.stream:
            message: Message = await client.messages.create(**sdk, extra_body=extra)
            return message, getattr(message, "_request_id", None)
        async with client.messages.stream(**sdk, extra_body=extra) as stream:
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

    def _record(
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
        done = Completed(
            route.step_id, key, index, sent.model, sent.tier, "sync", usage, reservation,
            request_id, extracted.output, message.stop_reason, message.usage.service_tier,
            message.usage.speed, message.usage.inference_geo,
        )  # fmt: skip
        if extracted.error is None:
            ctx.tracker.record_batch([done])
        else:
            ctx.tracker.record_failure(
                route.step_id, key, index, error=extracted.error, reservation=reservation,
                billed=done,
            )  # fmt: skip
        ctx.observer.request_done(route.step_id)


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
