"""Thinking: whether a request thinks, how many tokens it spends, and its block.

* Whether: the request's ``thinking.type``, else the model's default
  (:func:`~llmflow.catalog.rules.thinking_mode`).
* How much: the catalog's estimate for the request's effective effort
  (:meth:`~llmflow.catalog.ModelInfo.thinking_estimate`) times a factor in [0.5, 1.5]
  drawn from a digest of the request without its effort and ``max_tokens``, so the same
  request thinks more at a higher effort, and a lower ``max_tokens`` cuts the same
  thinking. ``enabled`` thinking is capped by ``budget_tokens``; thinking and text
  together are capped by ``max_tokens`` (:mod:`.content`).
* Display: ``omitted`` (empty text, signature kept) by default on models with the new
  tokenizer (Opus 4.7 and later), ``summarized`` (a short deterministic text) otherwise
  or when asked. The tokens billed are the raw reasoning's either way.
"""

from __future__ import annotations

import base64
import hashlib
from dataclasses import dataclass
from typing import Any, Final

from llmflow.catalog.rules import effective_effort, thinking_mode
from llmflow.emulator.generation import prose, request_digest
from llmflow.emulator.validation import ParsedRequest

#: The summary shows about one token in SUMMARY_RATIO of the raw reasoning, at most
#: SUMMARY_MAX tokens.
SUMMARY_RATIO: Final = 4
SUMMARY_MAX: Final = 400
_SPREAD: Final = 1000


@dataclass(frozen=True, slots=True)
class ThinkingPlan:
    """How a request thinks: the tokens it wants to spend and how they are shown."""

    tokens: int
    display: str


def default_display(request: ParsedRequest) -> str:
    """``omitted`` on models with the new tokenizer (Opus 4.7 and later), else
    ``summarized``."""
    return "omitted" if request.info.tokenizer == "new" else "summarized"


def _thinking_basis(body: dict[str, Any]) -> dict[str, Any]:
    """``body`` without what must not change the draw: max_tokens and effort."""
    rest = {k: v for k, v in body.items() if k not in ("max_tokens", "output_config")}
    config = body.get("output_config")
    if isinstance(config, dict):
        kept = {k: v for k, v in config.items() if k != "effort"}
        if kept:
            rest["output_config"] = kept
    return rest


def plan_thinking(request: ParsedRequest, seed: int) -> ThinkingPlan | None:
    """The request's thinking (None: it does not think)."""
    config = request.options.thinking
    mode = thinking_mode(request.info, config.type if config else None)
    if mode == "off":
        return None
    effort = effective_effort(request.info, request.options.effort)
    digest = request_digest(_thinking_basis(request.body), seed)
    draw = int.from_bytes(digest[8:12], "big") % (_SPREAD + 1)
    estimate = request.info.thinking_estimate(effort)
    tokens = max(1, estimate * (_SPREAD // 2 + draw) // _SPREAD)
    if mode == "enabled" and config is not None and config.budget_tokens is not None:
        tokens = min(tokens, config.budget_tokens)
    display = (config.display if config else None) or default_display(request)
    return ThinkingPlan(tokens, display)


def signature(digest: bytes) -> str:
    """An opaque, deterministic signature for a thinking block."""
    raw = hashlib.blake2b(digest + b"thinking-signature", digest_size=48).digest()
    return base64.b64encode(raw).decode()


def thinking_block(plan: ThinkingPlan, spent: int, digest: bytes, family: str) -> dict[str, Any]:
    """The thinking block of a request that spent ``spent`` thinking tokens."""
    text = ""
    if plan.display == "summarized":
        size = max(1, min(spent // SUMMARY_RATIO, SUMMARY_MAX))
        state = int.from_bytes(hashlib.blake2b(digest + b"summary", digest_size=16).digest())
        text = "".join(prose(state, size, family))
    return {"type": "thinking", "thinking": text, "signature": signature(digest)}
