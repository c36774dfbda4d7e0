"""Turns a parsed request into a billed Message: cache accounting, content, usage, ledger."""

from __future__ import annotations

import json
from typing import Any

import structlog

from llmflow.emulator.cache import PromptCache
from llmflow.emulator.errors import invalid
from llmflow.emulator.generation import (
    apply_stop_sequences,
    request_digest,
    schema_instance,
    text_tokens,
)
from llmflow.emulator.ids import IdFactory
from llmflow.emulator.ledger import Ledger
from llmflow.emulator.tokenizer import BLOCK_OVERHEAD, count_tokens
from llmflow.emulator.validation import ParsedRequest

log = structlog.get_logger("llmflow.emulator")


def _content(
    request: ParsedRequest, digest: bytes, ids: IdFactory
) -> tuple[list[dict[str, Any]], int, str, str | None]:
    """(content blocks, output tokens, stop_reason, stop_sequence)."""
    limit = request.max_tokens
    tool_name = request.forced_tool
    if tool_name is None and request.any_tool:
        names = list(request.tools)
        tool_name = names[digest[0] % len(names)]
    if tool_name is not None:
        schema = request.tools[tool_name].get("input_schema") or {"type": "object"}
        value = schema_instance(schema, digest)
        tool_input = value if isinstance(value, dict) else {}
        needed = (
            count_tokens(tool_name)
            + count_tokens(json.dumps(tool_input, ensure_ascii=False))
            + BLOCK_OVERHEAD
        )
        if needed > limit:
            return [], limit, "max_tokens", None
        block = {
            "type": "tool_use",
            "id": ids.new("toolu"),
            "name": tool_name,
            "input": tool_input,
            "caller": {"type": "direct"},
        }
        return [block], needed, "tool_use", None
    pieces, cut = text_tokens(digest, limit)
    pieces, stop = apply_stop_sequences(pieces, request.stop_sequences)
    if stop is not None:
        reason = "stop_sequence"
    elif cut:
        reason = "max_tokens"
    else:
        reason = "end_turn"
    if not pieces:
        return [], 0, reason, stop
    return [{"type": "text", "text": "".join(pieces), "citations": None}], len(pieces), reason, stop


class Engine:
    """Shared state behind every endpoint that bills: the prompt cache, ids and ledger."""

    def __init__(self, seed: int, latency_s: float) -> None:
        self.seed = seed
        self.latency_s = latency_s
        self.cache = PromptCache()
        self.ledger = Ledger()
        self.ids = IdFactory(seed)

    def reset(self) -> None:
        """Clear the cache and the ledger."""
        self.cache.clear()
        self.ledger.clear()

    def complete(
        self,
        request: ParsedRequest,
        *,
        now: float,
        request_id: str,
        service_tier: str = "standard",
        batch_id: str | None = None,
        custom_id: str | None = None,
        latency_s: float | None = None,
    ) -> dict[str, Any]:
        """Bill ``request`` arriving at ``now`` and return the full Message."""
        total = request.total_input_tokens
        window = request.info.context_window
        if total + request.max_tokens > window:
            raise invalid(
                f"prompt is too long: {total} tokens + max_tokens {request.max_tokens}"
                f" > {window} maximum"
            )
        begins_at = now + (self.latency_s if latency_s is None else latency_s)
        cached = self.cache.apply(request, now, begins_at)
        digest = request_digest(request.body, self.seed)
        content, output_tokens, stop_reason, stop_sequence = _content(request, digest, self.ids)
        usage: dict[str, Any] = {
            "input_tokens": total - cached.read - cached.write,
            "cache_creation_input_tokens": cached.write,
            "cache_read_input_tokens": cached.read,
            "cache_creation": {
                "ephemeral_5m_input_tokens": cached.write_5m,
                "ephemeral_1h_input_tokens": cached.write_1h,
            },
            "output_tokens": output_tokens,
            "output_tokens_details": None,
            "server_tool_use": None,
            "inference_geo": None,
            "service_tier": service_tier,
        }
        self.ledger.record(request_id, request.model, usage, batch_id=batch_id, custom_id=custom_id)
        log.debug(
            "emulator.message.billed",
            request_id=request_id,
            model=request.model,
            input=usage["input_tokens"],
            cache_write=cached.write,
            cache_read=cached.read,
            output=output_tokens,
            service_tier=service_tier,
        )
        return {
            "id": self.ids.new("msg"),
            "type": "message",
            "role": "assistant",
            "model": request.model,
            "content": content,
            "stop_reason": stop_reason,
            "stop_sequence": stop_sequence,
            "stop_details": None,
            "container": None,
            "usage": usage,
        }
