"""Object ids shaped like the API's (``req_…``, ``msg_…``, ``toolu_…``, ``msgbatch_…``)."""

from __future__ import annotations

import hashlib
import itertools
import secrets

_ALPHABET = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"


def _base62(n: int, width: int) -> str:
    out = []
    for _ in range(width):
        n, r = divmod(n, 62)
        out.append(_ALPHABET[r])
    return "".join(reversed(out))


class IdFactory:
    """Ids unique like the API's: a prefix from the seed and a per-instance nonce, then a
    counter. Content stays deterministic per seed; ids differ between emulator instances,
    so a run resumed against a new emulator never meets an id it used before."""

    def __init__(self, seed: int) -> None:
        nonce = secrets.token_hex(8)
        digest = hashlib.blake2b(f"{seed}:{nonce}".encode(), digest_size=8).digest()
        self._prefix = "011C" + _base62(int.from_bytes(digest, "big"), 8)
        self._counter = itertools.count(1)

    def new(self, kind: str) -> str:
        """A fresh id such as ``msg_011CAbCdEfGh000000000001``."""
        return f"{kind}_{self._prefix}{_base62(next(self._counter), 12)}"
