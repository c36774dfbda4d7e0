"""Request validation, as the API does it, into a :class:`ParsedRequest`.

:func:`parse_request` checks the *shape* of a messages (or count_tokens) body: known
fields, the prompt (:mod:`llmflow.emulator.segments`), ``tool_choice`` and the options
(:mod:`llmflow.emulator.options`), and that the model exists. Whether the model accepts
the request (sampling, thinking, effort, fast mode, limits, lifecycle, ...) is the
catalog's request rules, applied by :func:`llmflow.emulator.refusals.refuse`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any, Final

from llmflow.catalog import ModelInfo, load_catalog
from llmflow.emulator.errors import ApiError, invalid, not_found
from llmflow.emulator.options import RequestOptions, parse_options
from llmflow.emulator.segments import (
    Segment,
    apply_top_level_cache_control,
    check_breakpoints,
    message_segments,
    system_segments,
    tool_segments,
    ttl_seconds,
)
from llmflow.emulator.tokenizer import REQUEST_OVERHEAD

_CREATE_FIELDS: Final = frozenset(
    {
        "model",
        "messages",
        "max_tokens",
        "system",
        "tools",
        "tool_choice",
        "stream",
        "stop_sequences",
        "temperature",
        "top_p",
        "top_k",
        "metadata",
        "thinking",
        "cache_control",
        "container",
        "inference_geo",
        "output_config",
        "service_tier",
        "speed",
        "diagnostics",
        "context_management",
        "mcp_servers",
    }
)
#: What count_tokens accepts (the SDK's MessageCountTokensParams).
_COUNT_FIELDS: Final = frozenset(
    {
        "model",
        "messages",
        "system",
        "tools",
        "tool_choice",
        "thinking",
        "cache_control",
        "output_config",
        "speed",
    }
)
_TOOL_CHOICES: Final = ("auto", "any", "tool", "none")


@dataclass(slots=True)
class ParsedRequest:
    """A validated ``/v1/messages`` (or count_tokens) body."""

    body: dict[str, Any]
    model: str
    info: ModelInfo
    max_tokens: int
    stream: bool
    segments: list[Segment]
    overhead: int
    tools: dict[str, dict[str, Any]] = field(default_factory=dict)
    forced_tool: str | None = None
    any_tool: bool = False
    tool_choice: str | None = None
    stop_sequences: list[str] = field(default_factory=list)
    options: RequestOptions = field(default_factory=RequestOptions)
    injected: int = 0

    @property
    def family(self) -> str:
        """The model's tokenizer family (``old`` or ``new``)."""
        return self.info.tokenizer

    @property
    def breakpoints(self) -> list[int]:
        """Indices of the segments that carry a ``cache_control`` breakpoint."""
        return [i for i, s in enumerate(self.segments) if s.ttl is not None]

    @property
    def total_input_tokens(self) -> int:
        """Every input token the request bills (uncached + written + read), the injected
        system prompt included."""
        return self.overhead + sum(s.tokens for s in self.segments)

    @property
    def prefill(self) -> bool:
        """Whether the last message is an assistant turn."""
        messages = self.body.get("messages") or [{}]
        return bool(messages[-1].get("role") == "assistant")


@lru_cache(maxsize=256)
def lookup_model(model: str) -> ModelInfo | None:
    """The catalog entry for ``model`` (cached: the hot path calls it per request)."""
    return load_catalog().get(model)


def _max_tokens(body: dict[str, Any]) -> int:
    raw = body.get("max_tokens")
    if raw is None:
        raise invalid("max_tokens: Field required")
    if not isinstance(raw, int) or isinstance(raw, bool):
        raise invalid("max_tokens: Input should be a valid integer")
    if raw < 0:
        raise invalid("max_tokens: Input should be greater than or equal to 0")
    return raw


def _tool_choice(
    body: dict[str, Any], tools: dict[str, dict[str, Any]]
) -> tuple[str | None, str | None]:
    """(tool_choice type, the forced tool's name)."""
    choice = body.get("tool_choice")
    if choice is None:
        return None, None
    if not isinstance(choice, dict) or choice.get("type") not in _TOOL_CHOICES:
        raise invalid("tool_choice.type: Input should be 'auto', 'any', 'tool' or 'none'")
    ctype = str(choice["type"])
    if ctype in ("any", "tool") and not tools:
        raise invalid(f"tool_choice: tool_choice.type {ctype!r} requires tools")
    if ctype == "tool":
        name = choice.get("name")
        if not isinstance(name, str) or name not in tools:
            raise invalid(f"tool_choice.name: tool {name!r} is not in tools")
        return ctype, name
    return ctype, None


def _prompt(
    body: dict[str, Any], family: str
) -> tuple[list[Segment], int, dict[str, dict[str, Any]]]:
    """(segments, framing outside segments, tools by name)."""
    segments: list[Segment] = []
    tools: dict[str, dict[str, Any]] = {}
    if body.get("tools") is not None:
        tool_parts, tools = tool_segments(body["tools"], family)
        segments.extend(tool_parts)
    if body.get("system") is not None:
        segments.extend(system_segments(body["system"], family))
    if "messages" not in body:
        raise invalid("messages: Field required")
    found, stray = message_segments(body["messages"], family)
    segments.extend(found)
    apply_top_level_cache_control(body, segments)
    check_breakpoints(segments)
    return segments, stray, tools


def injected_tokens(info: ModelInfo, tools: bool, forced: bool, structured: bool) -> int:
    """The system prompt the API adds for tools or structured output (uncached input)."""
    injected = info.injected_prompt_tokens
    total = 0
    if tools:
        total += injected.forced_tool if forced else injected.tools
    if structured:
        total += injected.structured_output
    return total


def _stream_and_stops(body: dict[str, Any]) -> tuple[bool, list[str]]:
    stream = body.get("stream", False)
    if not isinstance(stream, bool):
        raise invalid("stream: Input should be a valid boolean")
    stop = body.get("stop_sequences") or []
    if not isinstance(stop, list) or not all(isinstance(s, str) and s for s in stop):
        raise invalid("stop_sequences: Input should be a list of non-empty strings")
    return stream, list(stop)


def parse_request(body: Any, *, count_only: bool = False) -> ParsedRequest:
    """Validate a messages (or count_tokens) body; raise :class:`ApiError` as the API would."""
    if not isinstance(body, dict):
        raise invalid("The request body is not valid JSON.")
    allowed = _COUNT_FIELDS if count_only else _CREATE_FIELDS
    for key in body:
        if key not in allowed:
            raise invalid(f"{key}: Extra inputs are not permitted")
    model = body.get("model")
    if not isinstance(model, str) or not model:
        raise invalid("model: Field required")
    max_tokens = 0 if count_only else _max_tokens(body)
    stream, stops = _stream_and_stops(body)
    options = parse_options(body)
    info = lookup_model(model)
    segments, stray, tools = _prompt(body, info.tokenizer if info else "old")
    choice, forced = _tool_choice(body, tools)
    if info is None:
        raise not_found(f"model: {model}")
    injected = injected_tokens(
        info, bool(tools), choice in ("any", "tool"), options.output_schema is not None
    )
    return ParsedRequest(
        body=body,
        model=model,
        info=info,
        max_tokens=max_tokens,
        stream=stream,
        segments=segments,
        overhead=REQUEST_OVERHEAD + stray + injected,
        tools=tools,
        forced_tool=forced,
        any_tool=choice == "any",
        tool_choice=choice,
        stop_sequences=stops,
        options=options,
        injected=injected,
    )


__all__ = ["ApiError", "ParsedRequest", "Segment", "lookup_model", "parse_request", "ttl_seconds"]
