"""From an SDK Message to what the tracker records: usage by category, and the output."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from anthropic.types import Message, Usage

from llmflow.catalog import TokenUsage

JsonValue = Any


def usage_of(usage: Usage, *, default_ttl: str = "5m") -> TokenUsage:
    """The API's usage as billing categories.

    ``cache_creation`` splits writes by TTL; when it is absent, writes are attributed to
    ``default_ttl`` (the TTL the request's breakpoints carry).
    """
    written = usage.cache_creation_input_tokens or 0
    split = usage.cache_creation
    if split is not None:
        w5 = split.ephemeral_5m_input_tokens or 0
        w1 = split.ephemeral_1h_input_tokens or 0
    else:
        w5, w1 = (0, written) if default_ttl == "1h" else (written, 0)
    return TokenUsage(
        input=usage.input_tokens or 0,
        cache_write_5m=w5,
        cache_write_1h=w1,
        cache_read=usage.cache_read_input_tokens or 0,
        output=usage.output_tokens or 0,
        thinking=details.thinking_tokens if (details := usage.output_tokens_details) else 0,
    )


@dataclass(frozen=True, slots=True)
class Extracted:
    """A response's output, or why it cannot be used (it is still billed)."""

    output: JsonValue
    error: str | None = None


def output_of(message: Message, *, structured: bool) -> Extracted:
    """The step output: the answer's joined text (thinking blocks are not output), or for
    structured steps the parsed JSON of ``output_config.format`` (or the forced tool's
    input, on models without structured outputs)."""
    text = "".join(block.text for block in message.content if block.type == "text")
    if not structured:
        return Extracted(text)
    for block in message.content:
        if block.type == "tool_use":
            return Extracted(block.input)
    cut = message.stop_reason == "max_tokens"
    if text:
        try:
            return Extracted(json.loads(text))
        except ValueError:
            reason = "cut at max_tokens" if cut else "not valid JSON"
            return Extracted(None, f"structured output unusable ({reason})")
    reason = "cut at max_tokens" if cut else "no JSON text or tool_use block"
    return Extracted(None, f"structured output missing ({reason})")


def ttl_of(params: dict[str, Any]) -> str:
    """The TTL a request's breakpoints carry ("5m" when none or mixed without 1h)."""
    blocks: list[Any] = [*params.get("tools", ()), *(params.get("system") or ())]
    for block in blocks:
        marks = block.get("cache_control") if isinstance(block, dict) else None
        if marks and marks.get("ttl") == "1h":
            return "1h"
    return "5m"
