"""The emulator's Starlette app: routes, auth, request ids, rate limits, spend cap, faults.

Endpoints: ``POST /v1/messages`` (and ``/count_tokens``), Message Batches, the Models
API, and ``/_emulator/ledger`` and ``/_emulator/reset`` for tests.

``POST /v1/messages`` goes through, in order: the spend cap (:mod:`.spendcap`), an
injected fault, validation and the model's rules, the rate limits (:mod:`.ratelimit`;
enforced only with ``rate_limits``), then the engine. A batch create checks the spend
cap, creates the batch, then waits ``batch_create_delay_ms`` before answering.

``create_app()`` serves over uvicorn (``llmflow emulator``) and in-process behind
``httpx2.ASGITransport`` for ``--backend emulator`` and tests.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, Final

import structlog
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse
from starlette.routing import Route

from llmflow.catalog import load_catalog
from llmflow.emulator.batches import BatchStore
from llmflow.emulator.config import EmulatorConfig
from llmflow.emulator.engine import Engine
from llmflow.emulator.errors import ApiError, error_bytes, invalid
from llmflow.emulator.faults import FaultInjector
from llmflow.emulator.models_api import listed, model_json, parse_lifecycles, retrieve
from llmflow.emulator.paging import page, page_json, parse_limit
from llmflow.emulator.ratelimit import Admission, RateLimiter, RateLimitWindow
from llmflow.emulator.refusals import refuse, utc_day
from llmflow.emulator.spendcap import SpendCap
from llmflow.emulator.streaming import message_stream
from llmflow.emulator.validation import ParsedRequest, parse_request

log = structlog.get_logger("llmflow.emulator")

MAX_BATCH_BYTES: Final = 256 * 1024 * 1024
MAX_MESSAGE_BYTES: Final = 32 * 1024 * 1024
_JSON: Final = "application/json"

Handler = Callable[[Request, str], Awaitable[Response]]


def _dumps(value: Any) -> bytes:
    return json.dumps(value, ensure_ascii=False, separators=(",", ":")).encode()


class EmulatorState:
    """Everything one emulator instance remembers."""

    def __init__(self, config: EmulatorConfig) -> None:
        self.config = config
        self.clock = config.clock
        self.latency_s = config.latency_ms / 1000.0
        self.engine = Engine(config.seed, self.latency_s, output_scale=config.output_scale)
        self.batches = BatchStore(
            self.engine, config.batch_seconds, cache_hit_rate=config.batch_cache_hit_rate
        )
        self.faults = FaultInjector(config.faults, config.seed, config.retry_after_seconds)
        self.ratelimit = RateLimitWindow(config.requests_per_minute, config.tokens_per_minute)
        limits = config.rate_limits
        self.limiter = RateLimiter(limits) if limits is not None else None
        cap = config.spend_cap_usd
        self.spend_cap = SpendCap(cap, self.engine.ledger) if cap is not None else None
        self.batch_create_delay_s = config.batch_create_delay_ms / 1000.0

    def reset(self) -> None:
        """Clear cache, ledger, batches, the rate-limit window, fill the rate-limit buckets
        and restart the fault sequence."""
        self.engine.reset()
        self.ratelimit = RateLimitWindow(
            self.config.requests_per_minute, self.config.tokens_per_minute
        )
        self.batches.clear()
        self.faults.reset()
        if self.limiter is not None:
            self.limiter.reset()

    def check_spend(self, now: float) -> None:
        """Refuse new work past the spend cap (batches due by ``now`` billed first)."""
        if self.spend_cap is not None:
            self.batches.advance(now)
            self.spend_cap.check()

    def admit(self, request: ParsedRequest, now: float) -> Admission | None:
        """Charge the enforced rate limits for ``request``, or raise their 429."""
        if self.limiter is None:
            return None
        cached = self.engine.cache.peek(request, now)
        uncached = request.total_input_tokens - cached.read
        return self.limiter.admit(now, uncached, request.max_tokens)

    def count(self, request: ParsedRequest, usage: dict[str, Any], now: float) -> None:
        """Count a billed request in the reported window (when limits are not enforced)."""
        if self.limiter is None:
            self.ratelimit.count(now, request.total_input_tokens, usage["output_tokens"])

    def settle(self, admission: Admission | None, usage: dict[str, Any] | None) -> None:
        """Correct an admitted request's charge to its ``usage`` (None: it did not run)."""
        if self.limiter is None or admission is None:
            return
        used_in = used_out = 0
        if usage is not None:
            used_in = usage["input_tokens"] + usage["cache_creation_input_tokens"]
            used_out = usage["output_tokens"]
        self.limiter.settle(admission, self.clock(), used_in, used_out)

    def rate_limit_headers(self, now: float) -> dict[str, str]:
        """The ``anthropic-ratelimit-*`` headers of a response sent at ``now``."""
        if self.limiter is not None:
            return self.limiter.headers(now)
        return self.ratelimit.headers(now)


