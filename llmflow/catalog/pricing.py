"""Token usage and its price: the one cost formula of llmflow (DESIGN.md section 5).

``cost = in·p + w5·1.25p + w1h·2p + r·0.1p + out·q``, times the batch multiplier in
batch mode, with p and q the input and output price per token. Money is Decimal.
"""

from __future__ import annotations

from decimal import Decimal

from pydantic import BaseModel, ConfigDict, Field

from llmflow.catalog.catalog import ModelInfo

_PER_TOKEN = Decimal(1_000_000)
ZERO = Decimal(0)


class TokenUsage(BaseModel):
    """Tokens of one or more requests, by billing category.

    ``input`` is the uncached remainder, as the API's ``usage.input_tokens``.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    input: int = Field(default=0, ge=0)
    cache_write_5m: int = Field(default=0, ge=0)
    cache_write_1h: int = Field(default=0, ge=0)
    cache_read: int = Field(default=0, ge=0)
    output: int = Field(default=0, ge=0)

    @property
    def cache_write(self) -> int:
        return self.cache_write_5m + self.cache_write_1h

    @property
    def total_input(self) -> int:
        """Every input token, cached or not."""
        return self.input + self.cache_write + self.cache_read

    @property
    def cache_hit_ratio(self) -> Decimal:
        """cache_read / (input + cache_write + cache_read); 0 when there was no input."""
        total = self.total_input
        return Decimal(self.cache_read) / Decimal(total) if total else ZERO

    def __add__(self, other: TokenUsage) -> TokenUsage:
        return TokenUsage(
            input=self.input + other.input,
            cache_write_5m=self.cache_write_5m + other.cache_write_5m,
            cache_write_1h=self.cache_write_1h + other.cache_write_1h,
            cache_read=self.cache_read + other.cache_read,
            output=self.output + other.output,
        )

    def scaled(self, factor: int) -> TokenUsage:
        """The usage of ``factor`` identical requests."""
        return TokenUsage(
            input=self.input * factor,
            cache_write_5m=self.cache_write_5m * factor,
            cache_write_1h=self.cache_write_1h * factor,
            cache_read=self.cache_read * factor,
            output=self.output * factor,
        )


def cost(usage: TokenUsage, model: ModelInfo, *, batch: bool = False) -> Decimal:
    """Exact USD cost of ``usage`` on ``model``; batch applies to every category."""
    p = model.input_usd_per_mtok / _PER_TOKEN
    q = model.output_usd_per_mtok / _PER_TOKEN
    total = (
        usage.input * p
        + usage.cache_write_5m * p * model.cache_write_5m_multiplier
        + usage.cache_write_1h * p * model.cache_write_1h_multiplier
        + usage.cache_read * p * model.cache_read_multiplier
        + usage.output * q
    )
    if batch:
        total *= model.batch_multiplier
    return total


def format_usd(amount: Decimal) -> str:
    """A decimal string without exponent, trailing zeros trimmed (``"0.0125"``, ``"3"``)."""
    text = format(amount, "f")
    if "." in text:
        text = text.rstrip("0").rstrip(".")
    return text or "0"
