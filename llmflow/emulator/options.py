"""A request's settings besides its prompt, checked for shape (not for the model).

``thinking``, ``output_config`` (effort and format), ``speed``, ``inference_geo``,
``diagnostics`` and the sampling parameters are read into :class:`RequestOptions`;
a malformed value is a 400 here. Whether the *model* accepts a well-formed value is
decided by the catalog's request rules (:mod:`llmflow.emulator.refusals`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Final

from llmflow.catalog import EFFORT_LEVELS
from llmflow.catalog.rules import SAMPLING_PARAMS
from llmflow.emulator.errors import invalid

THINKING_TYPES: Final = ("adaptive", "enabled", "disabled", "between_tools")
DISPLAYS: Final = ("summarized", "omitted")
_THINKING_KEYS: Final = {
    "adaptive": {"type", "display"},
    "enabled": {"type", "budget_tokens", "display"},
    "disabled": {"type"},
    "between_tools": {"type"},
}


@dataclass(frozen=True, slots=True)
class ThinkingConfig:
    """The request's ``thinking`` object."""

    type: str
    budget_tokens: int | None = None
    display: str | None = None


@dataclass(frozen=True, slots=True)
class RequestOptions:
    """Everything of a request that is neither prompt nor ``max_tokens``."""

    thinking: ThinkingConfig | None = None
    effort: str | None = None
    output_schema: dict[str, Any] | None = None
    speed: str | None = None
    inference_geo: str | None = None
    sampling: tuple[str, ...] = ()
    diagnostics: bool = False
    previous_message_id: str | None = None


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _sampling(body: dict[str, Any]) -> tuple[str, ...]:
    temperature = body.get("temperature")
    if temperature is not None and (not _is_number(temperature) or not 0 <= temperature <= 1):
        raise invalid("temperature: Input should be a number between 0 and 1")
    top_p = body.get("top_p")
    if top_p is not None and (not _is_number(top_p) or not 0 <= top_p <= 1):
        raise invalid("top_p: Input should be a number between 0 and 1")
    top_k = body.get("top_k")
    if top_k is not None and (not _is_int(top_k) or top_k < 0):
        raise invalid("top_k: Input should be a non-negative integer")
    return tuple(name for name in SAMPLING_PARAMS if body.get(name) is not None)


def _thinking(raw: Any) -> ThinkingConfig | None:
    if raw is None:
        return None
    kind = raw.get("type") if isinstance(raw, dict) else None
    if not isinstance(raw, dict) or kind not in THINKING_TYPES:
        raise invalid(
            f"thinking.type: Input tag {kind!r} found using 'type' does not match any of the"
            f" expected tags: {', '.join(repr(t) for t in THINKING_TYPES)}"
        )
    extra = set(raw) - _THINKING_KEYS[kind]
    if extra:
        raise invalid(f"thinking.{kind}.{sorted(extra)[0]}: Extra inputs are not permitted")
    budget = raw.get("budget_tokens")
    if budget is not None and not _is_int(budget):
        raise invalid(f"thinking.{kind}.budget_tokens: Input should be a valid integer")
    display = raw.get("display")
    if display is not None and display not in DISPLAYS:
        raise invalid(f"thinking.{kind}.display: Input should be 'summarized' or 'omitted'")
    return ThinkingConfig(kind, budget, display)


def _output_config(raw: Any) -> tuple[str | None, dict[str, Any] | None]:
    if raw is None:
        return None, None
    if not isinstance(raw, dict):
        raise invalid("output_config: Input should be a valid dictionary")
    extra = set(raw) - {"effort", "format"}
    if extra:
        raise invalid(f"output_config.{sorted(extra)[0]}: Extra inputs are not permitted")
    effort = raw.get("effort")
    if effort is not None and effort not in EFFORT_LEVELS:
        levels = ", ".join(repr(e) for e in EFFORT_LEVELS)
        raise invalid(f"output_config.effort: Input should be {levels}")
    fmt = raw.get("format")
    if fmt is None:
        return effort, None
    if not isinstance(fmt, dict) or fmt.get("type") != "json_schema":
        raise invalid("output_config.format.type: Input should be 'json_schema'")
    if set(fmt) - {"type", "schema"}:
        raise invalid("output_config.format: only `type` and `schema` are permitted")
    schema = fmt.get("schema")
    if not isinstance(schema, dict):
        raise invalid("output_config.format.schema: Input should be a valid dictionary")
    return effort, schema


def _string(body: dict[str, Any], key: str) -> str | None:
    value = body.get(key)
    if value is not None and not isinstance(value, str):
        raise invalid(f"{key}: Input should be a valid string")
    return value


def _diagnostics(raw: Any) -> tuple[bool, str | None]:
    if raw is None:
        return False, None
    if not isinstance(raw, dict) or set(raw) - {"previous_message_id"}:
        raise invalid("diagnostics: only `previous_message_id` is permitted")
    previous = raw.get("previous_message_id")
    if previous is not None and not isinstance(previous, str):
        raise invalid("diagnostics.previous_message_id: Input should be a valid string or null")
    return True, previous


def parse_options(body: dict[str, Any]) -> RequestOptions:
    """The options of a messages (or count_tokens) body; 400 on a malformed one."""
    metadata = body.get("metadata")
    if metadata is not None and not isinstance(metadata, dict):
        raise invalid("metadata: Input should be a valid dictionary")
    effort, schema = _output_config(body.get("output_config"))
    diagnostics, previous = _diagnostics(body.get("diagnostics"))
    return RequestOptions(
        thinking=_thinking(body.get("thinking")),
        effort=effort,
        output_schema=schema,
        speed=_string(body, "speed"),
        inference_geo=_string(body, "inference_geo"),
        sampling=_sampling(body),
        diagnostics=diagnostics,
        previous_message_id=previous,
    )
