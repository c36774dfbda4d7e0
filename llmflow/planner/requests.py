"""The exact Messages API request of a step: built here for the plan and for the run.

The executor calls :meth:`RequestTemplate.params` with the same context the planner
sized, so a planned request and a sent one are identical: model, system blocks with
``cache_control`` at the planned breakpoints, one user message, ``max_tokens``, and for
steps with an ``output_schema`` a forced tool ``emit_output``.

Context of a template: ``inputs`` (:func:`inputs_namespace`), ``steps``
(:func:`steps_namespace`) and, in ``for_each`` steps, ``item``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final, Literal

from llmflow.spec.loader import PipelineFile, scalar_values
from llmflow.spec.pipeline import Step, TextInput
from llmflow.spec.templates import render

Ttl = Literal["5m", "1h"]

OUTPUT_TOOL_NAME: Final = "emit_output"
OUTPUT_TOOL_DESCRIPTION: Final = "Emit the step's output as structured data."
#: Params the count_tokens endpoint refuses; :func:`count_params` drops them.
_NOT_COUNTED: Final = ("max_tokens", "stream", "stop_sequences", "temperature")


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


def output_tool(schema: Mapping[str, Any]) -> dict[str, Any]:
    """The forced tool through which a structured step returns its output."""
    return {
        "name": OUTPUT_TOOL_NAME,
        "description": OUTPUT_TOOL_DESCRIPTION,
        "input_schema": dict(schema),
    }


def _cache_control(ttl: Ttl) -> dict[str, str]:
    return {"type": "ephemeral", "ttl": ttl}


def build_params(
    *,
    model: str,
    max_tokens: int,
    system: Sequence[str],
    prompt: str,
    output_schema: Mapping[str, Any] | None = None,
    temperature: float | None = None,
    cache: CacheMarks | None = None,
) -> dict[str, Any]:
    """The request body of ``POST /v1/messages`` (without ``stream``).

    ``temperature`` is part of the body; with SDK 2.10.0 pass it via ``extra_body``.
    """
    params: dict[str, Any] = {"model": model, "max_tokens": max_tokens}
    if output_schema is not None:
        tool = output_tool(output_schema)
        if cache is not None and cache.tool:
            tool["cache_control"] = _cache_control(cache.ttl)
        params["tools"] = [tool]
        params["tool_choice"] = {"type": "tool", "name": OUTPUT_TOOL_NAME}
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
    if temperature is not None:
        params["temperature"] = temperature
    return params


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
    output_schema: Mapping[str, Any] | None = None
    temperature: float | None = None
    cache: CacheMarks | None = None

    @classmethod
    def for_step(
        cls,
        step_id: str,
        step: Step,
        *,
        model: str,
        max_tokens: int,
        cache: CacheMarks | None = None,
    ) -> RequestTemplate:
        """The template of ``step`` on ``model``."""
        return cls(
            step_id=step_id,
            model=model,
            max_tokens=max_tokens,
            system=tuple(block.text for block in step.system_blocks),
            prompt=step.prompt,
            output_schema=step.output_schema,
            temperature=step.temperature,
            cache=cache,
        )

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
            output_schema=self.output_schema,
            temperature=self.temperature,
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
