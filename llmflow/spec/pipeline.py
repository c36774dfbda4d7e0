"""Pipeline files: inputs, and a DAG of LLM steps (pydantic models, unknown keys forbidden).

A pipeline names its inputs (text files, JSONL/CSV datasets streamed item by item,
scalars given with ``--input key=value``) and its steps. Each step has a task type the
policy routes to a tier, a system prompt as a list of blocks, and a Jinja2 prompt.
"""

from __future__ import annotations

import re
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from llmflow.spec.policy import RequestSettings

_IDENTIFIER = r"^[A-Za-z_][A-Za-z0-9_]*$"
_FOR_EACH = re.compile(r"^(inputs|steps)\.([A-Za-z_][A-Za-z0-9_]*)$")


class _Spec(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)


class TextInput(_Spec):
    """A whole text file, e.g. a product guide placed in a cacheable system block."""

    type: Literal["text"]
    path: str = Field(description="Path relative to the pipeline file.")
    description: str | None = None


class DatasetInput(_Spec):
    """A dataset read one item at a time (never loaded whole): JSONL objects or CSV rows."""

    type: Literal["jsonl", "csv"]
    path: str = Field(description="Path relative to the pipeline file.")
    description: str | None = None
    limit: int | None = Field(default=None, gt=0, description="Use only the first N items.")


class ScalarInput(_Spec):
    """A value given on the command line as ``--input key=value`` (or its default)."""

    type: Literal["scalar"]
    default: str | int | float | bool | None = None
    description: str | None = None


Input = Annotated[TextInput | DatasetInput | ScalarInput, Field(discriminator="type")]


class SystemBlock(_Spec):
    """One system block; ``cache: false`` keeps it out of every cached prefix."""

    text: str
    cache: bool = True


class Step(RequestSettings):
    """One LLM step: rendered once, or once per item of ``for_each``.

    ``effort``, ``thinking``, ``speed``, ``inference_geo`` and ``expected_thinking_tokens``
    override the route's.
    """

    task: str = Field(description="Task type; the policy routes it to a tier and a mode.")
    prompt: str = Field(description="Jinja2 template of the user message.")
    system: list[str | SystemBlock] = Field(
        default_factory=list,
        description="System blocks in order; static leading blocks form the cacheable prefix.",
    )
    needs: list[str] = Field(default_factory=list, description="Steps that must finish first.")
    for_each: str | None = Field(
        default=None,
        description="`inputs.<dataset>` or `steps.<step>`: one request per item.",
    )
    max_tokens: int | None = Field(
        default=None, gt=0, description="Caps output; overrides the route."
    )
    expected_output_tokens: int | None = Field(
        default=None, gt=0, description="Typical output length, for the expected cost."
    )
    deep_analysis: bool = Field(
        default=False, description="Opt in to routes gated with `requires: deep_analysis`."
    )
    flags: list[Annotated[str, Field(pattern=_IDENTIFIER)]] = Field(
        default_factory=list, description="Other gate flags this step satisfies."
    )
    output_schema: dict[str, Any] | None = Field(
        default=None,
        description=(
            "JSON Schema of a structured output (output_config.format, or a forced tool on"
            " models without structured outputs); outputs are parsed JSON."
        ),
    )
    temperature: float | None = Field(
        default=None, ge=0, le=1, description="Sampling temperature (models before Opus 4.7)."
    )
    top_p: float | None = Field(default=None, ge=0, le=1, description="Nucleus sampling.")
    top_k: int | None = Field(default=None, gt=0, description="Top-k sampling.")
    stream: bool = Field(default=False, description="Stream the response (needed for early abort).")
    abort_after_tokens: int | None = Field(
        default=None,
        gt=0,
        description="Stop a streamed response once output passes this many tokens.",
    )
    description: str | None = None

    @field_validator("for_each")
    @classmethod
    def _for_each_reference(cls, value: str | None) -> str | None:
        if value is not None and not _FOR_EACH.match(value):
            raise ValueError("must be `inputs.<dataset>` or `steps.<step>`")
        return value

    @property
    def active_flags(self) -> frozenset[str]:
        """Gate flags this step satisfies (``deep_analysis: true`` counts as one)."""
        flags = set(self.flags)
        if self.deep_analysis:
            flags.add("deep_analysis")
        return frozenset(flags)

    @property
    def system_blocks(self) -> list[SystemBlock]:
        """System entries normalised to blocks."""
        return [SystemBlock(text=b) if isinstance(b, str) else b for b in self.system]

    @property
    def for_each_source(self) -> tuple[Literal["inputs", "steps"], str] | None:
        """``("inputs", name)`` or ``("steps", id)`` for a fan-out step, else None."""
        if self.for_each is None:
            return None
        kind, name = self.for_each.split(".", 1)
        return ("inputs" if kind == "inputs" else "steps", name)


class Pipeline(_Spec):
    """A pipeline file: named inputs and a DAG of steps."""

    schema_: str | None = Field(default=None, alias="$schema", exclude=True)
    name: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
    description: str | None = None
    inputs: dict[Annotated[str, Field(pattern=_IDENTIFIER)], Input] = Field(default_factory=dict)
    steps: dict[Annotated[str, Field(pattern=_IDENTIFIER)], Step] = Field(min_length=1)
