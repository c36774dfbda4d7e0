"""Emulator settings: latency, batch duration, faults, seed and an injectable clock."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field

#: Fault kinds ``--faults`` understands, in the order they are drawn.
FAULT_KINDS = ("rate_limit", "overloaded", "server_error")


class FaultSpecError(ValueError):
    """``--faults`` could not be parsed."""


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
class EmulatorConfig:
    """How the emulator behaves. ``clock`` returns seconds since the epoch (inject for tests)."""

    latency_ms: float = 0.0
    batch_seconds: float = 0.0
    faults: FaultRates = field(default_factory=FaultRates)
    seed: int = 0
    clock: Callable[[], float] = time.time
    retry_after_seconds: int = 1
    requests_per_minute: int = 4000
    tokens_per_minute: int = 2_000_000

    def __post_init__(self) -> None:
        if self.latency_ms < 0:
            raise ValueError("latency_ms must be >= 0")
        if self.batch_seconds < 0:
            raise ValueError("batch_seconds must be >= 0")
