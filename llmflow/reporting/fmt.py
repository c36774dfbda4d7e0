"""Text for money, ratios, moments and token columns, shared by the report formats."""

from __future__ import annotations

from datetime import datetime
from decimal import ROUND_HALF_EVEN, Decimal

from llmflow.catalog import format_usd

#: The Tokens tables' columns: (header, TokenUsage field); thinking is part of output.
TOKEN_COLUMNS = (
    ("input", "input"), ("cache write 5m", "cache_write_5m"),
    ("cache write 1h", "cache_write_1h"), ("cache read", "cache_read"), ("output", "output"),
    ("thinking", "thinking"),
)  # fmt: skip


def usd(amount: Decimal | None) -> str:
    """Exact dollars as in the summary JSON (``$0.0125``); ``-`` for None."""
    return "-" if amount is None else f"${format_usd(amount)}"


def usd_short(amount: Decimal | None) -> str:
    """Dollars rounded for reading: 4 places, 6 under a cent (``$0.0125``, ``$0.000042``)."""
    if amount is None:
        return "-"
    places = Decimal("0.0001") if abs(amount) >= Decimal("0.01") or amount == 0 else Decimal("1e-6")
    text = format(amount.quantize(places, rounding=ROUND_HALF_EVEN), "f")
    while len(text.partition(".")[2]) > 4 and text.endswith("0"):
        text = text[:-1]
    return f"${text}"


def percent(ratio: Decimal | None) -> str:
    """A 0–1 ratio as a percentage with one decimal (``0.4321`` → ``43.2%``)."""
    if ratio is None:
        return "-"
    return f"{(ratio * 100).quantize(Decimal('0.1'), rounding=ROUND_HALF_EVEN)}%"


def savings(pct: Decimal | None) -> str:
    """A savings percentage as the summary gives it (``62.5`` → ``62.5%``)."""
    return "-" if pct is None else f"{pct}%"


def vs_plan(actual: Decimal, planned: Decimal | None) -> str:
    """Actual against plan in percent (``+12.0%``); ``-`` without a plan."""
    if planned is None or planned == 0:
        return "-"
    delta = ((actual - planned) / planned * 100).quantize(Decimal("0.1"), ROUND_HALF_EVEN)
    return f"{'+' if delta > 0 else ''}{delta}%"


def moment(at: datetime | None) -> str:
    """UTC time to the second (``2026-05-20 12:00:03Z``); ``-`` for None."""
    return "-" if at is None else at.strftime("%Y-%m-%d %H:%M:%SZ")


def tokens(n: int) -> str:
    """A token count with thousands separators."""
    return f"{n:,}"
