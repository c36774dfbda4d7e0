"""A request's prompt as a flat list of :class:`Segment` s, validated as the API does.

Segments come in prefix order tools → system → messages: one per tool, system block
and message content block. Each carries its token count in the model's tokenizer family
(text plus framing, see :mod:`llmflow.emulator.tokenizer`) and the TTL of its
``cache_control`` breakpoint, if it has one. The prompt cache and the cache diagnostics
work on this list only.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any, Final

from llmflow.emulator.errors import invalid
from llmflow.emulator.tokenizer import (
    BLOCK_OVERHEAD,
    MESSAGE_OVERHEAD,
    TOOL_OVERHEAD,
    count_tokens,
)

MAX_BREAKPOINTS: Final = 4
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
_NON_EMPTY: Final = (
    "all messages must have non-empty content except for the optional final assistant message"
)


@dataclass(frozen=True, slots=True)
class Segment:
    """One cacheable unit of the prompt prefix (``kind``: tool, system, user, assistant;
    a ``+`` marks the first block of a message)."""

    kind: str
    raw: Any
    tokens: int
    ttl: str | None = None

    @property
    def part(self) -> str:
        """Which part of the prompt it belongs to: tools, system or messages."""
        if self.kind == "tool":
            return "tools"
        return "system" if self.kind == "system" else "messages"


def ttl_seconds(ttl: str) -> float:
    """Seconds a cache entry of this TTL lives."""
    return _TTL_SECONDS[ttl]


def cache_ttl(block: dict[str, Any], where: str) -> str | None:
    """The TTL of ``block``'s ``cache_control`` (None: no breakpoint)."""
    cc = block.get("cache_control")
    if cc is None:
        return None
    prefix = f"{where}." if where else ""
    if not isinstance(cc, dict) or cc.get("type") != "ephemeral":
        raise invalid(f"{prefix}cache_control.type: Input should be 'ephemeral'")
    extra = set(cc) - {"type", "ttl"}
    if extra:
        raise invalid(f"{prefix}cache_control.{sorted(extra)[0]}: Extra inputs are not permitted")
    ttl = cc.get("ttl", "5m")
    if ttl not in _TTL_SECONDS:
        raise invalid(f"{prefix}cache_control.ttl: Input should be '5m' or '1h'")
    return str(ttl)


def _dumps(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False)


def _content_tokens(content: Any, where: str, family: str) -> int:
    """Tokens of a tool_result's content (a string or a list of blocks)."""
    if content is None:
        return 0
    if isinstance(content, str):
        return count_tokens(content, family)
    if not isinstance(content, list):
        raise invalid(f"{where}.content: Input should be a valid string or list")
    total = 0
    for i, block in enumerate(content):
        if not isinstance(block, dict):
            raise invalid(f"{where}.content.{i}: Input should be a valid dictionary")
        if block.get("type") == "text" and isinstance(block.get("text"), str):
            total += count_tokens(block["text"], family) + BLOCK_OVERHEAD
        else:
            total += count_tokens(_dumps(block), family) + BLOCK_OVERHEAD
    return total


def _block_tokens(block: dict[str, Any], where: str, family: str) -> int:
    btype = block.get("type")
    if btype not in _BLOCK_TYPES:
        raise invalid(f"{where}.type: Input tag {btype!r} found using 'type' does not match any")
    if btype == "text":
        text = block.get("text")
        if not isinstance(text, str):
            raise invalid(f"{where}.text: Field required")
        return count_tokens(text, family) + BLOCK_OVERHEAD
    if btype == "tool_use":
        name, tool_input = block.get("name"), block.get("input")
        if not isinstance(name, str) or not isinstance(block.get("id"), str):
            raise invalid(f"{where}: tool_use blocks need a string id and name")
        if not isinstance(tool_input, dict):
            raise invalid(f"{where}.input: Input should be a valid dictionary")
        tokens = count_tokens(name, family) + count_tokens(_dumps(tool_input), family)
        return tokens + BLOCK_OVERHEAD
    if btype == "tool_result":
        if not isinstance(block.get("tool_use_id"), str):
            raise invalid(f"{where}.tool_use_id: Field required")
        return _content_tokens(block.get("content"), where, family) + BLOCK_OVERHEAD
    if btype == "thinking":
        return count_tokens(str(block.get("thinking", "")), family) + BLOCK_OVERHEAD
    rest = {k: v for k, v in block.items() if k != "cache_control"}
    return count_tokens(_dumps(rest), family) + BLOCK_OVERHEAD


