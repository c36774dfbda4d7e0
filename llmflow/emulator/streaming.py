"""Server-sent events for ``stream: true``, in the order and shape the API sends them.

``message_start`` (content empty, stop_reason null, usage with the input side and a
first output token) → per block ``content_block_start`` / ``content_block_delta``… /
``content_block_stop`` (a ``ping`` after the first block start) → ``message_delta``
(stop_reason, cumulative usage with ``output_tokens_details``) → ``message_stop``.

A thinking block streams as its start (empty ``thinking`` and ``signature``), then
``thinking_delta`` s when its text is shown (``summarized``; none when ``omitted``), then
one ``signature_delta``, then its stop.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any, Final

from llmflow.emulator.tokenizer import tokenize

#: Tokens per text delta, characters per tool-input delta.
TEXT_CHUNK_TOKENS: Final = 8
JSON_CHUNK_CHARS: Final = 48


def sse(event: str, data: dict[str, Any]) -> bytes:
    """One SSE frame: ``event: NAME`` and a JSON ``data:`` line."""
    return f"event: {event}\ndata: {json.dumps(data, ensure_ascii=False)}\n\n".encode()


Event = tuple[str, dict[str, Any]]


def _delta(index: int, delta: dict[str, Any]) -> Event:
    return "content_block_delta", {"type": "content_block_delta", "index": index, "delta": delta}


def _start(index: int, block: dict[str, Any]) -> Event:
    return "content_block_start", {
        "type": "content_block_start",
        "index": index,
        "content_block": block,
    }


def _thinking_events(index: int, block: dict[str, Any]) -> Iterator[Event]:
    yield _start(index, {"type": "thinking", "thinking": "", "signature": ""})
    tokens = tokenize(block["thinking"])
    for at in range(0, len(tokens), TEXT_CHUNK_TOKENS):
        text = "".join(tokens[at : at + TEXT_CHUNK_TOKENS])
        yield _delta(index, {"type": "thinking_delta", "thinking": text})
    yield _delta(index, {"type": "signature_delta", "signature": block["signature"]})


def _block_events(index: int, block: dict[str, Any]) -> Iterator[Event]:
    if block["type"] == "thinking":
        yield from _thinking_events(index, block)
    elif block["type"] == "text":
        yield _start(index, {"type": "text", "text": "", "citations": None})
        tokens = tokenize(block["text"])
        for at in range(0, len(tokens), TEXT_CHUNK_TOKENS):
            text = "".join(tokens[at : at + TEXT_CHUNK_TOKENS])
            yield _delta(index, {"type": "text_delta", "text": text})
    else:
        yield _start(index, {**block, "input": {}})
        text = json.dumps(block["input"], ensure_ascii=False)
        for at in range(0, len(text), JSON_CHUNK_CHARS):
            part = text[at : at + JSON_CHUNK_CHARS]
            yield _delta(index, {"type": "input_json_delta", "partial_json": part})
    yield "content_block_stop", {"type": "content_block_stop", "index": index}


def message_events(message: dict[str, Any]) -> Iterator[Event]:
    """The (event name, data) sequence that streams ``message``."""
    usage = message["usage"]
    start_usage = {
        **usage,
        "output_tokens": min(1, usage["output_tokens"]),
        "output_tokens_details": None,
    }
    start = {
        **message,
        "content": [],
        "stop_reason": None,
        "stop_sequence": None,
        "usage": start_usage,
    }
    yield "message_start", {"type": "message_start", "message": start}
    for index, block in enumerate(message["content"]):
        for n, event in enumerate(_block_events(index, block)):
            yield event
            if index == 0 and n == 0:
                yield "ping", {"type": "ping"}
    if not message["content"]:
        yield "ping", {"type": "ping"}
    yield (
        "message_delta",
        {
            "type": "message_delta",
            "delta": {
                "stop_reason": message["stop_reason"],
                "stop_sequence": message["stop_sequence"],
                "stop_details": None,
                "container": None,
            },
            "usage": {
                "input_tokens": usage["input_tokens"],
                "cache_creation_input_tokens": usage["cache_creation_input_tokens"],
                "cache_read_input_tokens": usage["cache_read_input_tokens"],
                "output_tokens": usage["output_tokens"],
                "output_tokens_details": usage["output_tokens_details"],
                "server_tool_use": None,
            },
        },
    )
    yield "message_stop", {"type": "message_stop"}


def message_stream(message: dict[str, Any]) -> Iterator[bytes]:
    """The SSE frames of ``message``."""
    for event, data in message_events(message):
        yield sse(event, data)
