"""Turns an accepted request into a billed Message: cache accounting, content, usage,
diagnostics and the ledger."""

from __future__ import annotations

from typing import Any

import structlog

from llmflow.emulator.cache import PromptCache
from llmflow.emulator.content import generate
from llmflow.emulator.diagnostics import FingerprintStore
from llmflow.emulator.ids import IdFactory
from llmflow.emulator.ledger import Ledger
from llmflow.emulator.validation import ParsedRequest

log = structlog.get_logger("llmflow.emulator")


class Engine:
    """Shared state behind every endpoint that bills: the prompt cache, ids, the
    fingerprints of cache diagnostics, and the ledger."""

    def __init__(self, seed: int, latency_s: float, *, output_scale: float) -> None:
        self.seed = seed
        self.latency_s = latency_s
        self.output_scale = output_scale
        self.cache = PromptCache()
        self.fingerprints = FingerprintStore()
        self.ledger = Ledger()
        self.ids = IdFactory(seed)

    def reset(self) -> None:
        """Clear the cache, the fingerprints and the ledger."""
        self.cache.clear()
        self.fingerprints.clear()
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
        read_cache: bool = True,
    ) -> dict[str, Any]:
        """Bill ``request`` (already accepted by the rules) arriving at ``now`` and return
        the full Message; ``read_cache`` False bills it as if nothing were cached."""
        total = request.total_input_tokens
        begins_at = now + (self.latency_s if latency_s is None else latency_s)
        cached = self.cache.apply(request, now, begins_at, cold=not read_cache)
        output = generate(request, self.seed, self.ids, self.output_scale)
        options = request.options
        thinking = output.thinking_tokens
        usage: dict[str, Any] = {
            "input_tokens": total - cached.read - cached.write,
            "cache_creation_input_tokens": cached.write,
            "cache_read_input_tokens": cached.read,
            "cache_creation": {
                "ephemeral_5m_input_tokens": cached.write_5m,
                "ephemeral_1h_input_tokens": cached.write_1h,
            },
            "output_tokens": output.output_tokens,
            "output_tokens_details": {"thinking_tokens": thinking} if thinking else None,
            "server_tool_use": None,
            "inference_geo": options.inference_geo or "global",
            "service_tier": service_tier,
            "speed": options.speed or "standard",
        }
        message_id = self.ids.new("msg")
        diagnostics = self.fingerprints.diagnostics(request, message_id)
        self.ledger.record(request_id, request.model, usage, batch_id=batch_id, custom_id=custom_id)
        log.debug(
            "emulator.message.billed",
            request_id=request_id,
            model=request.model,
            input=usage["input_tokens"],
            cache_write=cached.write,
            cache_read=cached.read,
            output=output.output_tokens,
            thinking=thinking,
            service_tier=service_tier,
            speed=usage["speed"],
        )
        return {
            "id": message_id,
            "type": "message",
            "role": "assistant",
            "model": request.model,
            "content": output.content,
            "stop_reason": output.stop_reason,
            "stop_sequence": output.stop_sequence,
            "stop_details": None,
            "container": None,
            "usage": usage,
            "diagnostics": diagnostics,
        }
