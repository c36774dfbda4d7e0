"""Usage counters per step for a progress display (kept apart from budget limits)."""

from __future__ import annotations

import threading
from collections.abc import Sequence
from dataclasses import dataclass
from decimal import Decimal
from typing import Literal

from llmflow.catalog import ZERO, TokenUsage
from llmflow.tracker.records import StepTotals


@dataclass(frozen=True, slots=True)
class StepProgress:
    """A snapshot of one step: done/total, spend and cache hit ratio so far."""

    step_id: str
    total: int
    succeeded: int
    failed: int
    skipped: int
    usage: TokenUsage
    cost: Decimal

    @property
    def done(self) -> int:
        return self.succeeded + self.failed + self.skipped

    @property
    def cache_hit_ratio(self) -> Decimal:
        return self.usage.cache_hit_ratio


class Progress:
    """Thread-safe counters, seeded from the store so a resumed run shows its history."""

    def __init__(self, seed: Sequence[StepTotals] = ()) -> None:
        self._lock = threading.Lock()
        self._steps: dict[str, StepProgress] = {}
        for s in seed:
            self._steps[s.step_id] = StepProgress(
                s.step_id, s.requests, s.succeeded, s.failed, s.skipped, s.usage, s.cost
            )

    def set_total(self, step_id: str, total: int) -> None:
        with self._lock:
            old = self._get(step_id)
            self._steps[step_id] = StepProgress(
                step_id, total, old.succeeded, old.failed, old.skipped, old.usage, old.cost
            )

    def add(
        self,
        step_id: str,
        *,
        usage: TokenUsage | None = None,
        cost: Decimal = ZERO,
        succeeded: int = 0,
        failed: int = 0,
        skipped: int = 0,
        replaces: Literal["failed", "skipped"] | None = None,
    ) -> None:
        """Count outcomes; ``replaces`` un-counts the item's outcome of an earlier session."""
        with self._lock:
            old = self._get(step_id)
            self._steps[step_id] = StepProgress(
                step_id,
                old.total,
                old.succeeded + succeeded,
                max(0, old.failed + failed - (replaces == "failed")),
                max(0, old.skipped + skipped - (replaces == "skipped")),
                old.usage + usage if usage is not None else old.usage,
                old.cost + cost,
            )

    def get(self, step_id: str) -> StepProgress:
        with self._lock:
            return self._get(step_id)

    def all(self) -> list[StepProgress]:
        with self._lock:
            return list(self._steps.values())

    def _get(self, step_id: str) -> StepProgress:
        found = self._steps.get(step_id)
        if found is None:
            found = StepProgress(step_id, 0, 0, 0, 0, TokenUsage(), ZERO)
        return found
