"""Emulator settings: latency, batches, faults, limits, output lengths, batch cache hits,
seed and an injectable clock.

The CLI's option strings are parsed here, each with its own error (exit 2 in the CLI):
``--faults`` (:func:`parse_faults`), ``--rate-limits`` (:func:`parse_rate_limits`) and
``--spend-cap-usd`` (:func:`parse_spend_cap`).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation

#: Fault kinds ``--faults`` understands, in the order they are drawn.
FAULT_KINDS = ("rate_limit", "overloaded", "server_error")

#: Default share of batch requests that read their cached prefix: inside the 30-98% that
#: Anthropic reports for batches (hits there are best effort), toward its middle.
DEFAULT_BATCH_CACHE_HIT_RATE = 0.6

#: Limits ``--rate-limits`` understands: requests, input and output tokens per minute.
RATE_LIMIT_KINDS = ("rpm", "itpm", "otpm")


class FaultSpecError(ValueError):
    """``--faults`` could not be parsed."""


class RateLimitSpecError(ValueError):
    """``--rate-limits`` could not be parsed."""


class SpendCapSpecError(ValueError):
    """``--spend-cap-usd`` could not be parsed."""


@dataclass(frozen=True, slots=True)
class FaultRates:
    """Probability of each injected fault on ``POST /v1/messages``."""

    rate_limit: float = 0.0
    overloaded: float = 0.0
    server_error: float = 0.0

    @property
    def any(self) -> bool:
        """Whether any fault can happen."""
        return self.rate_limit > 0 or self.overloaded > 0 or self.server_error > 0


def parse_faults(spec: str | None) -> FaultRates:
    """Parse ``rate_limit=0.1,overloaded=0.05,server_error=0.02`` (empty → no faults)."""
    if not spec or not spec.strip():
        return FaultRates()
    rates: dict[str, float] = {}
    for part in spec.split(","):
        name, sep, value = part.strip().partition("=")
        name = name.strip()
        if not sep or name not in FAULT_KINDS:
            raise FaultSpecError(
                f"bad fault {part.strip()!r}: expected NAME=P with NAME in {', '.join(FAULT_KINDS)}"
            )
        if name in rates:
            raise FaultSpecError(f"fault {name!r} given twice")
        try:
            p = float(value)
        except ValueError:
            raise FaultSpecError(f"fault {name!r}: {value.strip()!r} is not a number") from None
        if not 0.0 <= p <= 1.0:
            raise FaultSpecError(f"fault {name!r}: probability {p} is not within [0, 1]")
        rates[name] = p
    if sum(rates.values()) > 1.0:
        raise FaultSpecError("fault probabilities add up to more than 1")
    return FaultRates(**rates)


@dataclass(frozen=True, slots=True)
class RateLimits:
    """Enforced per-minute limits; one not given is the Start tier's (1,000 RPM, 2M ITPM,
    400K OTPM)."""

    rpm: int = 1000
    itpm: int = 2_000_000
    otpm: int = 400_000

    def __post_init__(self) -> None:
        for name in RATE_LIMIT_KINDS:
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a positive integer")


def parse_rate_limits(spec: str | None) -> RateLimits | None:
    """Parse ``rpm=50,itpm=30000,otpm=8000`` (any subset; empty → not enforced)."""
    if not spec or not spec.strip():
        return None
    limits: dict[str, int] = {}
    for part in spec.split(","):
        name, sep, value = part.strip().partition("=")
        name = name.strip()
        if not sep or name not in RATE_LIMIT_KINDS:
            raise RateLimitSpecError(
                f"bad limit {part.strip()!r}: expected NAME=N with NAME in"
                f" {', '.join(RATE_LIMIT_KINDS)}"
            )
        if name in limits:
            raise RateLimitSpecError(f"limit {name!r} given twice")
        try:
            n = int(value.strip())
        except ValueError:
            raise RateLimitSpecError(
                f"limit {name!r}: {value.strip()!r} is not a whole number"
            ) from None
        if n < 1:
            raise RateLimitSpecError(f"limit {name!r}: {n} is not positive")
        limits[name] = n
    return RateLimits(**limits)


def parse_spend_cap(text: str | None) -> Decimal | None:
    """Parse ``--spend-cap-usd`` (``12.50``; empty → no cap)."""
    if text is None or not text.strip():
        return None
    try:
        amount = Decimal(text.strip())
    except InvalidOperation:
        raise SpendCapSpecError(f"{text.strip()!r} is not an amount in USD") from None
    if not amount.is_finite() or amount < 0:
        raise SpendCapSpecError(f"{text.strip()!r} is not an amount >= 0 in USD")
    return amount


@dataclass(frozen=True, slots=True)
class EmulatorConfig:
    """How the emulator behaves. ``clock`` returns seconds since the epoch (inject for tests).

    ``rate_limits`` None only reports ``anthropic-ratelimit-*`` headers from a one-minute
    window of ``requests_per_minute`` and ``tokens_per_minute``; set, it enforces them
    (:mod:`.ratelimit`). ``spend_cap_usd`` refuses new work once the ledger has billed
    that much (:mod:`.spendcap`). ``batch_create_delay_ms`` delays the answer to a batch
    create, after the batch exists. ``output_scale`` multiplies the length of every prose
    answer (:mod:`.lengths`; structured answers keep their schema's length).
    ``batch_cache_hit_rate`` is the probability that a batch request whose prefix is
    cached reads it (:mod:`.batches`); sync requests always read.
    """

    latency_ms: float = 0.0
    batch_seconds: float = 0.0
    faults: FaultRates = field(default_factory=FaultRates)
    seed: int = 0
    clock: Callable[[], float] = time.time
    retry_after_seconds: int = 1
    requests_per_minute: int = 4000
    tokens_per_minute: int = 2_000_000
    rate_limits: RateLimits | None = None
    spend_cap_usd: Decimal | None = None
    batch_create_delay_ms: float = 0.0
    output_scale: float = 1.0
    batch_cache_hit_rate: float = DEFAULT_BATCH_CACHE_HIT_RATE

    def __post_init__(self) -> None:
        if self.latency_ms < 0:
            raise ValueError("latency_ms must be >= 0")
        if self.batch_seconds < 0:
            raise ValueError("batch_seconds must be >= 0")
        if self.batch_create_delay_ms < 0:
            raise ValueError("batch_create_delay_ms must be >= 0")
        if not (math.isfinite(self.output_scale) and self.output_scale > 0):
            raise ValueError("output_scale must be a finite number > 0")
        if not 0.0 <= self.batch_cache_hit_rate <= 1.0:
            raise ValueError("batch_cache_hit_rate must be within [0, 1]")
        cap = self.spend_cap_usd
        if cap is not None and (not isinstance(cap, Decimal) or not cap.is_finite() or cap < 0):
            raise ValueError("spend_cap_usd must be a finite Decimal >= 0")
