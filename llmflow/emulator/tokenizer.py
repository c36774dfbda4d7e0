"""The emulator's tokenizer and the framing overhead it bills.

Tokens
    One regular expression splits text into tokens, left to right::

        \\s*(?:\\w{1,4}|[^\\s\\w])  |  \\s+

    i.e. an optional run of whitespace attached to the *next* word piece of at most
    four word characters, or to the next single punctuation/symbol character; a run of
    whitespace with nothing after it is a token of its own. Words longer than four
    characters are split into pieces of at most four characters (``"international"`` →
    ``"inte" "rnat" "iona" "l"``). Every character is covered by exactly one token, so
    the tokens concatenate back to the text and each token covers at least one UTF-8
    byte. English prose comes out at roughly four bytes per token.

Framing (tokens added on top of the text, see :mod:`llmflow.emulator.validation`)
    * 3 per request (the assistant turn prompt; always uncached input),
    * 3 per message,
    * 1 per content block or system block,
    * 4 per tool (plus its name, description and ``json.dumps(input_schema)``).

    These stay far below the bound the planner relies on: total input tokens ≤ UTF-8
    bytes of all text + 64 per request + 8 per message + 8 per block + 16 per tool.
"""

from __future__ import annotations

import re
from typing import Final

_TOKEN_RE: Final = re.compile(r"\s*(?:\w{1,4}|[^\s\w])|\s+")

#: Framing overhead, in tokens (see the module docstring).
REQUEST_OVERHEAD: Final = 3
MESSAGE_OVERHEAD: Final = 3
BLOCK_OVERHEAD: Final = 1
TOOL_OVERHEAD: Final = 4


def tokenize(text: str) -> list[str]:
    """The tokens of ``text``; ``"".join(tokenize(t)) == t``."""
    return _TOKEN_RE.findall(text)


def count_tokens(text: str) -> int:
    """How many tokens ``text`` has (``len(tokenize(text))``)."""
    if not text:
        return 0
    return len(_TOKEN_RE.findall(text))
