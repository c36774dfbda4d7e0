"""What a response says: its content blocks, output tokens and stop reason.

A thinking block comes first when the request thinks (:mod:`.thinking`); then one
answer block: a ``tool_use`` when a tool is forced (``any`` picks one by the request's
hash), a JSON text valid for ``output_config.format.schema`` (structured outputs), or
deterministic prose as long as the ask calls for (:mod:`.lengths`: a few tokens for a
label, more for a summary of a longer input, times ``output_scale``), drawn from the
request without its ``max_tokens`` and ``stop_sequences``, so they cut the same text.
``max_tokens`` bounds thinking and answer together: thinking that
reaches it leaves no answer, and an answer cut by it ends with ``max_tokens``. Every
count is exact in the model's tokenizer family.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from llmflow.emulator.generation import (
    apply_stop_sequences,
    request_digest,
    schema_instance,
    text_tokens,
)
from llmflow.emulator.ids import IdFactory
from llmflow.emulator.lengths import answer_length
from llmflow.emulator.thinking import plan_thinking, thinking_block
from llmflow.emulator.tokenizer import BLOCK_OVERHEAD, count_tokens, tokenize
from llmflow.emulator.validation import ParsedRequest

Blocks = list[dict[str, Any]]

#: What cuts a prose answer without changing it: left out of the digest it is drawn from.
_CUTS = frozenset({"max_tokens", "stop_sequences"})


@dataclass(frozen=True, slots=True)
class Output:
    """The generated part of a Message."""

    content: Blocks
    output_tokens: int
    thinking_tokens: int
    stop_reason: str
    stop_sequence: str | None = None


def _text_block(text: str) -> dict[str, Any]:
    return {"type": "text", "text": text, "citations": None}


def _tool_use(
    request: ParsedRequest, name: str, digest: bytes, ids: IdFactory, limit: int
) -> tuple[Blocks, int, str]:
    schema = request.tools[name].get("input_schema") or {"type": "object"}
    value = schema_instance(schema, digest)
    tool_input = value if isinstance(value, dict) else {}
    family = request.family
    needed = (
        count_tokens(name, family)
        + count_tokens(json.dumps(tool_input, ensure_ascii=False), family)
        + BLOCK_OVERHEAD
    )
    if needed > limit:
        return [], limit, "max_tokens"
    block = {
        "type": "tool_use",
        "id": ids.new("toolu"),
        "name": name,
        "input": tool_input,
        "caller": {"type": "direct"},
    }
    return [block], needed, "tool_use"


def _structured(
    schema: dict[str, Any], digest: bytes, family: str, limit: int
) -> tuple[Blocks, int, str]:
    text = json.dumps(schema_instance(schema, digest), ensure_ascii=False)
    tokens = tokenize(text, family)
    if len(tokens) <= limit:
        return [_text_block(text)], len(tokens), "end_turn"
    cut = "".join(tokens[:limit])
    return ([_text_block(cut)] if cut else []), limit, "max_tokens"


def _prose(
    request: ParsedRequest, seed: int, limit: int, scale: float
) -> tuple[Blocks, int, str, str | None]:
    basis = {k: v for k, v in request.body.items() if k not in _CUTS}
    digest = request_digest(basis, seed)
    target, kind = answer_length(request, digest, scale)
    pieces, cut = text_tokens(digest, target, limit, request.family, sentence=kind != "short")
    pieces, stop = apply_stop_sequences(pieces, request.stop_sequences)
    if stop is not None:
        reason = "stop_sequence"
    elif cut:
        reason = "max_tokens"
    else:
        reason = "end_turn"
    if not pieces:
        return [], 0, reason, stop
    return [_text_block("".join(pieces))], len(pieces), reason, stop


def _answer(
    request: ParsedRequest, digest: bytes, seed: int, ids: IdFactory, limit: int, scale: float
) -> tuple[Blocks, int, str, str | None]:
    name = request.forced_tool
    if name is None and request.any_tool:
        names = list(request.tools)
        name = names[digest[0] % len(names)]
    if name is not None:
        return (*_tool_use(request, name, digest, ids, limit), None)
    schema = request.options.output_schema
    if schema is not None:
        return (*_structured(schema, digest, request.family, limit), None)
    return _prose(request, seed, limit, scale)


def generate(
    request: ParsedRequest, seed: int, ids: IdFactory, output_scale: float = 1.0
) -> Output:
    """The content of the response to ``request`` (deterministic for the seed); prose
    lengths are multiplied by ``output_scale``."""
    digest = request_digest(request.body, seed)
    limit = request.max_tokens
    plan = plan_thinking(request, seed)
    blocks: Blocks = []
    thinking = 0
    if plan is not None and limit > 0:
        thinking = min(plan.tokens, limit)
        blocks.append(thinking_block(plan, thinking, digest, request.family))
        if thinking >= limit:
            return Output(blocks, thinking, thinking, "max_tokens")
    answer, tokens, reason, stop = _answer(
        request, digest, seed, ids, limit - thinking, output_scale
    )
    return Output(blocks + answer, thinking + tokens, thinking, reason, stop)