def _authorized(request: Request) -> bool:
    headers = request.headers
    if headers.get("x-api-key"):
        return True
    auth = headers.get("authorization", "")
    return auth[:7].lower() == "bearer " and bool(auth[7:].strip())


async def _json_body(request: Request, limit: int | None = None) -> Any:
    raw = await request.body()
    if limit is not None and len(raw) > limit:
        raise ApiError("request_too_large", f"Request exceeds the maximum size of {limit} bytes")
    try:
        return json.loads(raw)
    except ValueError:
        raise invalid("The request body is not valid JSON.") from None


def _json(value: Any, status: int = 200) -> Response:
    return Response(_dumps(value), status_code=status, media_type=_JSON)


def _api(state: EmulatorState, handler: Handler) -> Callable[[Request], Awaitable[Response]]:
    """Wrap an API handler: auth, request-id, error bodies, rate-limit headers."""

    async def endpoint(request: Request) -> Response:
        request_id = state.engine.ids.new("req")
        try:
            if not _authorized(request):
                raise ApiError("authentication_error", "invalid x-api-key")
            response = await handler(request, request_id)
        except ApiError as error:
            response = Response(error_bytes(error, request_id), error.status, media_type=_JSON)
            for key, value in error.headers.items():
                response.raw_headers.append((key.encode(), value.encode()))
            if error.status >= 500 or error.status == 429:
                log.info("emulator.error", request_id=request_id, error_type=error.error_type)
        extra = [("request-id", request_id)]
        extra.extend(state.rate_limit_headers(state.clock()).items())
        response.raw_headers.extend((k.encode(), v.encode()) for k, v in extra)
        return response

    return endpoint


class _Handlers:
    """The API's endpoints on one emulator's state."""

    def __init__(self, state: EmulatorState) -> None:
        self.state = state
        self.engine = state.engine
        self.batches = state.batches
        self.clock = state.clock

    async def messages(self, request: Request, request_id: str) -> Response:
        body = await _json_body(request, MAX_MESSAGE_BYTES)
        state = self.state
        state.check_spend(self.clock())
        fault = state.faults.draw()
        if fault is not None:
            raise fault
        parsed = parse_request(body)
        now = self.clock()
        refuse(parsed, today=utc_day(now))
        admission = state.admit(parsed, now)
        usage: dict[str, Any] | None = None
        try:
            message = self.engine.complete(parsed, now=now, request_id=request_id)
            usage = message["usage"]
            state.count(parsed, usage, now)
            if state.latency_s > 0:
                await asyncio.sleep(state.latency_s)
        finally:
            state.settle(admission, usage)
        if parsed.stream:

            async def frames() -> AsyncIterator[bytes]:
                for frame in message_stream(message):
                    yield frame

            return StreamingResponse(
                frames(), media_type="text/event-stream", headers={"cache-control": "no-cache"}
            )
        return _json(message)

    async def count_tokens(self, request: Request, request_id: str) -> Response:
        parsed = parse_request(await _json_body(request, MAX_MESSAGE_BYTES), count_only=True)
        now = self.clock()
        refuse(parsed, today=utc_day(now), count_only=True)
        if self.state.limiter is None:
            self.state.ratelimit.count(now)
        return _json({"input_tokens": parsed.total_input_tokens})

    async def create_batch(self, request: Request, request_id: str) -> Response:
        body = await _json_body(request, MAX_BATCH_BYTES)
        now = self.clock()
        self.state.check_spend(now)
        batch = self.batches.create(body, now)
        created = batch.to_json(str(request.base_url))
        delay = self.state.batch_create_delay_s
        if delay > 0:
            # The batch exists (listed, processed, billed) even if the client gives up now.
            log.debug("emulator.batch.create_delayed", batch_id=batch.id, delay_s=delay)
            await asyncio.sleep(delay)
        return _json(created)

    async def list_batches(self, request: Request, request_id: str) -> Response:
        query = request.query_params
        limit = parse_limit(query)
        chunk, has_more = self.batches.page(
            self.clock(), query.get("before_id"), query.get("after_id"), limit
        )
        base = str(request.base_url)
        return _json(page_json(chunk, has_more, lambda b: b.to_json(base)))

    async def retrieve_batch(self, request: Request, request_id: str) -> Response:
        batch = self.batches.get(request.path_params["batch_id"], self.clock())
        return _json(batch.to_json(str(request.base_url)))

    async def delete_batch(self, request: Request, request_id: str) -> Response:
        batch_id = request.path_params["batch_id"]
        self.batches.delete(batch_id, self.clock())
        return _json({"id": batch_id, "type": "message_batch_deleted"})

    async def cancel_batch(self, request: Request, request_id: str) -> Response:
        batch = self.batches.cancel(request.path_params["batch_id"], self.clock())
        return _json(batch.to_json(str(request.base_url)))

    async def batch_results(self, request: Request, request_id: str) -> Response:
        data = self.batches.results(request.path_params["batch_id"], self.clock())
        return Response(data, media_type="application/binary")

    async def list_models(self, request: Request, request_id: str) -> Response:
        query = request.query_params
        limit = parse_limit(query)
        stages = parse_lifecycles([*query.getlist("lifecycle[]"), *query.getlist("lifecycle")])
        models = listed(load_catalog(), stages)
        chunk, has_more = page(
            models,
            [m.id for m in models],
            before_id=query.get("before_id"),
            after_id=query.get("after_id"),
            limit=limit,
        )
        return _json(page_json(chunk, has_more, model_json))

    async def retrieve_model(self, request: Request, request_id: str) -> Response:
        return _json(model_json(retrieve(load_catalog(), request.path_params["model_id"])))

    async def ledger(self, request: Request) -> Response:
        self.batches.advance(self.clock())
        return _json(self.engine.ledger.to_json())

    async def reset(self, request: Request) -> Response:
        self.state.reset()
        return _json({"ok": True})


