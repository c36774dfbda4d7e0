"""Request validation, as the API does it, into a :class:`ParsedRequest`.

A parsed request is a flat list of :class:`Segment` s in prefix order tools → system →
messages: one per tool, system block and message content block. Each carries its token
count (text plus framing, see :mod:`llmflow.emulator.tokenizer`) and the TTL of its
``cache_control`` breakpoint, if it has one. The cache works on this list only.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any, Final

from llmflow.catalog import ModelInfo, load_catalog
from llmflow.emulator.errors import ApiError, invalid, not_found
from llmflow.emulator.tokenizer import (
    BLOCK_OVERHEAD,
    MESSAGE_OVERHEAD,
    REQUEST_OVERHEAD,
    TOOL_OVERHEAD,
    count_tokens,
)

MAX_BREAKPOINTS: Final = 4

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
_COUNT_FIELDS: Final = _CREATE_FIELDS - {"max_tokens", "stream", "stop_sequences"}
_BLOCK_TYPES: Final = frozenset(
    {
        "text",
        "image",
        "document",
        "tool_use",
        "tool_result",
        "thinking",
        "redacted_thinking",
        "search_result",
        "server_tool_use",
        "web_search_tool_result",
    }
)
_TOOL_NAME: Final = re.compile(r"^[a-zA-Z0-9_-]{1,128}$")
_TTL_SECONDS: Final = {"5m": 300.0, "1h": 3600.0}


@dataclass(frozen=True, slots=True)
class Segment:
    """One cacheable unit of the prompt prefix."""

    kind: str
    raw: Any
    tokens: int
    ttl: str | None = None


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
    stop_sequences: list[str] = field(default_factory=list)

    @property
    def breakpoints(self) -> list[int]:
        """Indices of the segments that carry a ``cache_control`` breakpoint."""
        return [i for i, s in enumerate(self.segments) if s.ttl is not None]

    @property
    def total_input_tokens(self) -> int:
        """Every input token the request bills (uncached + written + read)."""
        return self.overhead + sum(s.tokens for s in self.segments)


def ttl_seconds(ttl: str) -> float:
    """Seconds a cache entry of this TTL lives."""
    return _TTL_SECONDS[ttl]


@lru_cache(maxsize=256)
def lookup_model(model: str) -> ModelInfo | None:
    """The catalog entry for ``model`` (cached: the hot path calls it per request)."""
    return load_catalog().get(model)


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _cache_ttl(block: dict[str, Any], where: str) -> str | None:
    cc = block.get("cache_control")
    if cc is None:
        return None
    if not isinstance(cc, dict) or cc.get("type") != "ephemeral":
        raise invalid(f"{where}.cache_control.type: Input should be 'ephemeral'")
    extra = set(cc) - {"type", "ttl"}
    if extra:
        raise invalid(f"{where}.cache_control.{sorted(extra)[0]}: Extra inputs are not permitted")
    ttl = cc.get("ttl", "5m")
    if ttl not in _TTL_SECONDS:
        raise invalid(f"{where}.cache_control.ttl: Input should be '5m' or '1h'")
    return str(ttl)


def _dumps(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False)


def _content_tokens(content: Any, where: str) -> int:
    """Tokens of a tool_result's content (a string or a list of blocks)."""
    if content is None:
        return 0
    if isinstance(content, str):
        return count_tokens(content)
    if not isinstance(content, list):
        raise invalid(f"{where}.content: Input should be a valid string or list")
    total = 0
    for i, block in enumerate(content):
        if not isinstance(block, dict):
            raise invalid(f"{where}.content.{i}: Input should be a valid dictionary")
        if block.get("type") == "text" and isinstance(block.get("text"), str):
            total += count_tokens(block["text"]) + BLOCK_OVERHEAD
        else:
            total += count_tokens(_dumps(block)) + BLOCK_OVERHEAD
    return total


def _block_tokens(block: dict[str, Any], where: str) -> int:
    btype = block.get("type")
    if btype not in _BLOCK_TYPES:
        raise invalid(f"{where}.type: Input tag {btype!r} found using 'type' does not match any")
    if btype == "text":
        text = block.get("text")
        if not isinstance(text, str):
            raise invalid(f"{where}.text: Field required")
        return count_tokens(text) + BLOCK_OVERHEAD
    if btype == "tool_use":
        name, tool_input = block.get("name"), block.get("input")
        if not isinstance(name, str) or not isinstance(block.get("id"), str):
            raise invalid(f"{where}: tool_use blocks need a string id and name")
        if not isinstance(tool_input, dict):
            raise invalid(f"{where}.input: Input should be a valid dictionary")
        return count_tokens(name) + count_tokens(_dumps(tool_input)) + BLOCK_OVERHEAD
    if btype == "tool_result":
        if not isinstance(block.get("tool_use_id"), str):
            raise invalid(f"{where}.tool_use_id: Field required")
        return _content_tokens(block.get("content"), where) + BLOCK_OVERHEAD
    if btype == "thinking":
        return count_tokens(str(block.get("thinking", ""))) + BLOCK_OVERHEAD
    rest = {k: v for k, v in block.items() if k != "cache_control"}
    return count_tokens(_dumps(rest)) + BLOCK_OVERHEAD


