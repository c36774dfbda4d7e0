"""The exact Messages API request of a step: built here for the plan and for the run.

The executor calls :meth:`RequestTemplate.params` with the same context the planner
sized, so a planned request and a sent one are identical: model, system blocks with
``cache_control`` at the planned breakpoints, one user message, ``max_tokens``, and the
step's request settings (effort, thinking, speed, inference_geo, sampling). A step with
an ``output_schema`` asks for structured output through ``output_config.format`` on
models that support it, else through a forced tool ``emit_output``.

Context of a template: ``inputs`` (:func:`inputs_namespace`), ``steps``
(:func:`steps_namespace`) and, in ``for_each`` steps, ``item``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, Final, Literal

from llmflow.catalog import ModelInfo
from llmflow.catalog.rules import SAMPLING_PARAMS, strict_schema
from llmflow.spec.loader import PipelineFile, scalar_values
from llmflow.spec.pipeline import Step, TextInput
from llmflow.spec.policy import ThinkingConfig
from llmflow.spec.routing import RouteDecision
from llmflow.spec.templates import render

Ttl = Literal["5m", "1h"]
StructuredVia = Literal["format", "tool"]

OUTPUT_TOOL_NAME: Final = "emit_output"
OUTPUT_TOOL_DESCRIPTION: Final = "Emit the step's output as structured data."
#: Params the count_tokens endpoint refuses; :func:`count_params` drops them.
_NOT_COUNTED: Final = ("max_tokens", "stream", "stop_sequences", "inference_geo", *SAMPLING_PARAMS)


@dataclass(frozen=True, slots=True)
class CacheMarks:
    """Where a step's requests carry ``cache_control``: the tool and/or system indices.

    ``system`` indexes the step's ``system`` list as written (empty blocks are skipped
    when sent, never marked).
    """

    ttl: Ttl
    tool: bool = False
    system: tuple[int, ...] = ()

    @property
    def breakpoints(self) -> int:
        """How many breakpoints a request carries (at most 4)."""
        return int(self.tool) + len(self.system)


@dataclass(frozen=True, slots=True)
class RequestOptions:
    """A request's settings besides its text (unset: the model's default)."""

    output_schema: Mapping[str, Any] | None = None
    structured_via: StructuredVia = "format"
    effort: str | None = None
    thinking: ThinkingConfig | None = None
    speed: str | None = None
    inference_geo: str | None = None
    sampling: tuple[tuple[str, float], ...] = ()

    @classmethod
    def of(cls, step: Step, route: RouteDecision, model: ModelInfo) -> RequestOptions:
        """The options of ``step`` routed by ``route`` onto ``model``."""
        sampling = tuple(
            (name, value) for name in SAMPLING_PARAMS if (value := getattr(step, name)) is not None
        )
        return cls(
            output_schema=step.output_schema,
            structured_via=structured_via(model),
            effort=route.effort,
            thinking=route.thinking,
            speed=route.speed,
            inference_geo=route.inference_geo,
            sampling=sampling,
        )


def structured_via(model: ModelInfo) -> StructuredVia:
    """How ``model`` is asked for structured output: ``output_config.format`` or a tool."""
    return "format" if model.capabilities.structured_outputs else "tool"


def output_tool(schema: Mapping[str, Any]) -> dict[str, Any]:
    """The forced tool through which a structured step returns its output (models
    without structured outputs)."""
    return {
        "name": OUTPUT_TOOL_NAME,
        "description": OUTPUT_TOOL_DESCRIPTION,
        "input_schema": dict(schema),
    }


def output_format(schema: Mapping[str, Any]) -> dict[str, Any]:
    """``output_config.format`` of a structured step (objects closed, as required)."""
    return {"type": "json_schema", "schema": strict_schema(schema)}


def _cache_control(ttl: Ttl) -> dict[str, str]:
    return {"type": "ephemeral", "ttl": ttl}


def build_params(
    *,
    model: str,
    max_tokens: int,
    system: Sequence[str],
    prompt: str,
    options: RequestOptions | None = None,
    cache: CacheMarks | None = None,
) -> dict[str, Any]:
    """The request body of ``POST /v1/messages`` (without ``stream``).

    Sampling parameters are part of the body; SDK 2.10.0 has no arguments for them, so
    the executor passes them via ``extra_body`` (see :func:`split_sdk_params`).
    """
    options = options or RequestOptions()
    params: dict[str, Any] = {"model": model, "max_tokens": max_tokens}
    config: dict[str, Any] = {}
    schema = options.output_schema
    if schema is not None and options.structured_via == "tool":
        tool = output_tool(schema)
        if cache is not None and cache.tool:
            tool["cache_control"] = _cache_control(cache.ttl)
        params["tools"] = [tool]
        params["tool_choice"] = {"type": "tool", "name": OUTPUT_TOOL_NAME}
    elif schema is not None:
        config["format"] = output_format(schema)
    blocks: list[dict[str, Any]] = []
    for index, text in enumerate(system):
        if not text:
            continue
        block: dict[str, Any] = {"type": "text", "text": text}
        if cache is not None and index in cache.system:
            block["cache_control"] = _cache_control(cache.ttl)
        blocks.append(block)
    if blocks:
        params["system"] = blocks
    params["messages"] = [{"role": "user", "content": [{"type": "text", "text": prompt}]}]
    if options.effort is not None:
        config["effort"] = options.effort
    if config:
        params["output_config"] = config
    if options.thinking is not None:
        params["thinking"] = options.thinking.model_dump(exclude_none=True)
    if options.speed is not None:
        params["speed"] = options.speed
    if options.inference_geo is not None:
        params["inference_geo"] = options.inference_geo
    params.update(options.sampling)
    return params


def split_sdk_params(params: Mapping[str, Any]) -> tuple[dict[str, Any], dict[str, Any] | None]:
    """``params`` as SDK arguments, and the ``extra_body`` for what the SDK has no
    argument for (sampling parameters, on the models that still accept them)."""
    extra = {k: params[k] for k in SAMPLING_PARAMS if k in params}
    sdk = {k: v for k, v in params.items() if k not in SAMPLING_PARAMS}
    return sdk, extra or None


def retarget(params: Mapping[str, Any], model: ModelInfo) -> dict[str, Any]:
    """A rendered request moved onto ``model`` (a downgrade): structured output is asked
    for the way ``model`` accepts it; everything else is unchanged."""
    moved = {**params, "model": model.id}
    config = dict(moved.get("output_config") or {})
    tools = moved.get("tools") or []
    via = structured_via(model)
    if via == "tool" and "format" in config:
        moved["tools"] = [output_tool(config.pop("format")["schema"])]
        moved["tool_choice"] = {"type": "tool", "name": OUTPUT_TOOL_NAME}
    elif via == "format" and any(t.get("name") == OUTPUT_TOOL_NAME for t in tools):
        tool = next(t for t in tools if t.get("name") == OUTPUT_TOOL_NAME)
        config["format"] = output_format(tool["input_schema"])
        del moved["tools"], moved["tool_choice"]
    if config:
        moved["output_config"] = config
    else:
        moved.pop("output_config", None)
    return moved


def count_params(params: Mapping[str, Any]) -> dict[str, Any]:
    """``params`` as the count_tokens endpoint accepts them."""
    return {k: v for k, v in params.items() if k not in _NOT_COUNTED}


@dataclass(frozen=True, slots=True)
class RequestTemplate:
    """Everything fixed about a step's requests; :meth:`params` renders one request."""

    step_id: str
    model: str
    max_tokens: int
    system: tuple[str, ...]
    prompt: str
    options: RequestOptions = field(default_factory=RequestOptions)
    cache: CacheMarks | None = None

    @classmethod
    def for_step(
        cls,
        step_id: str,
        step: Step,
        *,
        model: ModelInfo,
        route: RouteDecision,
        max_tokens: int,
        cache: CacheMarks | None = None,
    ) -> RequestTemplate:
        """The template of ``step`` on ``model``."""
        return cls(
            step_id=step_id,
            model=model.id,
            max_tokens=max_tokens,
            system=tuple(block.text for block in step.system_blocks),
            prompt=step.prompt,
            options=RequestOptions.of(step, route, model),
            cache=cache,
        )

    @property
    def structured(self) -> StructuredVia | None:
        """How outputs come back: ``format`` (JSON text), ``tool`` (tool input) or None."""
        return None if self.options.output_schema is None else self.options.structured_via

    def on_model(self, model: ModelInfo) -> RequestTemplate:
        """The same requests sent to ``model`` (a downgrade): the way structured output
        is asked for follows the model; a tool breakpoint moves to the system blocks'."""
        options = replace(self.options, structured_via=structured_via(model))
        cache = self.cache
        if cache is not None and cache.tool and options.structured_via != "tool":
            cache = replace(cache, tool=False) if cache.system else None
        return replace(self, model=model.id, options=options, cache=cache)

    def render_texts(self, context: Mapping[str, Any]) -> tuple[list[str], str]:
        """The rendered system blocks and prompt."""
        return [render(s, context) for s in self.system], render(self.prompt, context)

    def params(self, context: Mapping[str, Any]) -> dict[str, Any]:
        """The exact request for one context (one item of a ``for_each`` step)."""
        system, prompt = self.render_texts(context)
        return build_params(
            model=self.model,
            max_tokens=self.max_tokens,
            system=system,
            prompt=prompt,
            options=self.options,
            cache=self.cache,
        )


def inputs_namespace(pipeline_file: PipelineFile, given: Mapping[str, str]) -> dict[str, Any]:
    """``inputs`` of the template context: text file contents and scalar values."""
    values: dict[str, Any] = dict(scalar_values(pipeline_file, given))
    for name, spec in pipeline_file.pipeline.inputs.items():
        if isinstance(spec, TextInput):
            values[name] = pipeline_file.input_path(name).read_text(encoding="utf-8")
    return dict(sorted(values.items()))


def steps_namespace(outputs: Mapping[str, Sequence[Any]]) -> dict[str, dict[str, Any]]:
    """``steps`` of the template context from each finished step's outputs in order.

    ``steps.<id>.outputs`` is the list; ``steps.<id>.output`` its single (first) output.
    """
    return {
        step_id: {"outputs": list(values), "output": values[0] if values else None}
        for step_id, values in outputs.items()
    }