def _routes(state: EmulatorState) -> list[Route]:
    h = _Handlers(state)

    def api(handler: Handler) -> Callable[[Request], Awaitable[Response]]:
        return _api(state, handler)

    batch_path = "/v1/messages/batches/{batch_id}"
    return [
        Route("/v1/messages", api(h.messages), methods=["POST"]),
        Route("/v1/messages/count_tokens", api(h.count_tokens), methods=["POST"]),
        Route("/v1/messages/batches", api(h.create_batch), methods=["POST"]),
        Route("/v1/messages/batches", api(h.list_batches), methods=["GET"]),
        Route(batch_path, api(h.retrieve_batch), methods=["GET"]),
        Route(batch_path, api(h.delete_batch), methods=["DELETE"]),
        Route(batch_path + "/cancel", api(h.cancel_batch), methods=["POST"]),
        Route(batch_path + "/results", api(h.batch_results), methods=["GET"]),
        Route("/v1/models", api(h.list_models), methods=["GET"]),
        Route("/v1/models/{model_id}", api(h.retrieve_model), methods=["GET"]),
        Route("/_emulator/ledger", h.ledger, methods=["GET"]),
        Route("/_emulator/reset", h.reset, methods=["POST"]),
    ]


async def _http_error(request: Request, exc: Exception) -> Response:
    """Unknown paths and methods answer with API error bodies too."""
    status = exc.status_code if isinstance(exc, HTTPException) else 500
    if status == 404:
        error = ApiError("not_found_error", f"Not found: {request.method} {request.url.path}")
    elif status >= 500:
        error = ApiError("api_error", "Internal server error")
    else:
        error = ApiError("invalid_request_error", f"{request.method} is not allowed here")
    state: EmulatorState = request.app.state.emulator
    request_id = state.engine.ids.new("req")
    response = Response(error_bytes(error, request_id), status, media_type=_JSON)
    response.raw_headers.append((b"request-id", request_id.encode()))
    return response


def create_app(config: EmulatorConfig | None = None) -> Starlette:
    """A fresh emulator (its own cache, ledger and batches)."""
    state = EmulatorState(config or EmulatorConfig())
    app = Starlette(
        routes=_routes(state),
        exception_handlers={404: _http_error, 405: _http_error},
    )
    app.state.emulator = state
    return app
