"""Prompt-cache placement as a priced decision.

For one step the planner asks: with N requests sharing a prefix of P tokens, which is
cheapest — no cache, a 5-minute or a 1-hour cache? Expected counts:

* **sync** (cache-warm fan-out): the first request writes the prefix (minus what it
  reads from an earlier step's identical prefix), the rest read it — unless requests
  start further apart than the TTL, in which case every request writes.
* **batch**: a fraction ``policy.cache.batch_hit_rate`` of the requests read (at most
  N − 1), the rest write (a miss that carries ``cache_control`` writes). ``ttl: auto``
  prices both TTLs with that hit rate; at the default 0.5 a 1h write never pays in
  batch (2·(1−h) + 0.1·h ≥ 1), a 5m write does.

With the catalog's multipliers a 5m cache pays from 2 requests, a 1h cache from 3.
A tie keeps the cache off. ``max`` never uses these counts: every request writes.
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal
from typing import Final, Literal

from llmflow.catalog import ModelInfo, TokenUsage, cost, format_usd
from llmflow.planner.requests import Ttl

#: Timing model (seconds): a request takes BASE + expected output / rate.
REQUEST_BASE_SECONDS: Final = 2.0
OUTPUT_TOKENS_PER_SECOND: Final = 50.0
#: How long the planner assumes a batch takes (entries written before it are cold).
BATCH_SECONDS: Final = 3600.0
TTL_SECONDS: Final[dict[str, float]] = {"5m": 300.0, "1h": 3600.0}
MAX_BREAKPOINTS: Final = 4


def request_seconds(expected_output_tokens: int) -> float:
    """Expected wall time of one request."""
    return REQUEST_BASE_SECONDS + expected_output_tokens / OUTPUT_TOKENS_PER_SECOND


@dataclass(frozen=True, slots=True)
class CacheQuestion:
    """Everything the decision depends on, for one step."""

    mode: Literal["sync", "batch"]
    requests: int
    prefix_tokens: int
    min_cacheable: int
    enabled: bool = True
    ttl_policy: Literal["auto", "5m", "1h"] = "auto"
    batch_hit_rate: Decimal = Decimal("0.5")
    gap_seconds: float = 0.0
    shared_read: int = 0


@dataclass(frozen=True, slots=True)
class CacheChoice:
    """The decision and its expected counts (requests writing/reading, tokens)."""

    ttl: Ttl | None
    writes: int = 0
    reads: int = 0
    write_tokens: int = 0
    read_tokens: int = 0
    input_tokens: int = 0
    notes: tuple[str, ...] = ()

    @property
    def enabled(self) -> bool:
        return self.ttl is not None

    def usage(self) -> TokenUsage:
        """The prefix's share of the step's expected usage."""
        return TokenUsage(
            input=self.input_tokens,
            cache_write_5m=self.write_tokens if self.ttl == "5m" else 0,
            cache_write_1h=self.write_tokens if self.ttl == "1h" else 0,
            cache_read=self.read_tokens,
        )


def uncached(q: CacheQuestion, *notes: str) -> CacheChoice:
    """No cache: every request pays its prefix as input."""
    return CacheChoice(None, input_tokens=q.requests * q.prefix_tokens, notes=notes)


def with_ttl(q: CacheQuestion, ttl: Ttl) -> CacheChoice:
    """Expected counts when the prefix is cached at ``ttl``."""
    n, p = q.requests, q.prefix_tokens
    if n == 0 or p == 0:
        return CacheChoice(ttl)
    if q.mode == "batch":
        reads = min(n - 1, int(q.batch_hit_rate * n))
        return CacheChoice(
            ttl, writes=n - reads, reads=reads, write_tokens=(n - reads) * p, read_tokens=reads * p
        )
    shared = min(q.shared_read, p)
    if n > 1 and q.gap_seconds >= TTL_SECONDS[ttl]:
        return CacheChoice(ttl, writes=n, write_tokens=n * p)
    first_writes = p - shared
    return CacheChoice(
        ttl,
        writes=1 if first_writes else 0,
        reads=n - 1 + (1 if shared else 0),
        write_tokens=first_writes,
        read_tokens=(n - 1) * p + shared,
    )


def choose_cache(q: CacheQuestion, model: ModelInfo) -> CacheChoice:
    """The cheapest of no cache and the allowed TTLs, with a note saying why."""
    if not q.enabled:
        return uncached(q, "cache off: disabled by the policy")
    if q.prefix_tokens == 0:
        return uncached(q, "cache off: no static prefix (tools/system) to cache")
    if q.prefix_tokens < q.min_cacheable:
        return uncached(
            q,
            f"cache off: static prefix ~{q.prefix_tokens} tokens is below {model.id}'s"
            f" minimum cacheable {q.min_cacheable}",
        )
    batch = q.mode == "batch"
    if q.ttl_policy != "auto":
        candidates: list[Ttl] = [q.ttl_policy]
        why = f"policy sets ttl {q.ttl_policy}"
    elif batch:
        candidates = ["5m", "1h"]
        why = f"batch: cache hits are best effort, expected hit rate {q.batch_hit_rate}"
    else:
        candidates = ["5m", "1h"]
        why = f"requests start ~{q.gap_seconds:.1f}s apart"
    base = uncached(q)
    base_cost = cost(base.usage(), model, batch=batch)
    best, best_cost = base, base_cost
    for ttl in candidates:
        choice = with_ttl(q, ttl)
        price = cost(choice.usage(), model, batch=batch)
        if price < best_cost:
            best, best_cost = choice, price
    if best.ttl is None:
        ttls = "/".join(candidates)
        return uncached(
            q,
            f"cache off: a {ttls} write does not pay for {q.requests} request(s) of a"
            f" ~{q.prefix_tokens:,}-token prefix ({why})",
        )
    saved = format_usd((base_cost - best_cost).quantize(Decimal("0.0001")))
    parts = [f"{best.writes} write(s)", f"{best.reads} read(s)"]
    if q.shared_read and not batch:
        parts.append(f"{q.shared_read:,} tokens read from an earlier step")
    note = (
        f"cache {best.ttl} on a ~{q.prefix_tokens:,}-token prefix: {', '.join(parts)}"
        f" expected; saves ${saved} on the prefix ({why})"
    )
    return CacheChoice(
        best.ttl,
        best.writes,
        best.reads,
        best.write_tokens,
        best.read_tokens,
        best.input_tokens,
        (note,),
    )
