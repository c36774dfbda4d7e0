"""What a model accepts on a request: the one copy of the API's request rules.

``llmflow validate`` checks every step against the model it resolves to with
:func:`check_request` (each :class:`Violation` names the request parameter, which the
validator maps to a ``file:line:col``), and the emulator refuses the same requests with
a 400 by the same function. The facts come from :class:`~llmflow.catalog.Capabilities`.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any, Final, Literal

from llmflow.catalog.catalog import ModelInfo
from llmflow.catalog.pricing import is_regional

SAMPLING_PARAMS: Final = ("temperature", "top_p", "top_k")
#: The only regional ``inference_geo`` the API offers; ``global`` is the default.
INFERENCE_GEOS: Final = ("global", "us")
MIN_THINKING_BUDGET: Final = 1024
#: Structured-output schema limits: Anthropic documents "a small number" of optional
#: and union-typed fields; llmflow refuses schemas above these counts before sending.
MAX_OPTIONAL_FIELDS: Final = 24
MAX_UNION_FIELDS: Final = 16
_UNSUPPORTED_KEYWORDS: Final = (
    "minimum",
    "maximum",
    "exclusiveMinimum",
    "exclusiveMaximum",
    "multipleOf",
    "minLength",
    "maxLength",
)

ThinkingMode = Literal["off", "adaptive", "enabled"]


@dataclass(frozen=True, slots=True)
class Violation:
    """One rule a request breaks: the request parameter at fault and why."""

    param: str
    message: str
    rule: str
    severity: Literal["error", "warning"] = "error"


@dataclass(frozen=True, slots=True)
class RequestShape:
    """The settings of a request that the rules look at (not its text)."""

    batch: bool = False
    max_tokens: int | None = None
    sampling: tuple[str, ...] = ()
    effort: str | None = None
    thinking: str | None = None
    thinking_budget: int | None = None
    speed: str | None = None
    inference_geo: str | None = None
    forced_tool: bool = False
    output_schema: Mapping[str, Any] | None = None
    prefill: bool = False
    stream: bool = False
    prompt_tokens: int | None = None
    extra: dict[str, Any] = field(default_factory=dict)


def effective_effort(model: ModelInfo, effort: str | None) -> str | None:
    """The effort a request runs at: its own, else the model's default (None: no effort)."""
    if not model.capabilities.effort_levels:
        return None
    return effort or model.capabilities.effort_default


def thinking_mode(model: ModelInfo, thinking: str | None) -> ThinkingMode:
    """Whether a request thinks: its own ``thinking.type``, else the model's default."""
    if thinking in ("disabled", "between_tools"):
        return "off"
    if thinking in ("adaptive", "enabled"):
        return thinking  # type: ignore[return-value]
    return "off" if model.capabilities.thinking_default == "off" else "adaptive"


def check_request(model: ModelInfo, shape: RequestShape, *, today: dt.date) -> list[Violation]:
    """Every rule ``shape`` breaks on ``model``; a deprecated model is a warning."""
    return [
        *_lifecycle(model, today),
        *_sampling(model, shape),
        *_effort_and_thinking(model, shape),
        *_speed_and_geo(model, shape, today),
        *_output(model, shape),
        *_limits(model, shape),
    ]


def lifecycle_violation(model: ModelInfo, today: dt.date) -> Violation | None:
    """The error of a retired model, or the warning of a deprecated one."""
    for found in _lifecycle(model, today):
        return found
    return None


def _lifecycle(model: ModelInfo, today: dt.date) -> Iterator[Violation]:
    instead = f"; use {model.replacement}" if model.replacement else ""
    if model.status == "retired":
        when = f" on {model.retires_at.isoformat()}" if model.retires_at else ""
        yield Violation("model", f"{model.id} was retired{when}{instead}", "retired")
    elif model.status == "deprecated":
        when = ""
        if model.retires_at is not None:
            day = model.retires_at
            when = f", retires {day.isoformat()}" + (" (today)" if day == today else "")
        yield Violation(
            "model", f"{model.id} is deprecated{when}{instead}", "deprecated", "warning"
        )


def _sampling(model: ModelInfo, shape: RequestShape) -> Iterator[Violation]:
    if model.capabilities.sampling:
        return
    for name in shape.sampling:
        yield Violation(
            name,
            f"{model.id} does not accept {name} (sampling parameters are refused on"
            " Opus 4.7 and every later model); remove it",
            "sampling",
        )


