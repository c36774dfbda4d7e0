"""Prompt-cache mechanics, on the segments of a parsed request.

* Each segment (tool, system block, message content block) is canonicalised without
  its ``cache_control`` field, and a running hash is taken at every segment boundary,
  in prefix order tools → system → messages. Entries are keyed by (model, scope, hash).
* Settings invalidate as the API's do (:func:`cache_keys`): the *scope* (speed and the
  structured-output format) separates whole caches; the *message salt* (thinking
  settings, effective effort, tool_choice) is mixed into the running hash where the
  messages begin, so changing it misses the message blocks but still reads cached
  tools and system. Effort is the effective one, so naming the model's default effort
  changes nothing.
* Entries are written at breakpoints only, and only where the prefix reaches the
  model's ``min_cacheable_tokens`` (a shorter breakpoint caches nothing).
* At each breakpoint the cache looks back over the breakpoint's own boundary and the
  :data:`LOOKBACK` boundaries before it for the longest readable, unexpired entry.
  Everything up to the best hit is ``cache_read``; from there to the last cacheable
  breakpoint is written, each stretch billed at the TTL of the breakpoint that ends it;
  the rest is uncached input.
* An entry becomes readable when the response that writes it begins (arrival +
  latency), so concurrent cold requests all pay the write. A hit refreshes its TTL.
* :meth:`PromptCache.peek` tells what a request would read and write, changing
  nothing (the rate limiter counts input tokens with it before admitting).
* ``apply(..., cold=True)`` bills a request as if nothing were cached (every cacheable
  breakpoint is written, from the start): a batch request that did not land where its
  prefix is cached (:mod:`.batches`). Sync requests always read.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from typing import Any, Final

from llmflow.catalog.rules import effective_effort, thinking_mode
from llmflow.emulator.segments import Segment, ttl_seconds
from llmflow.emulator.validation import ParsedRequest

#: How many block boundaries before a breakpoint are checked for a hit.
LOOKBACK: Final = 20
_PURGE_EVERY: Final = 1024


@dataclass(slots=True)
class CacheEntry:
    """One cached prefix."""

    readable_from: float
    expires_at: float
    ttl: str


@dataclass(frozen=True, slots=True)
class CacheUsage:
    """How a request's input splits between cache reads, writes and the rest."""

    read: int = 0
    write_5m: int = 0
    write_1h: int = 0

    @property
    def write(self) -> int:
        """All tokens written, whatever the TTL."""
        return self.write_5m + self.write_1h


NO_CACHE: Final = CacheUsage()


@dataclass(frozen=True, slots=True)
class _Plan:
    """A lookup's outcome: entry keys per boundary, cacheable breakpoints, every
    boundary read (the longest last; none: no hit) and the usage it bills."""

    keys: list[tuple[str, bytes, bytes]]
    cacheable: list[int]
    hits: list[int]
    usage: CacheUsage


