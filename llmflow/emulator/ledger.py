"""Everything the emulator billed, so tests can prove a tracker lost nothing.

Each entry keeps the response's ``usage`` and, beside it, what prices it: the service
tier (``batch`` halves every category), ``speed`` and ``inference_geo``. Thinking tokens
are part of ``output_tokens`` (they are billed as output) and are also totalled apart.
:meth:`Ledger.billed_usd` prices the entries at catalog prices (the spend cap reads it).
"""

from __future__ import annotations

from collections.abc import Mapping
from decimal import Decimal
from typing import Any, Final

from llmflow.catalog import TokenUsage, load_catalog, request_cost

_TOTAL_KEYS: Final = (
    "input_tokens",
    "cache_creation_input_tokens",
    "cache_read_input_tokens",
    "ephemeral_5m_input_tokens",
    "ephemeral_1h_input_tokens",
    "output_tokens",
    "thinking_tokens",
)


def _thinking(usage: Mapping[str, Any]) -> int:
    details = usage.get("output_tokens_details") or {}
    return int(details.get("thinking_tokens", 0))


class Ledger:
    """Billed requests in the order they were billed, with running totals."""

    def __init__(self) -> None:
        self._entries: list[dict[str, Any]] = []
        self._totals: dict[str, int] = dict.fromkeys(_TOTAL_KEYS, 0)
        self._billed = Decimal(0)
        self._priced = 0

    def clear(self) -> None:
        """Forget everything."""
        self._entries.clear()
        self._totals = dict.fromkeys(_TOTAL_KEYS, 0)
        self._billed = Decimal(0)
        self._priced = 0

    def billed_usd(self) -> Decimal:
        """What every entry costs at catalog prices (entries priced once, when first asked)."""
        for entry in self._entries[self._priced :]:
            self._billed += entry_cost(entry)
        self._priced = len(self._entries)
        return self._billed

    def record(
        self,
        request_id: str,
        model: str,
        usage: dict[str, Any],
        *,
        batch_id: str | None = None,
        custom_id: str | None = None,
    ) -> None:
        """Bill one response's ``usage``."""
        entry: dict[str, Any] = {
            "request_id": request_id,
            "model": model,
            "service_tier": usage["service_tier"],
            "speed": usage["speed"],
            "inference_geo": usage["inference_geo"],
            "usage": {**usage, "cache_creation": dict(usage["cache_creation"])},
        }
        if batch_id is not None:
            entry["batch_id"] = batch_id
            entry["custom_id"] = custom_id
        self._entries.append(entry)
        totals = self._totals
        totals["input_tokens"] += usage["input_tokens"]
        totals["cache_creation_input_tokens"] += usage["cache_creation_input_tokens"]
        totals["cache_read_input_tokens"] += usage["cache_read_input_tokens"]
        creation = usage["cache_creation"]
        totals["ephemeral_5m_input_tokens"] += creation["ephemeral_5m_input_tokens"]
        totals["ephemeral_1h_input_tokens"] += creation["ephemeral_1h_input_tokens"]
        totals["output_tokens"] += usage["output_tokens"]
        totals["thinking_tokens"] += _thinking(usage)

    def __len__(self) -> int:
        return len(self._entries)

    def to_json(self) -> dict[str, Any]:
        """``{"requests": [...], "totals": {..., "requests": n}}``."""
        return {"requests": list(self._entries), "totals": {**self._totals, "requests": len(self)}}


def entry_usage(entry: Mapping[str, Any]) -> TokenUsage:
    """A ledger entry's usage in the billing categories llmflow's tracker records."""
    usage = entry["usage"]
    return TokenUsage(
        input=usage["input_tokens"],
        cache_write_5m=usage["cache_creation"]["ephemeral_5m_input_tokens"],
        cache_write_1h=usage["cache_creation"]["ephemeral_1h_input_tokens"],
        cache_read=usage["cache_read_input_tokens"],
        output=usage["output_tokens"],
        thinking=_thinking(usage),
    )


def entry_cost(entry: Mapping[str, Any]) -> Decimal:
    """What a ledger entry costs at catalog prices: its own price band, speed and
    residency, at the batch rate for batch entries."""
    model = load_catalog().get(str(entry["model"]))
    if model is None:
        raise KeyError(f"model not in the catalog: {entry['model']}")
    return request_cost(
        entry_usage(entry),
        model,
        batch=entry["service_tier"] == "batch",
        speed=entry.get("speed"),
        inference_geo=entry.get("inference_geo"),
    )
