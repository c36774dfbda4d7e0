"""The part of a step's prompt known before any item is read, for the context-window check.

Each system block and the prompt is rendered with the pipeline's text inputs and scalar
values; ``item`` and ``steps`` render as empty, so what is counted is what every request
of the step carries at least. A template that cannot render that way (it computes with
an item's value) counts as its source text.

:class:`StaticPrompts` does this for every step of a pipeline: each distinct template is
rendered once and each distinct text estimated once per tokenizer (steps share system
blocks, such as a long guide).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from jinja2 import ChainableUndefined, TemplateError

from llmflow.catalog import ModelInfo
from llmflow.planner.requests import inputs_namespace
from llmflow.planner.tokens import estimate_text
from llmflow.spec._yaml import NodePath
from llmflow.spec.loader import PipelineFile
from llmflow.spec.pipeline import Step
from llmflow.spec.templates import render


@dataclass(frozen=True, slots=True)
class StaticPrompt:
    """A step's system blocks and prompt as far as they are known, each with its node."""

    parts: tuple[tuple[NodePath, str], ...]
    output_schema: str | None = None
    #: ``estimate_text(text, tokenizer)``, or a memo of it shared by a pipeline's steps.
    estimate: Callable[[str, str], int] = field(default=estimate_text, compare=False, repr=False)

    def tokens(self, model: ModelInfo) -> int:
        """Estimated input tokens on ``model``: the texts, the schema and the system
        prompt the API adds for structured output (counted with the model's tokenizer)."""
        total = sum(self.estimate(text, model.tokenizer) for _, text in self.parts)
        if self.output_schema is not None:
            total += self.estimate(self.output_schema, model.tokenizer)
            injected = model.injected_prompt_tokens
            if model.capabilities.structured_outputs:
                total += injected.structured_output
            else:
                total += injected.forced_tool
        return total

    def largest(self, model: ModelInfo) -> NodePath:
        """The node of the part with the most tokens (where a too-long prompt is reported)."""
        return max(self.parts, key=lambda p: self.estimate(p[1], model.tokenizer))[0]


def text_inputs(pipeline_file: PipelineFile, given: Mapping[str, str]) -> dict[str, Any] | None:
    """``inputs`` of the template context (None when a text input cannot be read: the
    loader reports that file on its own)."""
    try:
        return inputs_namespace(pipeline_file, given)
    except (OSError, UnicodeDecodeError):
        return None


def static_prompt(step_id: str, step: Step, inputs: Mapping[str, Any]) -> StaticPrompt:
    """What ``step`` sends on every request, with ``inputs`` as the template context."""
    return StaticPrompts(inputs).of(step_id, step)


class StaticPrompts:
    """The static prompts of a pipeline's steps, all with ``inputs`` as the context:
    each distinct template rendered once, each distinct text estimated once per
    tokenizer."""

    def __init__(self, inputs: Mapping[str, Any]) -> None:
        self.inputs = inputs
        self._texts: dict[str, str] = {}
        self._tokens: dict[tuple[str, str], int] = {}

    def of(self, step_id: str, step: Step) -> StaticPrompt:
        """What ``step`` sends on every request."""
        base: NodePath = ("steps", step_id)
        parts: list[tuple[NodePath, str]] = []
        for index, entry in enumerate(step.system):
            node: NodePath = (*base, "system", index)
            if isinstance(entry, str):
                parts.append((node, self.text(entry)))
            else:
                parts.append(((*node, "text"), self.text(entry.text)))
        parts.append(((*base, "prompt"), self.text(step.prompt)))
        schema = json.dumps(step.output_schema) if step.output_schema is not None else None
        return StaticPrompt(tuple(parts), schema, self.estimate)

    def text(self, source: str) -> str:
        """``source`` rendered (once)."""
        text = self._texts.get(source)
        if text is None:
            text = self._texts[source] = _rendered(source, self.inputs)
        return text

    def estimate(self, text: str, tokenizer: str) -> int:
        """``estimate_text(text, tokenizer)`` (once per text and tokenizer)."""
        key = (text, tokenizer)
        tokens = self._tokens.get(key)
        if tokens is None:
            tokens = self._tokens[key] = estimate_text(text, tokenizer=tokenizer)
        return tokens


def _rendered(source: str, inputs: Mapping[str, Any]) -> str:
    context = {
        "inputs": inputs,
        "item": ChainableUndefined(name="item"),
        "steps": ChainableUndefined(name="steps"),
    }
    try:
        return render(source, context)
    except (TemplateError, TypeError, ValueError, ArithmeticError, LookupError):
        return source