def _tool_segments(tools: Any) -> tuple[list[Segment], dict[str, dict[str, Any]]]:
    if not isinstance(tools, list):
        raise invalid("tools: Input should be a valid list")
    segments: list[Segment] = []
    by_name: dict[str, dict[str, Any]] = {}
    for i, tool in enumerate(tools):
        where = f"tools.{i}"
        if not isinstance(tool, dict):
            raise invalid(f"{where}: Input should be a valid dictionary")
        name = tool.get("name")
        if not isinstance(name, str) or not _TOOL_NAME.match(name):
            raise invalid(f"{where}.name: String should match pattern '^[a-zA-Z0-9_-]{{1,128}}$'")
        if name in by_name:
            raise invalid(f"tools: Tool names must be unique ({name!r})")
        schema = tool.get("input_schema")
        custom = tool.get("type") in (None, "custom")
        if custom and (not isinstance(schema, dict) or schema.get("type") != "object"):
            raise invalid(f"{where}.input_schema.type: Input should be 'object'")
        description = tool.get("description")
        if description is not None and not isinstance(description, str):
            raise invalid(f"{where}.description: Input should be a valid string")
        tokens = TOOL_OVERHEAD + count_tokens(name) + count_tokens(description or "")
        if schema is not None:
            tokens += count_tokens(_dumps(schema))
        segments.append(Segment("tool", tool, tokens, _cache_ttl(tool, where)))
        by_name[name] = tool
    return segments, by_name


def _system_segments(system: Any) -> list[Segment]:
    if isinstance(system, str):
        if not system:
            return []
        return [Segment("system", system, count_tokens(system) + BLOCK_OVERHEAD)]
    if not isinstance(system, list):
        raise invalid("system: Input should be a valid string or list")
    segments = []
    for i, block in enumerate(system):
        where = f"system.{i}"
        if not isinstance(block, dict) or block.get("type") != "text":
            raise invalid(f"{where}.type: Input should be 'text'")
        text = block.get("text")
        if not isinstance(text, str) or not text:
            raise invalid(f"{where}.text: system text blocks must be non-empty")
        tokens = count_tokens(text) + BLOCK_OVERHEAD
        segments.append(Segment("system", block, tokens, _cache_ttl(block, where)))
    return segments


def _message_segments(messages: Any) -> tuple[list[Segment], int]:
    if not isinstance(messages, list):
        raise invalid("messages: Input should be a valid list")
    if not messages:
        raise invalid("messages: at least one message is required")
    segments: list[Segment] = []
    stray_overhead = 0
    last = len(messages) - 1
    for i, message in enumerate(messages):
        where = f"messages.{i}"
        if not isinstance(message, dict):
            raise invalid(f"{where}: Input should be a valid dictionary")
        role = message.get("role")
        if role not in ("user", "assistant"):
            raise invalid(f"{where}.role: Input should be 'user' or 'assistant'")
        extra = set(message) - {"role", "content"}
        if extra:
            raise invalid(f"{where}.{sorted(extra)[0]}: Extra inputs are not permitted")
        content = message.get("content")
        final_assistant = i == last and role == "assistant"
        if isinstance(content, str):
            if not content and not final_assistant:
                raise invalid(
                    f"{where}: all messages must have non-empty content except for the"
                    " optional final assistant message"
                )
            if content:
                tokens = count_tokens(content) + BLOCK_OVERHEAD + MESSAGE_OVERHEAD
                segments.append(Segment(f"{role}+", content, tokens))
            else:
                stray_overhead += MESSAGE_OVERHEAD
            continue
        if not isinstance(content, list):
            raise invalid(f"{where}.content: Input should be a valid string or list")
        if not content and not final_assistant:
            raise invalid(
                f"{where}: all messages must have non-empty content except for the"
                " optional final assistant message"
            )
        if not content:
            stray_overhead += MESSAGE_OVERHEAD
        for j, block in enumerate(content):
            bwhere = f"{where}.content.{j}"
            if not isinstance(block, dict):
                raise invalid(f"{bwhere}: Input should be a valid dictionary")
            tokens = _block_tokens(block, bwhere)
            kind = role or ""
            if j == 0:
                tokens += MESSAGE_OVERHEAD
                kind += "+"
            segments.append(Segment(kind, block, tokens, _cache_ttl(block, bwhere)))
    return segments, stray_overhead


