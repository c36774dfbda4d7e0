"""Fixtures: the emulator in-process and over HTTP, every response checked against the spec.

Every response the emulator sends through these fixtures passes an ASGI wrapper that
validates its body against the OpenAPI subset of the Messages and Message Batches
endpoints kept in tests/fixtures/api (SSE events and JSONL lines included); violations
fail the test at teardown.
"""

from __future__ import annotations

import copy
import json
import threading
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, MutableMapping
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Any

import anthropic
import httpx2
import pytest
import uvicorn
from openapi_schema_validator import OAS30Validator
from starlette.applications import Starlette

from llmflow.emulator import EmulatorConfig, create_app

SPEC_PATH = Path(__file__).resolve().parents[1] / "fixtures" / "api" / "messages-openapi.json"
BASE = "http://emulator.test"
Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]


def _nullable_any_of(node: Any) -> None:
    """OAS 3.0 ``nullable`` next to ``anyOf``/``oneOf`` (no ``type``): allow null explicitly."""
    if isinstance(node, dict):
        for value in node.values():
            _nullable_any_of(value)
        if node.get("nullable") and "type" not in node:
            for key in ("anyOf", "oneOf"):
                if key in node:
                    node[key].append({"enum": [None]})
                    break
    elif isinstance(node, list):
        for value in node:
            _nullable_any_of(value)


@cache
def _components() -> dict[str, Any]:
    spec = json.loads(SPEC_PATH.read_text("utf-8"))
    components = copy.deepcopy(spec["components"])
    _nullable_any_of(components)
    return {"components": components}


@cache
def validator(schema_name: str) -> OAS30Validator:
    """An OAS 3.0 validator for ``components.schemas[schema_name]`` ($refs resolved in-file)."""
    return OAS30Validator({"$ref": f"#/components/schemas/{schema_name}", **_components()})


def schema_errors(schema_name: str, instance: Any) -> list[str]:
    """Every violation of the schema, as short strings."""
    return [
        f"{schema_name}: {'/'.join(map(str, e.absolute_path))}: {e.message[:200]}"
        for e in validator(schema_name).iter_errors(instance)
    ]


def _schema_for(method: str, path: str, status: int) -> str | None:
    if status >= 400:
        return "ErrorResponse"
    if path == "/v1/messages":
        return "Message"
    if path == "/v1/messages/count_tokens":
        return "CountMessageTokensResponse"
    if path == "/v1/messages/batches":
        return "MessageBatch" if method == "POST" else "ListResponse_MessageBatch_"
    if path.startswith("/v1/messages/batches/"):
        if path.endswith("/results"):
            return "MessageBatchIndividualResponse"
        return "DeleteMessageBatchResponse" if method == "DELETE" else "MessageBatch"
    return None


def check_body(method: str, path: str, status: int, content_type: str, body: bytes) -> list[str]:
    """Validate one response body; returns the problems found."""
    schema = _schema_for(method, path, status)
    if schema is None:
        return []
    problems: list[str] = []
    if content_type.startswith("text/event-stream"):
        events = parse_sse(body.decode())
        for name, data in events:
            if data.get("type") != name:
                problems.append(f"SSE event {name!r} carries type {data.get('type')!r}")
            if name == "message_start":
                problems += schema_errors("Message", data["message"])
        return problems
    if path.endswith("/results") and status == 200:
        text = body.decode()
        lines = text.split("\n")
        if lines and lines[-1] == "":
            lines.pop()
        for line in lines:
            if not line.strip():
                problems.append("blank line in JSONL results")
                continue
            problems += schema_errors(schema, json.loads(line))
        return problems
    return schema_errors(schema, json.loads(body))


def parse_sse(text: str) -> list[tuple[str, dict[str, Any]]]:
    """``[(event, data), ...]`` of an SSE body."""
    events = []
    for frame in text.split("\n\n"):
        if not frame.strip():
            continue
        name, data = "", ""
        for line in frame.split("\n"):
            if line.startswith("event: "):
                name = line[7:]
            elif line.startswith("data: "):
                data += line[6:]
        events.append((name, json.loads(data)))
    return events


