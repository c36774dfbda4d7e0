"""Pacing dispatch from the API's ``anthropic-ratelimit-*`` headers instead of spending retries.

The API limits requests, input tokens and output tokens per minute, and replenishes each
continuously (a token bucket refilling at limit/60 per second). Every response reports
each limit, what remains of it, and when it will be full again. :class:`RatePacer` keeps a
local copy of the three buckets: a response resets a bucket to what the API reported, a
reservation debits it, so concurrent dispatchers queue behind one another instead of all
seeing the same remaining count and all getting a 429.

A limit never reported is unknown and never delays. A 429's ``retry-after`` holds every
dispatch until it has passed (:meth:`RatePacer.backoff`).

Reading the headers is most of what pacing costs per request, so while every bucket
holds at least a quarter of its limit they are read at most every
:data:`QUIET_SECONDS` (the local debits keep the count meanwhile); a bucket below a
quarter, or a 429, is read on every response.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import Awaitable, Callable, Mapping
from datetime import UTC, datetime

import structlog

_log = structlog.get_logger("llmflow.executor")

_PREFIX = "anthropic-ratelimit-"
_PREFIX_BYTES = _PREFIX.encode("ascii")
_PREFIX_LEN = len(_PREFIX)
REQUESTS = "requests"
INPUT_TOKENS = "input-tokens"
OUTPUT_TOKENS = "output-tokens"
RETRY_AFTER = "retry-after"
LIMITS = (REQUESTS, INPUT_TOKENS, OUTPUT_TOKENS)
#: While every bucket holds at least this share of its limit, the headers are read at
#: most every QUIET_SECONDS.
ROOMY_SHARE = 0.25
QUIET_SECONDS = 0.01


class _Bucket:
    """One limit: a token bucket refilling at ``limit / 60`` per second, capped at the limit."""

    __slots__ = ("full_at", "level", "limit", "promised", "rate", "spent", "stamp")

    def __init__(self, limit: float, now: float) -> None:
        self.limit = limit
        self.rate = limit / 60.0
        self.level = limit  # what was left at ``stamp``; negative once reserved ahead
        self.stamp = now
        self.full_at: float | None = None  # the API said: full again by then (monotonic)
        self.spent = 0.0  # reserved since the last observation
        self.promised: list[tuple[float, float]] = []  # (release time, cost) of waiters

    def set_limit(self, limit: float) -> None:
        self.limit = limit
        self.rate = limit / 60.0

    def observe(self, remaining: float, now: float, full_at: float | None) -> None:
        """The API's count replaces the local one, less what was promised to requests
        still waiting for their turn (the API cannot have counted them yet)."""
        self.promised = [(t, c) for t, c in self.promised if t > now]
        waiting = sum(c for _, c in self.promised)
        self.level = min(max(remaining, 0.0), self.limit) - waiting
        self.stamp = now
        self.full_at = full_at
        self.spent = waiting

    def level_at(self, now: float) -> float:
        level = min(self.limit, self.level + self.rate * (now - self.stamp))
        if self.full_at is not None and now >= self.full_at:
            # Whatever was used before the observation is back; what was reserved since is not.
            level = max(level, self.limit - self.spent)
        return level

    def reserve(self, cost: float, now: float) -> float:
        """Debit ``cost`` and return the seconds until the bucket can afford it."""
        cost = min(cost, self.limit)  # more than a whole minute's worth: wait for a full bucket
        level = self.level_at(now)
        if level >= cost:
            wait = 0.0
        else:
            wait = (cost - level) / self.rate
            if self.full_at is not None and self.full_at > now and self.limit - self.spent >= cost:
                wait = min(wait, self.full_at - now)
        self.level = level - cost
        self.stamp = now
        self.spent += cost
        if wait > 0:
            self.promised.append((now + wait, cost))
        return wait


def _number(value: str | None) -> float | None:
    """A finite, non-negative header number, or None."""
    if value is None:
        return None
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return number if math.isfinite(number) and number >= 0 else None


def parse_rfc3339(value: str) -> float | None:
    """POSIX seconds of an RFC 3339 timestamp (UTC when it has no offset), or None."""
    text = value.strip()
    if not text:
        return None
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        return None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.timestamp()


class RatePacer:
    """Paces dispatch so requests stay within the API's per-minute rate limits.

    ``clock`` is monotonic (the ``now`` of every method is on it); ``wall_clock`` is POSIX
    time, used only to place the reset timestamps of the headers on ``clock``.
    """

    def __init__(
        self,
        *,
        clock: Callable[[], float] = time.monotonic,
        wall_clock: Callable[[], float] = time.time,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        self._clock = clock
        self._wall_clock = wall_clock
        self._sleep = sleep
        self._buckets: dict[str, _Bucket] = {}
        self._held_until = -math.inf
        self._resets: dict[str, tuple[str, float | None]] = {}  # raw header -> POSIX seconds
        self._quiet_until = -math.inf  # headers before then are not read (all roomy)

    @property
    def limited(self) -> bool:
        """Whether any limit is known or a retry-after hold was set (else never waits)."""
        return bool(self._buckets) or self._held_until > -math.inf

    def observe(self, headers: Mapping[str, str], now: float, *, always: bool = False) -> None:
        """Take the limits a response reported; absent or garbled headers are ignored.

        ``headers`` may be an ``httpx`` ``Headers``: its raw pairs are scanned once.
        Skipped within :data:`QUIET_SECONDS` of the last reading while every bucket was
        roomy, unless ``always`` (a 429).
        """
        if now < self._quiet_until and not always:
            return
        self._read(headers, now)
        roomy = all(b.level_at(now) >= b.limit * ROOMY_SHARE for b in self._buckets.values())
        self._quiet_until = now + QUIET_SECONDS if roomy else -math.inf

    def _read(self, headers: Mapping[str, str], now: float) -> None:
        try:
            raw = getattr(headers, "raw", None)
            if raw is not None:  # HTTP/1.1 and 2 deliver header names in lower case
                found = {
                    k.decode("latin-1"): v.decode("latin-1")
                    for k, v in raw
                    if k.startswith(_PREFIX_BYTES)
                }
            else:
                found = {
                    k.lower(): v for k, v in headers.items() if k[:_PREFIX_LEN].lower() == _PREFIX
                }
        except (AttributeError, TypeError, UnicodeDecodeError):
            return
        if not found:
            return
        for kind in LIMITS:
            self._observe_one(kind, found, now)

    def _observe_one(self, kind: str, found: Mapping[str, str], now: float) -> None:
        limit = _number(found.get(f"{_PREFIX}{kind}-limit"))
        bucket = self._buckets.get(kind)
        if limit is not None and limit > 0:
            if bucket is None:
                bucket = self._buckets[kind] = _Bucket(limit, now)
            else:
                bucket.set_limit(limit)
        if bucket is None:
            return  # a limit never reported stays unknown: it never delays
        remaining = _number(found.get(f"{_PREFIX}{kind}-remaining"))
        if remaining is None:
            return
        reset = self._reset_seconds(kind, found.get(f"{_PREFIX}{kind}-reset"))
        full_at = None if reset is None else now + (reset - self._wall_clock())
        bucket.observe(remaining, now, full_at)

    def _reset_seconds(self, kind: str, raw: str | None) -> float | None:
        """The parsed reset header of ``kind``, parsed again only when it changed."""
        if not isinstance(raw, str):
            return None
        cached = self._resets.get(kind)
        if cached is not None and cached[0] == raw:
            return cached[1]
        parsed = parse_rfc3339(raw)
        self._resets[kind] = (raw, parsed)
        return parsed

    def backoff(self, retry_after: float | None, now: float) -> None:
        """After a 429: release no request before ``now + retry_after``."""
        if retry_after is None or not math.isfinite(retry_after) or retry_after <= 0:
            return
        self._held_until = max(self._held_until, now + retry_after)

    def reserve(self, *, input_tokens: int, output_tokens: int, now: float) -> float:
        """Seconds to wait before sending a request expected to use these tokens.

        ``input_tokens`` counts what the input limit counts (uncached input and cache
        writes, not cache reads); ``output_tokens`` is the request's ``max_tokens``. The
        request is debited from the local buckets at once, whether it waits or not.
        """
        return self._reserve(input_tokens, output_tokens, now)[0]

    def _reserve(self, input_tokens: int, output_tokens: int, now: float) -> tuple[float, str]:
        wait, cause = self._held_until - now, RETRY_AFTER
        if not self._buckets:
            return (wait, cause) if wait > 0 else (0.0, "")
        for kind, cost in (
            (REQUESTS, 1),
            (INPUT_TOKENS, input_tokens),
            (OUTPUT_TOKENS, output_tokens),
        ):
            bucket = self._buckets.get(kind)
            if bucket is None or cost <= 0:
                continue
            needed = bucket.reserve(float(cost), now)
            if needed > wait:
                wait, cause = needed, kind
        return (wait, cause) if wait > 0 else (0.0, "")

    async def wait(self, *, input_tokens: int, output_tokens: int) -> None:
        """Reserve on the injected clock and sleep for as long as :meth:`reserve` says."""
        delay, cause = self._reserve(input_tokens, output_tokens, self._clock())
        if delay <= 0:
            return
        _log.info("ratelimit.paced", delay=round(delay, 3), limit=cause)
        await self._sleep(delay)