def _check_sampling(body: dict[str, Any]) -> None:
    temperature = body.get("temperature")
    if temperature is not None and (not _is_number(temperature) or not 0 <= temperature <= 1):
        raise invalid("temperature: Input should be a number between 0 and 1")
    top_p = body.get("top_p")
    if top_p is not None and (not _is_number(top_p) or not 0 <= top_p <= 1):
        raise invalid("top_p: Input should be a number between 0 and 1")
    top_k = body.get("top_k")
    if top_k is not None and (not _is_int(top_k) or top_k < 0):
        raise invalid("top_k: Input should be a non-negative integer")
    metadata = body.get("metadata")
    if metadata is not None and not isinstance(metadata, dict):
        raise invalid("metadata: Input should be a valid dictionary")


def _tool_choice(body: dict[str, Any], tools: dict[str, dict[str, Any]]) -> tuple[str | None, bool]:
    choice = body.get("tool_choice")
    if choice is None:
        return None, False
    if not isinstance(choice, dict) or choice.get("type") not in ("auto", "any", "tool", "none"):
        raise invalid("tool_choice.type: Input should be 'auto', 'any', 'tool' or 'none'")
    ctype = choice["type"]
    if ctype in ("any", "tool") and not tools:
        raise invalid(f"tool_choice: tool_choice.type {ctype!r} requires tools")
    if ctype == "tool":
        name = choice.get("name")
        if not isinstance(name, str) or name not in tools:
            raise invalid(f"tool_choice.name: tool {name!r} is not in tools")
        return name, False
    return None, ctype == "any"


def _check_breakpoints(segments: list[Segment]) -> None:
    ttls = [s.ttl for s in segments if s.ttl is not None]
    if len(ttls) > MAX_BREAKPOINTS:
        raise invalid(
            f"A maximum of {MAX_BREAKPOINTS} blocks with cache_control may be provided."
            f" Found {len(ttls)}."
        )
    seen_5m = False
    for ttl in ttls:
        if ttl == "5m":
            seen_5m = True
        elif seen_5m:
            raise invalid(
                "a ttl='1h' cache_control block must not come after a ttl='5m' cache_control"
                " block. Note that blocks are processed in the following order: `tools`,"
                " `system`, `messages`."
            )


def _apply_top_level_cache_control(body: dict[str, Any], segments: list[Segment]) -> None:
    if "cache_control" not in body or body["cache_control"] is None:
        return
    ttl = _cache_ttl(body, "")
    if segments and segments[-1].ttl is None:
        last = segments[-1]
        segments[-1] = Segment(last.kind, last.raw, last.tokens, ttl)


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
    max_tokens = 0
    if not count_only:
        raw_max = body.get("max_tokens")
        if raw_max is None:
            raise invalid("max_tokens: Field required")
        if not _is_int(raw_max):
            raise invalid("max_tokens: Input should be a valid integer")
        if raw_max < 0:
            raise invalid("max_tokens: Input should be greater than or equal to 0")
        max_tokens = raw_max
    stream = body.get("stream", False)
    if not isinstance(stream, bool):
        raise invalid("stream: Input should be a valid boolean")
    stop = body.get("stop_sequences") or []
    if not isinstance(stop, list) or not all(isinstance(s, str) and s for s in stop):
        raise invalid("stop_sequences: Input should be a list of non-empty strings")
    _check_sampling(body)

    segments: list[Segment] = []
    tools: dict[str, dict[str, Any]] = {}
    if body.get("tools") is not None:
        tool_segments, tools = _tool_segments(body["tools"])
        segments.extend(tool_segments)
    if body.get("system") is not None:
        segments.extend(_system_segments(body["system"]))
    if "messages" not in body:
        raise invalid("messages: Field required")
    message_segments, stray = _message_segments(body["messages"])
    segments.extend(message_segments)
    forced, any_tool = _tool_choice(body, tools)
    _apply_top_level_cache_control(body, segments)
    _check_breakpoints(segments)

    info = lookup_model(model)
    if info is None:
        raise not_found(f"model: {model}")
    if max_tokens > info.max_output_tokens:
        raise invalid(
            f"max_tokens: {max_tokens} > {info.max_output_tokens}, which is the maximum"
            f" allowed number of output tokens for {model}"
        )
    return ParsedRequest(
        body=body,
        model=model,
        info=info,
        max_tokens=max_tokens,
        stream=stream,
        segments=segments,
        overhead=REQUEST_OVERHEAD + stray,
        tools=tools,
        forced_tool=forced,
        any_tool=any_tool,
        stop_sequences=list(stop),
    )


__all__ = ["ApiError", "ParsedRequest", "Segment", "lookup_model", "parse_request", "ttl_seconds"]
