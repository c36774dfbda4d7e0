"""The emulator's two tokenizer families and the framing overhead it bills.

Tokens
    One regular expression per family splits text into tokens, left to right: an
    optional run of whitespace attached to the *next* word piece, or to the next single
    punctuation/symbol character; a run of whitespace with nothing after it is a token of
    its own.

    * ``old`` (models before Opus 4.7): word pieces of at most four word characters
      (``"international"`` → ``"inte" "rnat" "iona" "l"``), about four bytes a token on
      English prose::

          \\s*(?:\\w{1,4}|[^\\s\\w])  |  \\s+

    * ``new`` (Opus 4.7 and later): a word's first piece has at most three word
      characters and every further piece at most two (``"international"`` → ``"int"
      "er" "na" "ti" "on" "al"``), about 30% more tokens than ``old`` on English prose::

          \\s*(?:(?<!\\w)\\w{1,3}|\\w{1,2}|[^\\s\\w])  |  \\s+

    In both, every character is covered by exactly one token, so the tokens concatenate
    back to the text and each token covers at least one UTF-8 byte.

Framing (tokens added on top of the text, see :mod:`llmflow.emulator.segments`)
    * 3 per request (the assistant turn prompt; always uncached input),
    * 3 per message,
    * 1 per content block or system block,
    * 4 per tool (plus its name, description and ``json.dumps(input_schema)``),
    * the model's injected system prompt for tools or structured output (catalog
      ``injected_prompt_tokens``; uncached input).

    Apart from the injected prompt, these stay far below the bound the planner relies
    on: total input tokens ≤ UTF-8 bytes of all text + 64 per request + 8 per message +
    8 per block + 16 per tool, whatever the family.
"""

from __future__ import annotations

import re
from typing import Final, Literal

Family = Literal["old", "new"]

_PATTERNS: Final[dict[str, re.Pattern[str]]] = {
    "old": re.compile(r"\s*(?:\w{1,4}|[^\s\w])|\s+"),
    "new": re.compile(r"\s*(?:(?<!\w)\w{1,3}|\w{1,2}|[^\s\w])|\s+"),
}

#: Framing overhead, in tokens (see the module docstring).
REQUEST_OVERHEAD: Final = 3
MESSAGE_OVERHEAD: Final = 3
BLOCK_OVERHEAD: Final = 1
TOOL_OVERHEAD: Final = 4


def _pattern(family: str) -> re.Pattern[str]:
    try:
        return _PATTERNS[family]
    except KeyError:
        raise ValueError(f"unknown tokenizer family {family!r}") from None


def tokenize(text: str, family: Family | str = "old") -> list[str]:
    """The tokens of ``text`` in ``family``; ``"".join(tokenize(t, f)) == t``."""
    return _pattern(family).findall(text)


def count_tokens(text: str, family: Family | str = "old") -> int:
    """How many tokens ``text`` has in ``family`` (``len(tokenize(text, family))``)."""
    if not text:
        return 0
    return len(_pattern(family).findall(text))
