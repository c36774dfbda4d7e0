"""What one response cost: the results the executor hands the tracker, and their price.

:func:`response_cost` is the tracker's only pricing rule. It prices the response's
actual usage with :func:`llmflow.catalog.request_cost`: the price band of the
response's own prompt (input + cache writes + cache reads), fast mode when the API
reports ``usage.speed == "fast"``, the residency multiplier when it reports a regional
``usage.inference_geo``, and the batch multiplier for a batch result. Thinking tokens
are part of ``usage.output`` and billed with it.

:func:`open_cost` is what a response may still cost beyond its usage: a stream closed
early (``abort_after_tokens``) is billed for what the model generated until it saw the
close, which the client never reads; up to ``max_tokens`` of output. The tracker counts
it as unrecorded spend, so no budget settles below what the API may bill.
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal

from llmflow.catalog import ZERO, ModelInfo, TokenUsage, request_cost
from llmflow.tracker.budget import Reservation
from llmflow.tracker.records import JsonValue, Mode, Response


@dataclass(frozen=True, slots=True)
class Completed:
    """One billed response, to record (alone or within a batch page).

    ``service_tier``, ``speed`` and ``inference_geo`` are the API's ``usage`` fields.
    """

    step_id: str
    key: str
    item_index: int
    model: ModelInfo
    tier: str | None
    mode: Mode
    usage: TokenUsage
    reservation: Reservation | None
    request_id: str | None = None
    output: JsonValue = None
    stop_reason: str | None = None
    service_tier: str | None = None
    speed: str | None = None
    inference_geo: str | None = None
    open_output: int = 0  # output tokens the API may bill beyond ``usage`` (an abort)

    @property
    def batch(self) -> bool:
        """Billed at the batch rate: sent in a batch, or reported as the batch tier."""
        return self.mode == "batch" or self.service_tier == "batch"

    def response(
        self, cost: Decimal, *, with_output: bool = True, open_usd: Decimal = ZERO
    ) -> Response:
        """The record of this response at ``cost`` (the output left out on request)."""
        return Response(
            self.step_id, self.key, self.item_index, self.model.id, self.tier, self.mode,
            self.usage, cost, self.request_id, self.service_tier, self.stop_reason,
            self.output if with_output else None, self.speed, self.inference_geo, open_usd,
        )  # fmt: skip


@dataclass(frozen=True, slots=True)
class Failed:
    """One request that failed for good (not billed), to record."""

    step_id: str
    key: str
    item_index: int
    error: str
    reservation: Reservation | None


def response_cost(done: Completed) -> Decimal:
    """Exact USD cost of one response's actual usage (see the module docstring)."""
    return request_cost(
        done.usage,
        done.model,
        batch=done.batch,
        speed=done.speed,
        inference_geo=done.inference_geo,
    )


def open_cost(done: Completed) -> Decimal:
    """What ``done`` may still be billed beyond its recorded usage: its ``open_output``
    tokens, priced like the rest of its output (0 for a complete response)."""
    if not done.open_output:
        return ZERO
    whole = done.usage.model_copy(update={"output": done.usage.output + done.open_output})
    priced = request_cost(
        whole, done.model, batch=done.batch, speed=done.speed, inference_geo=done.inference_geo
    )
    return priced - response_cost(done)
