"""Seeded fault injection for ``POST /v1/messages``."""

from __future__ import annotations

import random

from llmflow.emulator.config import FaultRates
from llmflow.emulator.errors import ApiError


class FaultInjector:
    """Draws one number per request from a seeded generator and maps it to a fault."""

    def __init__(self, rates: FaultRates, seed: int, retry_after_seconds: int = 1) -> None:
        self._rates = rates
        self._seed = seed
        self._retry_after = retry_after_seconds
        self._rng = random.Random(seed)

    def reset(self) -> None:
        """Restart the sequence from the seed."""
        self._rng = random.Random(self._seed)

    def draw(self) -> ApiError | None:
        """The fault for the next request, or None."""
        rates = self._rates
        if not rates.any:
            return None
        r = self._rng.random()
        if r < rates.rate_limit:
            return ApiError(
                "rate_limit_error",
                "This request would exceed the rate limit for your organization. Please"
                " reduce the prompt length or the maximum tokens requested, or try again later.",
                {"retry-after": str(self._retry_after)},
            )
        r -= rates.rate_limit
        if r < rates.overloaded:
            return ApiError("overloaded_error", "Overloaded")
        r -= rates.overloaded
        if r < rates.server_error:
            return ApiError("api_error", "Internal server error")
        return None
