"""The organisation's spend cap: past it, new work is refused for good.

Once the ledger (:mod:`.ledger`) has billed at least ``spend_cap_usd`` at catalog
prices, every further ``POST /v1/messages`` and batch create answers 429
``rate_limit_error`` with ``error.details.error_code: "enforced_spend_limit_reached"``
(the SDK raises ``EnforcedSpendLimitReachedError``) and **no** ``retry-after``:
retrying cannot succeed. Work admitted before is not refused retroactively: a request
in flight, or a batch created earlier, still runs and is billed, so the ledger may end
above the cap. count_tokens, reads of batches and the Models API stay open.
``/_emulator/reset`` clears the ledger and so lifts the cap.
"""

from __future__ import annotations

from decimal import Decimal
from typing import Final

import structlog

from llmflow.emulator.errors import ApiError
from llmflow.emulator.ledger import Ledger

log = structlog.get_logger("llmflow.emulator")

ERROR_CODE: Final = "enforced_spend_limit_reached"


def spend_limit_error() -> ApiError:
    """The 429 the API answers past the organisation's spend cap (no ``retry-after``)."""
    return ApiError(
        "rate_limit_error",
        "This request would exceed your organization's monthly spend limit for its API"
        " tier. Retrying will not succeed until the limit resets or is raised.",
        details={"error_code": ERROR_CODE},
    )


class SpendCap:
    """Refuses new work once ``ledger`` has billed ``cap_usd`` or more."""

    def __init__(self, cap_usd: Decimal, ledger: Ledger) -> None:
        self._cap = cap_usd
        self._ledger = ledger
        self._reached = False

    def check(self) -> None:
        """Raise the spend-limit 429 when the cap is reached."""
        billed = self._ledger.billed_usd()
        reached = billed >= self._cap
        if reached and not self._reached:
            log.warning(
                "emulator.spend_cap.reached", billed_usd=str(billed), cap_usd=str(self._cap)
            )
        self._reached = reached
        if reached:
            raise spend_limit_error()