def _effort_and_thinking(model: ModelInfo, shape: RequestShape) -> Iterator[Violation]:
    caps = model.capabilities
    if shape.effort is not None:
        if not caps.effort_levels:
            yield Violation("output_config.effort", f"{model.id} does not support effort", "effort")
        elif shape.effort not in caps.effort_levels:
            yield Violation(
                "output_config.effort",
                f"effort '{shape.effort}' is not offered on {model.id}"
                f" (offered: {', '.join(caps.effort_levels)})",
                "effort",
            )
    kind = shape.thinking
    if kind is None:
        return
    if kind not in caps.thinking_types:
        yield Violation(
            "thinking.type",
            f"thinking '{kind}' is not accepted by {model.id}"
            f" (accepted: {', '.join(caps.thinking_types) or 'none'})",
            "thinking",
        )
        return
    effort = effective_effort(model, shape.effort)
    allowed = {
        "disabled": caps.thinking_disabled_efforts,
        "between_tools": caps.thinking_between_tools_efforts,
    }.get(kind)
    if allowed is not None and effort not in allowed:
        yield Violation(
            "thinking.type",
            f"thinking '{kind}' is accepted by {model.id} only at effort"
            f" {', '.join(allowed)} (this request runs at {effort})",
            "thinking",
        )
    if kind == "enabled":
        budget = shape.thinking_budget
        if budget is None or budget < MIN_THINKING_BUDGET:
            yield Violation(
                "thinking.budget_tokens",
                f"thinking 'enabled' needs budget_tokens >= {MIN_THINKING_BUDGET}",
                "thinking",
            )
        elif shape.max_tokens is not None and budget >= shape.max_tokens:
            yield Violation(
                "thinking.budget_tokens",
                f"budget_tokens {budget} must be less than max_tokens {shape.max_tokens}",
                "thinking",
            )


def _speed_and_geo(model: ModelInfo, shape: RequestShape, today: dt.date) -> Iterator[Violation]:
    if shape.speed not in (None, "standard", "fast"):
        yield Violation("speed", "speed must be 'standard' or 'fast'", "fast")
    elif shape.speed is not None and shape.batch:
        yield Violation(
            "speed", "speed is not accepted in batches (fast mode is sync only)", "fast"
        )
    elif shape.speed == "fast":
        if model.fast is None:
            yield Violation("speed", f"fast mode is not offered on {model.id}", "fast")
        elif not model.fast.offered_on(today):
            assert model.fast.until is not None
            yield Violation(
                "speed",
                f"fast mode on {model.id} was removed on {model.fast.until.isoformat()}",
                "fast",
            )
    geo = shape.inference_geo
    if geo is not None and geo not in INFERENCE_GEOS:
        yield Violation(
            "inference_geo",
            f"inference_geo '{geo}' is not offered (offered: {', '.join(INFERENCE_GEOS)})",
            "residency",
        )
    elif is_regional(geo) and not model.data_residency:
        yield Violation(
            "inference_geo",
            f"{model.id} does not offer data residency (inference_geo needs a 4.6 or later model)",
            "residency",
        )


def _output(model: ModelInfo, shape: RequestShape) -> Iterator[Violation]:
    caps = model.capabilities
    if shape.forced_tool and not caps.forced_tool_choice:
        yield Violation(
            "tool_choice",
            f"{model.id} does not accept a forced tool_choice; use structured outputs"
            " (output_config.format)",
            "forced_tool",
        )
    if shape.output_schema is not None:
        if not caps.structured_outputs:
            yield Violation(
                "output_config.format",
                f"{model.id} does not support structured outputs",
                "structured_output",
            )
        else:
            for problem in schema_problems(shape.output_schema):
                yield Violation("output_config.format.schema", problem, "structured_output")
    if shape.prefill and not caps.prefill:
        yield Violation(
            "messages",
            f"{model.id} does not accept prefill (a final assistant message)",
            "prefill",
        )


def _limits(model: ModelInfo, shape: RequestShape) -> Iterator[Violation]:
    limit = model.max_output_tokens
    if shape.max_tokens is not None:
        if shape.max_tokens > limit:
            yield Violation(
                "max_tokens",
                f"max_tokens {shape.max_tokens} > {limit}, the maximum output of {model.id}",
                "max_tokens",
            )
        if shape.batch and shape.max_tokens == 0:
            yield Violation("max_tokens", "max_tokens 0 is not accepted in batches", "batch")
    if shape.batch and shape.stream:
        yield Violation("stream", "stream is not accepted in batches", "batch")
    if shape.prompt_tokens is not None:
        total = shape.prompt_tokens + (shape.max_tokens or 0)
        if total > model.context_window:
            yield Violation(
                "messages",
                f"prompt is too long: {shape.prompt_tokens} tokens + max_tokens"
                f" {shape.max_tokens or 0} > {model.context_window}, the context window of"
                f" {model.id}",
                "context_window",
            )