@dataclass
class SpecCheck:
    """An ASGI wrapper validating every response of the wrapped app."""

    app: Starlette
    problems: list[str] = field(default_factory=list)
    checked: int = 0

    async def __call__(
        self,
        scope: Scope,
        receive: Callable[[], Awaitable[Message]],
        send: Callable[[Message], Awaitable[None]],
    ) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        status = 0
        content_type = ""
        chunks: list[bytes] = []

        async def capture(message: Message) -> None:
            nonlocal status, content_type
            if message["type"] == "http.response.start":
                status = message["status"]
                for key, value in message.get("headers", []):
                    if key.lower() == b"content-type":
                        content_type = value.decode()
            elif message["type"] == "http.response.body":
                chunks.append(message.get("body", b""))
                if not message.get("more_body", False):
                    try:
                        self.problems += check_body(
                            scope["method"], scope["path"], status, content_type, b"".join(chunks)
                        )
                    except Exception as exc:  # pragma: no cover - reported at teardown
                        self.problems.append(f"{scope['path']}: {exc!r}")
                    self.checked += 1
            await send(message)

        await self.app(scope, receive, capture)


@dataclass
class Emu:
    """An in-process emulator and SDK clients bound to it."""

    app: Starlette
    checked: SpecCheck

    def async_client(self, **kwargs: Any) -> anthropic.AsyncAnthropic:
        transport = httpx2.ASGITransport(app=self.checked)
        http = httpx2.AsyncClient(transport=transport, base_url=BASE)
        kwargs.setdefault("max_retries", 0)
        return anthropic.AsyncAnthropic(
            api_key="test-key", base_url=BASE, http_client=http, **kwargs
        )

    def raw(self) -> httpx2.AsyncClient:
        """A plain httpx2 client (no auth header) bound to the app."""
        return httpx2.AsyncClient(transport=httpx2.ASGITransport(app=self.checked), base_url=BASE)

    async def ledger(self) -> dict[str, Any]:
        async with self.raw() as client:
            response = await client.get("/_emulator/ledger")
            return dict(response.json())


class Clock:
    """A settable clock for the emulator's ``clock`` hook."""

    def __init__(self, start: float = 1_800_000_000.0) -> None:
        self.now = start

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def make_emu() -> Iterator[Callable[..., Emu]]:
    """Build in-process emulators; checks every response against the spec at teardown."""
    made: list[Emu] = []

    def factory(**config: Any) -> Emu:
        app = create_app(EmulatorConfig(**config))
        emu = Emu(app, SpecCheck(app))
        made.append(emu)
        return emu

    yield factory
    problems = [p for emu in made for p in emu.checked.problems]
    assert not problems, "\n".join(problems)


@pytest.fixture
def emu(make_emu: Callable[..., Emu], clock: Clock) -> Emu:
    return make_emu(clock=clock)


@pytest.fixture
async def aclient(emu: Emu) -> AsyncIterator[anthropic.AsyncAnthropic]:
    client = emu.async_client()
    yield client
    await client.close()


@dataclass
class HttpServer:
    """A uvicorn server on 127.0.0.1 in a background thread."""

    url: str
    checked: SpecCheck


def _serve(config: EmulatorConfig) -> tuple[HttpServer, uvicorn.Server, threading.Thread]:
    app = create_app(config)
    checked = SpecCheck(app)
    server_config = uvicorn.Config(
        checked, host="127.0.0.1", port=0, log_level="warning", access_log=False, lifespan="off"
    )
    server = uvicorn.Server(server_config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started:
        if time.monotonic() > deadline or not thread.is_alive():
            raise RuntimeError("uvicorn did not start")
        time.sleep(0.01)
    port = server.servers[0].sockets[0].getsockname()[1]
    return HttpServer(f"http://127.0.0.1:{port}", checked), server, thread


@pytest.fixture
def make_http_server() -> Iterator[Callable[..., HttpServer]]:
    """Start uvicorn servers of emulators built from config keywords; stopped and checked
    against the spec at teardown."""
    started: list[tuple[HttpServer, uvicorn.Server, threading.Thread]] = []

    def factory(**config: Any) -> HttpServer:
        started.append(_serve(EmulatorConfig(**config)))
        return started[-1][0]

    yield factory
    for _, server, _ in started:
        server.should_exit = True
    for _, _, thread in started:
        thread.join(timeout=10)
    problems = [p for http, _, _ in started for p in http.checked.problems]
    assert not problems, "\n".join(problems)


@pytest.fixture
def http_server(make_http_server: Callable[..., HttpServer], clock: Clock) -> HttpServer:
    return make_http_server(clock=clock)


@dataclass(frozen=True)
class SpecTools:
    """Helpers tests reach through the ``spec`` fixture (importlib mode: no sibling imports)."""

    errors: Callable[[str, Any], list[str]]
    parse_sse: Callable[[str], list[tuple[str, dict[str, Any]]]]
    base: str


@pytest.fixture
def spec() -> SpecTools:
    return SpecTools(schema_errors, parse_sse, BASE)
