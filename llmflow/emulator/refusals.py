"""Refuse what the model does not accept, by the catalog's request rules.

The emulator does not re-code the API's rules: it builds a
:class:`~llmflow.catalog.rules.RequestShape` from the parsed body and asks
:func:`~llmflow.catalog.rules.check_request`. The first *error* is the answer: a retired
model is a 404 ``not_found_error`` (as the API answers for a model it no longer
serves), every other rule a 400 ``invalid_request_error`` whose message starts with the
parameter at fault. Warnings (a deprecated model) are ignored. Batch items are checked
with ``batch=True`` and come back ``errored`` instead.
"""

from __future__ import annotations

import datetime as dt
from typing import Final

import structlog

from llmflow.catalog.rules import RequestShape, check_request
from llmflow.emulator.errors import invalid, not_found
from llmflow.emulator.validation import ParsedRequest

log = structlog.get_logger("llmflow.emulator")

_FORCED: Final = ("any", "tool")


def utc_day(ts: float) -> dt.date:
    """The UTC calendar day of a clock reading (the day the rules are checked on)."""
    return dt.datetime.fromtimestamp(ts, dt.UTC).date()


def request_shape(
    request: ParsedRequest, *, batch: bool = False, count_only: bool = False
) -> RequestShape:
    """The settings of ``request`` that the rules look at."""
    options = request.options
    thinking = options.thinking
    return RequestShape(
        batch=batch,
        max_tokens=None if count_only else request.max_tokens,
        sampling=options.sampling,
        effort=options.effort,
        thinking=thinking.type if thinking else None,
        thinking_budget=thinking.budget_tokens if thinking else None,
        speed=options.speed,
        inference_geo=options.inference_geo,
        forced_tool=request.tool_choice in _FORCED,
        output_schema=options.output_schema,
        prefill=request.prefill,
        stream=request.stream,
        prompt_tokens=request.total_input_tokens,
    )


def refuse(
    request: ParsedRequest, *, today: dt.date, batch: bool = False, count_only: bool = False
) -> None:
    """Raise the API's error for the first rule ``request`` breaks on its model."""
    shape = request_shape(request, batch=batch, count_only=count_only)
    for violation in check_request(request.info, shape, today=today):
        if violation.severity != "error":
            continue
        log.info(
            "emulator.request.refused",
            model=request.info.id,
            rule=violation.rule,
            param=violation.param,
            batch=batch,
        )
        if violation.rule == "retired":
            raise not_found(f"model: {violation.message}")
        raise invalid(f"{violation.param}: {violation.message}")