def tool_segments(tools: Any, family: str) -> tuple[list[Segment], dict[str, dict[str, Any]]]:
    """One segment per tool, and the tools by name."""
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
        tokens = (
            TOOL_OVERHEAD + count_tokens(name, family) + count_tokens(description or "", family)
        )
        if schema is not None:
            tokens += count_tokens(_dumps(schema), family)
        segments.append(Segment("tool", tool, tokens, cache_ttl(tool, where)))
        by_name[name] = tool
    return segments, by_name


def system_segments(system: Any, family: str) -> list[Segment]:
    """One segment per system block (a string is one block)."""
    if isinstance(system, str):
        if not system:
            return []
        return [Segment("system", system, count_tokens(system, family) + BLOCK_OVERHEAD)]
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
        tokens = count_tokens(text, family) + BLOCK_OVERHEAD
        segments.append(Segment("system", block, tokens, cache_ttl(block, where)))
    return segments


def _one_message(message: Any, where: str, final: bool, family: str) -> tuple[list[Segment], int]:
    """The segments of one message, and framing that belongs to no segment."""
    if not isinstance(message, dict):
        raise invalid(f"{where}: Input should be a valid dictionary")
    role = message.get("role")
    if role not in ("user", "assistant"):
        raise invalid(f"{where}.role: Input should be 'user' or 'assistant'")
    extra = set(message) - {"role", "content"}
    if extra:
        raise invalid(f"{where}.{sorted(extra)[0]}: Extra inputs are not permitted")
    content = message.get("content")
    final_assistant = final and role == "assistant"
    if not isinstance(content, str | list):
        raise invalid(f"{where}.content: Input should be a valid string or list")
    if not content:
        if not final_assistant:
            raise invalid(f"{where}: {_NON_EMPTY}")
        return [], MESSAGE_OVERHEAD
    if isinstance(content, str):
        tokens = count_tokens(content, family) + BLOCK_OVERHEAD + MESSAGE_OVERHEAD
        return [Segment(f"{role}+", content, tokens)], 0
    segments: list[Segment] = []
    for j, block in enumerate(content):
        bwhere = f"{where}.content.{j}"
        if not isinstance(block, dict):
            raise invalid(f"{bwhere}: Input should be a valid dictionary")
        tokens = _block_tokens(block, bwhere, family)
        kind = str(role)
        if j == 0:
            tokens += MESSAGE_OVERHEAD
            kind += "+"
        segments.append(Segment(kind, block, tokens, cache_ttl(block, bwhere)))
    return segments, 0


def message_segments(messages: Any, family: str) -> tuple[list[Segment], int]:
    """The segments of ``messages``, and the framing of empty final assistant turns."""
    if not isinstance(messages, list):
        raise invalid("messages: Input should be a valid list")
    if not messages:
        raise invalid("messages: at least one message is required")
    segments: list[Segment] = []
    stray = 0
    last = len(messages) - 1
    for i, message in enumerate(messages):
        found, overhead = _one_message(message, f"messages.{i}", i == last, family)
        segments.extend(found)
        stray += overhead
    return segments, stray


def check_breakpoints(segments: list[Segment]) -> None:
    """At most four breakpoints, and no 1h breakpoint after a 5m one."""
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


def apply_top_level_cache_control(body: dict[str, Any], segments: list[Segment]) -> None:
    """Automatic caching: a top-level ``cache_control`` marks the last segment (it then
    counts toward the four breakpoints)."""
    if body.get("cache_control") is None:
        return
    ttl = cache_ttl(body, "")
    if segments and segments[-1].ttl is None:
        last = segments[-1]
        segments[-1] = Segment(last.kind, last.raw, last.tokens, ttl)
