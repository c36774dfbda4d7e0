"""Cache-warm fan-out: the first request of a shared prefix goes alone.

An entry becomes readable only once the response that writes it has begun, so N
concurrent first requests would all pay the cache write. The gate lets one request per
prefix key through, waits until its response has begun, then releases the rest, which
read the prefix at 0.1× instead of writing it at 1.25×/2×. If the leader fails, one of
the waiters leads instead.
"""

from __future__ import annotations

import asyncio


class WarmGate:
    """Leader election per cached prefix key."""

    def __init__(self) -> None:
        self._pending: dict[str, asyncio.Event] = {}
        self._warm: set[str] = set()

    async def enter(self, key: str) -> bool:
        """True when the caller leads ``key``: it must then call :meth:`opened` once its
        response has begun, or :meth:`failed`. False once the prefix is warm."""
        while True:
            if key in self._warm:
                return False
            event = self._pending.get(key)
            if event is None:
                self._pending[key] = asyncio.Event()
                return True
            await event.wait()

    def opened(self, key: str) -> None:
        """The leader's response has begun: the prefix is readable, release the followers."""
        self._warm.add(key)
        event = self._pending.pop(key, None)
        if event is not None:
            event.set()

    def failed(self, key: str) -> None:
        """The leader failed before its response began: the next waiter leads."""
        event = self._pending.pop(key, None)
        if event is not None:
            event.set()