def _canonical(segment: Segment) -> bytes:
    raw = segment.raw
    if isinstance(raw, str):
        raw = {"type": "text", "text": raw}
    elif isinstance(raw, dict) and "cache_control" in raw:
        raw = {k: v for k, v in raw.items() if k != "cache_control"}
    text = json.dumps(raw, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return segment.kind.encode() + b"\x00" + text.encode()


def _digest(value: Any) -> bytes:
    text = json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.blake2b(text.encode(), digest_size=16).digest()


def segment_digest(segment: Segment) -> bytes:
    """A digest of one segment's content (its ``cache_control`` left out)."""
    return hashlib.blake2b(_canonical(segment), digest_size=16).digest()


def cache_keys(request: ParsedRequest) -> tuple[bytes, bytes]:
    """(scope, message salt) of a request: the settings that invalidate its cache."""
    info, options = request.info, request.options
    scope = {"speed": options.speed or "standard", "format": options.output_schema}
    config = options.thinking
    thinking: str = thinking_mode(info, config.type if config else None)
    if config is not None and config.type == "between_tools":
        thinking = config.type
    salt = {
        "thinking": thinking,
        "budget": config.budget_tokens if config and thinking == "enabled" else None,
        "effort": effective_effort(info, options.effort),
        "tool_choice": request.tool_choice or "auto",
        "tool": request.forced_tool,
    }
    return _digest(scope), _digest(salt)


def prefix_hashes(segments: list[Segment], upto: int, salt: bytes = b"") -> list[bytes]:
    """Running hash at each boundary ``0..upto`` (inclusive); ``salt`` is mixed in where
    the messages begin."""
    hashes: list[bytes] = []
    previous = b""
    salted = False
    for segment in segments[: upto + 1]:
        if not salted and segment.part == "messages":
            previous = hashlib.blake2b(previous + salt, digest_size=16).digest()
            salted = True
        previous = hashlib.blake2b(previous + _canonical(segment), digest_size=16).digest()
        hashes.append(previous)
    return hashes


class PromptCache:
    """The emulator's prompt cache, shared by every request (and batch) it serves."""

    def __init__(self) -> None:
        self._entries: dict[tuple[str, bytes, bytes], CacheEntry] = {}
        self._writes = 0

    def clear(self) -> None:
        """Forget every entry."""
        self._entries.clear()

    def __len__(self) -> int:
        return len(self._entries)

    def _plan(self, request: ParsedRequest, now: float, cold: bool = False) -> _Plan | None:
        """Where the request hits (nowhere when ``cold``) and what it would write at
        ``now``; changes nothing."""
        breakpoints = request.breakpoints
        if not breakpoints:
            return None
        segments = request.segments
        minimum = request.info.min_cacheable_tokens
        cumulative: list[int] = []
        running = 0
        for segment in segments[: breakpoints[-1] + 1]:
            running += segment.tokens
            cumulative.append(running)
        cacheable = [b for b in breakpoints if cumulative[b] >= minimum]
        if not cacheable:
            return None
        model = request.info.id
        scope, salt = cache_keys(request)
        hashes = prefix_hashes(segments, cacheable[-1], salt)
        keys = [(model, scope, h) for h in hashes]
        hits = [] if cold else self._hits(keys, cacheable, now)
        hit = hits[-1] if hits else -1
        read = cumulative[hit] if hit >= 0 else 0
        start = read
        write = {"5m": 0, "1h": 0}
        for b in cacheable:
            if b > hit:
                write[segments[b].ttl or "5m"] += cumulative[b] - start
                start = cumulative[b]
        usage = CacheUsage(read=read, write_5m=write["5m"], write_1h=write["1h"])
        return _Plan(keys, cacheable, hits, usage)

    def _hits(
        self, keys: list[tuple[str, bytes, bytes]], cacheable: list[int], now: float
    ) -> list[int]:
        """Each longer hit found looking back from each breakpoint, in order."""
        hits: list[int] = []
        hit = -1
        for b in cacheable:
            for p in range(b, max(-1, b - LOOKBACK - 1), -1):
                if p <= hit:
                    break
                if self._readable(keys[p], now) is not None:
                    hit = p
                    hits.append(p)
                    break
        return hits

    def _readable(self, key: tuple[str, bytes, bytes], now: float) -> CacheEntry | None:
        entry = self._entries.get(key)
        if entry is not None and entry.readable_from <= now < entry.expires_at:
            return entry
        return None

    def peek(self, request: ParsedRequest, now: float) -> CacheUsage:
        """What :meth:`apply` would bill at ``now``, without reading or writing."""
        plan = self._plan(request, now)
        return NO_CACHE if plan is None else plan.usage

    def apply(
        self, request: ParsedRequest, now: float, begins_at: float, *, cold: bool = False
    ) -> CacheUsage:
        """Look the request up at ``now`` (``cold``: find nothing); write what it caches,
        readable from ``begins_at``."""
        plan = self._plan(request, now, cold)
        if plan is None:
            return NO_CACHE
        hit = plan.hits[-1] if plan.hits else -1
        # Every hit, and shorter cached prefixes inside the longest, are read: refresh them.
        refreshed = set(plan.hits).union(b for b in plan.cacheable if b <= hit)
        for p in sorted(refreshed):
            entry = self._readable(plan.keys[p], now)
            if entry is not None:
                entry.expires_at = max(entry.expires_at, begins_at + ttl_seconds(entry.ttl))
        segments = request.segments
        for b in plan.cacheable:
            if b > hit:
                self._store(plan.keys[b], segments[b].ttl or "5m", now, begins_at)
        return plan.usage

    def _store(self, key: tuple[str, bytes, bytes], ttl: str, now: float, begins_at: float) -> None:
        expires = begins_at + ttl_seconds(ttl)
        entry = self._entries.get(key)
        if entry is not None and now < entry.expires_at:
            # A concurrent writer got here first: keep its (earlier) readable time.
            entry.readable_from = min(entry.readable_from, begins_at)
            entry.expires_at = max(entry.expires_at, expires)
            if ttl_seconds(ttl) > ttl_seconds(entry.ttl):
                entry.ttl = ttl
        else:
            self._entries[key] = CacheEntry(begins_at, expires, ttl)
        self._writes += 1
        if self._writes % _PURGE_EVERY == 0:
            self._entries = {k: e for k, e in self._entries.items() if e.expires_at > now}

    def snapshot(self) -> list[dict[str, Any]]:
        """The entries, for debugging (hash hex, model, times)."""
        return [
            {
                "model": model,
                "hash": digest.hex(),
                "ttl": e.ttl,
                "readable_from": e.readable_from,
                "expires_at": e.expires_at,
            }
            for (model, _scope, digest), e in self._entries.items()
        ]
