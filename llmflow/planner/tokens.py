"""Token sizes of requests: an offline estimate, a true upper bound, and exact counts.

The upper bound (agreed with the emulator's tokenizer): a
byte-level BPE token covers at least one byte, so a request's input tokens are at most
the UTF-8 bytes of all its text (system blocks, message text, tool name, description
and ``json.dumps(input_schema)``) plus fixed framing per request, message, block and
tool. ``max`` costs and budget reservations use it.

The estimate counts word pieces of at most four characters and single punctuation
marks (about four bytes a token on English prose: the "old" tokenizer family); every
piece covers at least one byte, so an estimate never exceeds the bound. Models of the
"new" family (Opus 4.7 and later) count about 30% more tokens for the same text:
:func:`estimate_text` scales by :data:`TOKENIZER_FACTORS` (capped at the bound).

The API adds a system prompt of its own to requests with tools or structured output
(:func:`injected_tokens`, per model in the catalog); it is billed as input, so both the
estimate and the bound include it.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from fractions import Fraction
from functools import lru_cache
from typing import Any, Final, Protocol

from llmflow.catalog import ModelInfo

#: Upper-bound framing, in tokens (a true bound, used for ``max`` and reservations).
REQUEST_FRAMING: Final = 64
MESSAGE_FRAMING: Final = 8
BLOCK_FRAMING: Final = 8
TOOL_FRAMING: Final = 16

#: Expected framing, in tokens (what the API typically adds).
EST_REQUEST_FRAMING: Final = 3
EST_MESSAGE_FRAMING: Final = 3
EST_BLOCK_FRAMING: Final = 1
EST_TOOL_FRAMING: Final = 4

_PIECE: Final = re.compile(r"\w{1,4}|[^\w\s]")

#: Expected tokens of a tokenizer family per token of the offline estimate.
TOKENIZER_FACTORS: Final[dict[str, Fraction]] = {"old": Fraction(1), "new": Fraction(13, 10)}


class TokenCounter(Protocol):
    """Counts a request's input tokens exactly (the count_tokens endpoint)."""

    async def count(self, params: Mapping[str, Any]) -> int:
        """Input tokens of the Messages API ``params`` (``max_tokens`` is ignored)."""
        ...


@dataclass(frozen=True, slots=True)
class Size:
    """Tokens of some text: ``bound`` is a true upper bound, ``expected`` an estimate."""

    bound: int = 0
    expected: int = 0

    def __add__(self, other: Size) -> Size:
        return Size(self.bound + other.bound, self.expected + other.expected)

    def scaled(self, factor: int) -> Size:
        """The size of ``factor`` copies."""
        return Size(self.bound * factor, self.expected * factor)


ZERO_SIZE: Final = Size()


def utf8_len(text: str) -> int:
    """UTF-8 bytes of ``text`` (lone surrogates count three bytes, as they encode)."""
    return len(text.encode("utf-8", "surrogatepass"))


def estimate_text(text: str, tokenizer: str = "old") -> int:
    """Offline estimate of the tokens of ``text`` for a tokenizer family (never above
    its UTF-8 bytes)."""
    pieces = len(_PIECE.findall(text))
    if tokenizer == "old":
        return pieces
    return min(scale_estimate(pieces, tokenizer), utf8_len(text))


def scale_estimate(tokens: int, tokenizer: str) -> int:
    """An old-family estimate as the ``tokenizer`` family would count it."""
    return int(tokens * TOKENIZER_FACTORS.get(tokenizer, Fraction(1)))


def injected_tokens(params: Mapping[str, Any], model: ModelInfo) -> int:
    """Input tokens the API adds as a system prompt for tools or structured output."""
    injected = model.injected_prompt_tokens
    total = 0
    if params.get("tools"):
        forced = (params.get("tool_choice") or {}).get("type") in ("any", "tool")
        total += injected.forced_tool if forced else injected.tools
    if (params.get("output_config") or {}).get("format") is not None:
        total += injected.structured_output
    return total


def text_size(text: str) -> Size:
    """Bound and estimate of ``text`` alone, without framing."""
    return Size(utf8_len(text), estimate_text(text))


@lru_cache(maxsize=512)
def block_size(text: str) -> Size:
    """A system or content text block: its text plus block framing (memoised)."""
    return text_size(text) + Size(BLOCK_FRAMING, EST_BLOCK_FRAMING)


def tool_size(tool: Mapping[str, Any]) -> Size:
    """A tool definition: name, description, ``json.dumps(input_schema)`` and framing."""
    parts = [str(tool.get("name", "")), str(tool.get("description", ""))]
    if "input_schema" in tool:
        parts.append(json.dumps(tool["input_schema"]))
    total = Size(TOOL_FRAMING, EST_TOOL_FRAMING)
    for part in parts:
        total += text_size(part)
    return total


def message_size(message: Mapping[str, Any]) -> Size:
    """A message: its text blocks plus message framing."""
    total = Size(MESSAGE_FRAMING, EST_MESSAGE_FRAMING)
    content = message.get("content", "")
    if isinstance(content, str):
        return total + block_size(content)
    for block in content:
        if block.get("type") == "text":
            total += block_size(str(block.get("text", "")))
        else:
            body = {k: v for k, v in block.items() if k != "cache_control"}
            total += block_size(json.dumps(body))
    return total


def static_size(params: Mapping[str, Any]) -> Size:
    """Bound and estimate of a request's tools and system blocks, with the request's
    framing: the part of :func:`params_size` before the messages."""
    total = Size(REQUEST_FRAMING, EST_REQUEST_FRAMING)
    for tool in params.get("tools", ()):
        total += tool_size(tool)
    system = params.get("system")
    if isinstance(system, str):
        total += block_size(system) if system else ZERO_SIZE
    elif system:
        for block in system:
            total += block_size(str(block.get("text", "")))
    return total


def params_size(params: Mapping[str, Any]) -> Size:
    """Bound and estimate of every input token of a Messages API request."""
    total = static_size(params)
    for message in params.get("messages", ()):
        total += message_size(message)
    output_format = (params.get("output_config") or {}).get("format")
    if output_format is not None:
        total += text_size(json.dumps(output_format.get("schema", {})))
    return total