def schema_problems(schema: Mapping[str, Any]) -> list[str]:
    """Why a JSON Schema is outside the structured-output limits (empty: it is within)."""
    problems: list[str] = []
    if schema.get("type") != "object":
        problems.append("the root of an output schema must be `type: object`")
    counts = {"optional": 0, "union": 0}
    _walk_schema(schema, "", problems, counts)
    if counts["optional"] > MAX_OPTIONAL_FIELDS:
        problems.append(
            f"{counts['optional']} optional properties; structured outputs allow at most"
            f" {MAX_OPTIONAL_FIELDS} (list them in `required`)"
        )
    if counts["union"] > MAX_UNION_FIELDS:
        problems.append(
            f"{counts['union']} union-typed fields (anyOf or a list of types); structured"
            f" outputs allow at most {MAX_UNION_FIELDS}"
        )
    return problems


def _walk_schema(node: Any, where: str, problems: list[str], counts: dict[str, int]) -> None:
    if isinstance(node, list):
        for i, child in enumerate(node):
            _walk_schema(child, f"{where}/{i}", problems, counts)
        return
    if not isinstance(node, Mapping):
        return
    at = where or "/"
    ref = node.get("$ref")
    if isinstance(ref, str) and (ref == "#" or where.startswith(ref.removeprefix("#") + "/")):
        problems.append(f"{at}: recursive schemas are not supported ($ref {ref})")
    for keyword in _UNSUPPORTED_KEYWORDS:
        if keyword in node:
            problems.append(f"{at}: `{keyword}` is not supported in structured outputs")
    extra = node.get("additionalProperties")
    if node.get("type") == "object" and extra is not False:
        problems.append(f"{at}: structured outputs need `additionalProperties: false`")
    if "anyOf" in node or isinstance(node.get("type"), list):
        counts["union"] += 1
    properties = node.get("properties")
    if isinstance(properties, Mapping):
        required = set(node.get("required") or ())
        counts["optional"] += sum(1 for name in properties if name not in required)
    for key, child in node.items():
        if isinstance(child, Mapping | list) and key not in ("enum", "const", "required"):
            _walk_schema(child, f"{where}/{key}", problems, counts)
    _check_def_cycles(node, at, problems)


def _check_def_cycles(node: Mapping[str, Any], at: str, problems: list[str]) -> None:
    defs = node.get("$defs") or node.get("definitions")
    if not isinstance(defs, Mapping):
        return
    prefix = "#/$defs/" if "$defs" in node else "#/definitions/"
    edges = {name: set(_refs_in(body, prefix)) for name, body in defs.items()}
    for start in edges:
        seen: set[str] = set()
        stack = list(edges[start])
        while stack:
            name = stack.pop()
            if name == start:
                problems.append(f"{at}: recursive schemas are not supported ({prefix}{start})")
                stack.clear()
            elif name not in seen and name in edges:
                seen.add(name)
                stack.extend(edges[name])


def _refs_in(node: Any, prefix: str) -> Iterator[str]:
    if isinstance(node, Mapping):
        ref = node.get("$ref")
        if isinstance(ref, str) and ref.startswith(prefix):
            yield ref.removeprefix(prefix)
        for child in node.values():
            yield from _refs_in(child, prefix)
    elif isinstance(node, list):
        for child in node:
            yield from _refs_in(child, prefix)


def strict_schema(schema: Mapping[str, Any]) -> dict[str, Any]:
    """``schema`` with ``additionalProperties: false`` on every object that lacks it
    (what structured outputs require); nothing else changes."""
    return _strict(schema)  # type: ignore[no-any-return]


def _strict(node: Any) -> Any:
    if isinstance(node, list):
        return [_strict(child) for child in node]
    if not isinstance(node, Mapping):
        return node
    out = {
        key: (child if key in ("enum", "const") else _strict(child)) for key, child in node.items()
    }
    if out.get("type") == "object" and "additionalProperties" not in out:
        out["additionalProperties"] = False
    return out
