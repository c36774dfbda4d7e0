"""Object ids shaped like the API's (``req_…``, ``msg_…``, ``toolu_…``, ``msgbatch_…``)."""

from __future__ import annotations

import hashlib
import itertools

_ALPHABET = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"


def _base62(n: int, width: int) -> str:
    out = []
    for _ in range(width):
        n, r = divmod(n, 62)
        out.append(_ALPHABET[r])
    return "".join(reversed(out))


class IdFactory:
    """Deterministic ids: a seed-derived prefix and a per-kind counter."""

    def __init__(self, seed: int) -> None:
        digest = hashlib.blake2b(str(seed).encode(), digest_size=8).digest()
        self._prefix = "011C" + _base62(int.from_bytes(digest, "big"), 8)
        self._counter = itertools.count(1)

    def new(self, kind: str) -> str:
        """A fresh id such as ``msg_011CAbCdEfGh000000000001``."""
        return f"{kind}_{self._prefix}{_base62(next(self._counter), 12)}"
