"""The plan (``llmflow plan --format json``): a stable contract.

Money is a decimal string in USD, token counts are integers. ``Plan.to_json()`` is
deterministic: the same inputs give byte-identical text.
"""

from __future__ import annotations

import json
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field

Money = Annotated[str, Field(pattern=r"^-?\d+(\.\d+)?$", description="USD, decimal string")]


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class CachePlan(_Model):
    """Prompt caching of a step's shared prefix."""

    enabled: bool
    ttl: Literal["5m", "1h"] | None
    breakpoints: int = Field(ge=0, le=4)
    prefix_tokens: int = Field(ge=0)
    expected_writes: int = Field(ge=0)
    expected_reads: int = Field(ge=0)


class TokenPlan(_Model):
    """Expected tokens of a step; ``input`` is the uncached remainder."""

    input: int = Field(ge=0)
    cache_write: int = Field(ge=0)
    cache_read: int = Field(ge=0)
    output_expected: int = Field(ge=0, description="Answer and thinking tokens.")
    thinking_expected: int = Field(ge=0, description="The thinking part of output_expected.")
    output_max: int = Field(ge=0)


class CostPlan(_Model):
    """Expected cost, true upper bound, and the naive baseline."""

    expected: Money
    max: Money
    baseline: Money


class StepPlan(_Model):
    """One step as it will run."""

    id: str
    task: str
    tier: str
    model: str
    mode: Literal["sync", "batch"]
    effort: str | None = Field(description="The effort requests run at (None: no effort).")
    thinking: Literal["off", "adaptive", "enabled"]
    speed: Literal["standard", "fast"] | None = None
    inference_geo: str | None = None
    requests: int = Field(ge=0)
    max_tokens: int = Field(gt=0)
    cache: CachePlan
    tokens: TokenPlan
    cost: CostPlan
    notes: list[str]


class TotalPlan(_Model):
    """Totals over every step."""

    cost_expected: Money
    cost_max: Money
    cost_baseline: Money
    savings_pct: Money


class LimitPlan(_Model):
    """One budget limit that applies: ``spent`` (with money possibly billed but
    unrecorded) and ``reserved`` (in flight now) in its current period."""

    name: str
    key: str
    limit: Money
    spent: Money
    reserved: Money
    resets_at: str | None


class BudgetPlan(_Model):
    """Whether the plan fits what every limit has left (no limit always fits)."""

    limits: list[LimitPlan]
    fits_expected: bool
    fits_max: bool


class Plan(_Model):
    """The execution plan of a pipeline under a policy."""

    pipeline: str
    policy: str
    currency: Literal["USD"] = "USD"
    waves: list[list[str]]
    steps: list[StepPlan]
    total: TotalPlan
    budget: BudgetPlan

    def to_json(self) -> str:
        """The plan as indented JSON, keys in contract order, newline-terminated."""
        return json.dumps(self.model_dump(mode="json"), indent=2, ensure_ascii=False) + "\n"

    def step(self, step_id: str) -> StepPlan:
        """The plan of one step."""
        for step in self.steps:
            if step.id == step_id:
                return step
        raise KeyError(step_id)


def plan_json_schema() -> dict[str, Any]:
    """JSON Schema of the plan JSON."""
    return Plan.model_json_schema()
