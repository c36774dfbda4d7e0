"""Token usage and its price: the one cost formula of llmflow.

``cost = in·p + w5·p₅ + w1h·p₁ₕ + r·pᵣ + out·q`` with the per-category prices of the
request's model (:meth:`ModelInfo.prices`): the request's price band (decided by its own
prompt size), fast mode when ``speed`` is ``fast``; then times the residency multiplier
for a regional ``inference_geo`` and the batch multiplier in batch mode. Output includes
thinking tokens (they are billed as output). Money is Decimal.
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
    thinking: int = Field(default=0, ge=0, description="Part of output spent thinking.")

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
            thinking=self.thinking + other.thinking,
        )

    def scaled(self, factor: int) -> TokenUsage:
        """The usage of ``factor`` identical requests."""
        return TokenUsage(
            input=self.input * factor,
            cache_write_5m=self.cache_write_5m * factor,
            cache_write_1h=self.cache_write_1h * factor,
            cache_read=self.cache_read * factor,
            output=self.output * factor,
            thinking=self.thinking * factor,
        )


def is_regional(inference_geo: str | None) -> bool:
    """Whether ``inference_geo`` pins a region (priced with the residency multiplier)."""
    return inference_geo is not None and inference_geo not in ("", "global")


def cost(
    usage: TokenUsage,
    model: ModelInfo,
    *,
    batch: bool = False,
    speed: str | None = None,
    inference_geo: str | None = None,
    prompt_tokens: int | None = None,
) -> Decimal:
    """Exact USD cost of ``usage`` on ``model``, whatever number of requests it sums.

    The price band is the one of a request with ``prompt_tokens`` prompt tokens (None:
    the base band). Price one response with :func:`request_cost`, which decides the
    band from the response's own prompt.
    """
    prices = model.prices(prompt_tokens=prompt_tokens or 0, speed=speed or "standard")
    total = (
        usage.input * prices.input
        + usage.cache_write_5m * prices.cache_write_5m
        + usage.cache_write_1h * prices.cache_write_1h
        + usage.cache_read * prices.cache_read
        + usage.output * prices.output
    ) / _PER_TOKEN
    if is_regional(inference_geo):
        total *= model.residency_multiplier
    if batch:
        total *= model.batch_multiplier
    return total


def request_cost(
    usage: TokenUsage,
    model: ModelInfo,
    *,
    batch: bool = False,
    speed: str | None = None,
    inference_geo: str | None = None,
) -> Decimal:
    """Exact USD cost of one request's ``usage``: its band from its own prompt tokens."""
    return cost(
        usage,
        model,
        batch=batch,
        speed=speed,
        inference_geo=inference_geo,
        prompt_tokens=usage.total_input,
    )


def format_usd(amount: Decimal) -> str:
    """A decimal string without exponent, trailing zeros trimmed (``"0.0125"``, ``"3"``)."""
    text = format(amount, "f")
    if "." in text:
        text = text.rstrip("0").rstrip(".")
    return text or "0"
