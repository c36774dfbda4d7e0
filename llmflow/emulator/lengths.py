"""How long a prose answer is: the kind of ask, read from the request, and its input size.

Structured answers (a forced tool, ``output_config.format``) are as long as the schema
instance they carry (:mod:`.content`). Every other answer is prose whose length in tokens
is decided here, deterministically for the emulator seed and the request (its
``max_tokens`` and ``stop_sequences`` left out, :mod:`.content`, so a lower cap cuts the
same answer rather than drawing another).

**The ask's instructions** are read in two places, in this order:

1. the system prompt: its text blocks of at most :data:`INSTRUCTION_CHARS` characters (a
   longer system block is reference material, such as a product guide, and is not read);
2. the last user message: its text blocks, one longer than :data:`INSTRUCTION_CHARS`
   read in its first and last :data:`EDGE_CHARS` characters, where a prompt states its
   ask ("Summarise the report below: ..." or "... Write the digest.").

**The kind** is the first rule whose words (case-insensitive, whole words, as listed:
"extracted" or "described" do not count) the system prompt's instructions contain; when
none does, the first rule the user message's match. So the data in a prompt (a ticket
that says "explain", a document that says "nothing else") does not override the system
prompt's ask. ``n`` is the input size, the tokens of the messages (system prompts are
instructions and reference, so a long cached guide does not lengthen every answer):

* ``short`` (3 tokens): one/single word, label, category, class, tag, number, letter,
  option or choice; yes or no; true or false; one of these / the following; label only;
  category only; nothing else; classify; categorise.
* ``extract`` (30 + 1.5·√n): extract; JSON.
* ``long`` (60 + 6·√n): summary, summaries, summarise/summarize, explain, explanation,
  describe, write, writing, draft, digest, essay, analyse/analyze, analysis, outline,
  roll-up.
* ``answer`` (40 + 3·√n): no rule matched.

The kind's length is multiplied by a spread in [:data:`SPREAD_LOW`, :data:`SPREAD_HIGH`)
drawn from the request's digest and by ``output_scale`` (``EmulatorConfig``,
``llmflow emulator --output-scale``), then rounded, at least 1 token. So a one-label ask
answers in 2-4 tokens, a summary of a 3,000-token input in about 300-490, and an answer
stops at ``max_tokens`` only when the cap (less any thinking) is below that length.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Any, Final

from llmflow.emulator.validation import ParsedRequest

#: System blocks longer than this (characters) are reference material, not instructions;
#: user text blocks longer than this are read at their edges only.
INSTRUCTION_CHARS: Final = 2000
#: How much of each end of a long user text block is read for the ask.
EDGE_CHARS: Final = 500
#: Bounds of the per-request factor applied to a kind's length.
SPREAD_LOW: Final = 0.75
SPREAD_HIGH: Final = 1.25


@dataclass(frozen=True, slots=True)
class LengthRule:
    """One kind of ask: the words that mark it and its length ``base + per_root·√n``."""

    kind: str
    words: re.Pattern[str] | None
    base: float
    per_root: float

    def tokens(self, input_tokens: int) -> float:
        """The kind's length, before spread and scale, for ``input_tokens`` of input."""
        return self.base + self.per_root * math.sqrt(max(0, input_tokens))


def _words(pattern: str) -> re.Pattern[str]:
    return re.compile(rf"\b(?:{pattern})\b", re.IGNORECASE)


#: The rules, in the order they are tried.
RULES: Final = (
    LengthRule(
        "short",
        _words(
            r"(?:one|single)[\s-]+(?:word|label|category|class|tag|number|letter|option|choice)"
            r"|yes\s*(?:or|/)\s*no|true\s*(?:or|/)\s*false|one\s+of\s+(?:these|the\s+following)"
            r"|(?:label|category)\s+only|nothing\s+else|classify|categori[sz]e"
        ),
        3,
        0,
    ),
    LengthRule("extract", _words(r"extract|json"), 30, 1.5),
    LengthRule(
        "long",
        _words(
            r"summar(?:y|ies|ise|ize)|explain|explanation|describe|write|writing|draft|digest"
            r"|essay|analy[sz]e|analysis|outline|roll-?up"
        ),
        60,
        6,
    ),
)
#: The kind of an ask no rule matches.
DEFAULT_RULE: Final = LengthRule("answer", None, 40, 3)


def _texts(content: Any) -> list[str]:
    """The text of a system prompt or message content (a string or a list of blocks)."""
    if isinstance(content, str):
        return [content]
    if not isinstance(content, list):
        return []
    return [
        block["text"]
        for block in content
        if isinstance(block, dict)
        and block.get("type") == "text"
        and isinstance(block.get("text"), str)
    ]


def instructions(body: dict[str, Any]) -> tuple[list[str], list[str]]:
    """Where a request's ask is read: (system prompt texts, last user message texts)."""
    system = [t for t in _texts(body.get("system")) if len(t) <= INSTRUCTION_CHARS]
    users = [
        m for m in body.get("messages") or [] if isinstance(m, dict) and m.get("role") == "user"
    ]
    user: list[str] = []
    for text in _texts(users[-1].get("content")) if users else []:
        if len(text) <= INSTRUCTION_CHARS:
            user.append(text)
        else:
            user += [text[:EDGE_CHARS], text[-EDGE_CHARS:]]
    return system, user


def ask_rule(body: dict[str, Any]) -> LengthRule:
    """The first rule the system prompt's instructions match, else the first the last
    user message's match (:data:`DEFAULT_RULE` if none)."""
    for texts in instructions(body):
        for rule in RULES:
            if rule.words is not None and any(rule.words.search(text) for text in texts):
                return rule
    return DEFAULT_RULE


def input_size(request: ParsedRequest) -> int:
    """Tokens of the request's messages (its system prompt and tools left out)."""
    return sum(s.tokens for s in request.segments if s.part == "messages")


def spread(digest: bytes) -> float:
    """The request's factor in [SPREAD_LOW, SPREAD_HIGH), from bytes 12-15 of its digest."""
    unit = int.from_bytes(digest[12:16], "big") / 2**32
    return SPREAD_LOW + (SPREAD_HIGH - SPREAD_LOW) * unit


def answer_length(request: ParsedRequest, digest: bytes, scale: float = 1.0) -> tuple[int, str]:
    """(tokens, kind) of the prose answer to ``request``; ``digest`` draws the spread."""
    rule = ask_rule(request.body)
    length = rule.tokens(input_size(request)) * spread(digest) * scale
    return max(1, round(length)), rule.kind
