"""Policy files: which tier and mode each task type gets, caching, budget, limits.

A policy is edited without code changes: tiers name catalog models (and may override
their prices), routes map task types to tiers, and the budget bounds what a run spends.
"""

from __future__ import annotations

from decimal import Decimal
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field

_IDENTIFIER = r"^[A-Za-z_][A-Za-z0-9_]*$"

Effort = Literal["low", "medium", "high", "xhigh", "max"]
Speed = Literal["standard", "fast"]


class ThinkingConfig(BaseModel):
    """``thinking: {type: enabled, budget_tokens: N}`` (or adaptive/disabled with a display)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    type: Literal["adaptive", "enabled", "disabled", "between_tools"]
    budget_tokens: int | None = Field(default=None, gt=0)
    display: Literal["summarized", "omitted"] | None = None


Thinking = Literal["adaptive", "disabled", "between_tools"] | ThinkingConfig


class RequestSettings(BaseModel):
    """Settings sent with every request of a route or step (unset: the model's default)."""

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)

    effort: Effort | None = Field(
        default=None, description="output_config.effort: how hard the model works (and thinks)."
    )
    thinking: Thinking | None = Field(
        default=None,
        description="adaptive | disabled | between_tools, or {type: enabled, budget_tokens: N}.",
    )
    speed: Speed | None = Field(default=None, description="fast: fast mode (dearer; sync only).")
    inference_geo: str | None = Field(
        default=None, description="Data residency, e.g. `us` (1.1x on every category)."
    )
    expected_thinking_tokens: int | None = Field(
        default=None, ge=0, description="Expected thinking per request (else the estimate)."
    )


class _Spec(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)


class Tier(_Spec):
    """A tier names a catalog model; any catalog field may be overridden here."""

    model: str = Field(description="Model id from the catalog (`llmflow schema` lists them).")
    requires: str | None = Field(
        default=None, description="Gate: only steps with this flag may use this tier."
    )
    input_usd_per_mtok: Decimal | None = Field(default=None, ge=0)
    output_usd_per_mtok: Decimal | None = Field(default=None, ge=0)
    cache_write_5m_multiplier: Decimal | None = Field(default=None, ge=0)
    cache_write_1h_multiplier: Decimal | None = Field(default=None, ge=0)
    cache_read_multiplier: Decimal | None = Field(default=None, ge=0)
    batch_multiplier: Decimal | None = Field(default=None, ge=0)
    min_cacheable_tokens: int | None = Field(default=None, ge=0)
    context_window: int | None = Field(default=None, gt=0)
    max_output_tokens: int | None = Field(default=None, gt=0)


class Route(RequestSettings):
    """How one task type runs. Unset fields fall back to ``default_route``."""

    tier: str | None = None
    mode: Literal["sync", "batch"] | None = None
    max_tokens: int | None = Field(default=None, gt=0)
    expected_output_tokens: int | None = Field(default=None, gt=0)
    requires: str | None = Field(
        default=None, description="Gate: the step must set this flag (e.g. deep_analysis)."
    )
    fallback_tier: str | None = Field(
        default=None, description="Tier used when the gate is not satisfied (else it is an error)."
    )
    downgrade_to: str | None = Field(
        default=None, description="Cheaper tier for `on_exceed: downgrade`; unset forbids it."
    )


class DefaultRoute(Route):
    """The route of task types without their own; its unset fields have defaults."""

    tier: str | None = None
    mode: Literal["sync", "batch"] | None = "sync"
    max_tokens: int | None = Field(default=1024, gt=0)
    expected_output_tokens: int | None = Field(default=None, gt=0)


class CachePolicy(_Spec):
    """Prompt caching: placement is a cost decision made by the planner."""

    enabled: bool = True
    ttl: Literal["auto", "5m", "1h"] = "auto"
    batch_hit_rate: Decimal = Field(
        default=Decimal("0.5"), ge=0, le=1, description="Expected cache hit rate inside batches."
    )
    min_hit_ratio_warning: Decimal = Field(
        default=Decimal("0.3"), ge=0, le=1, description="Report warns below this hit ratio."
    )


class BudgetPolicy(_Spec):
    """Spend limits in USD. A dispatch that could cross a limit is refused."""

    per_run_usd: Decimal | None = Field(default=None, gt=0)
    per_day_usd: Decimal | None = Field(default=None, gt=0)
    per_month_usd: Decimal | None = Field(default=None, gt=0)
    alert_at: Decimal = Field(default=Decimal("0.8"), gt=0, le=1)
    on_exceed: Literal["stop", "downgrade"] = "stop"
    scope_tag: str | None = Field(
        default=None,
        description=(
            "Period budgets count every run whose policy carries the same value of this tag"
            " (e.g. team); unset: every run of the same pipeline."
        ),
    )


class Limits(_Spec):
    """Concurrency, retries and batch polling."""

    max_concurrency: int = Field(default=8, gt=0, description="Requests in flight per run.")
    max_attempts: int = Field(default=4, gt=0, description="Attempts per sync request.")
    batch_attempts: int = Field(default=2, gt=0, description="Submissions per batch request.")
    batch_chunk_requests: int = Field(
        default=10_000,
        gt=0,
        le=100_000,
        description="Requests per Message Batch (the API allows 100,000): smaller chunks"
        " bound memory; every chunk is billed at the same batch rate.",
    )
    batch_poll_seconds: float = Field(default=30.0, gt=0)
    batch_poll_max_seconds: float = Field(default=300.0, gt=0)


class Policy(_Spec):
    """A policy file."""

    schema_: str | None = Field(default=None, alias="$schema", exclude=True)
    name: str
    description: str | None = None
    tiers: dict[Annotated[str, Field(pattern=_IDENTIFIER)], Tier] = Field(min_length=1)
    routes: dict[Annotated[str, Field(pattern=_IDENTIFIER)], Route] = Field(default_factory=dict)
    default_route: DefaultRoute | None = None
    default_expected_output_tokens: int = Field(
        default=256, gt=0, description="Expected output when neither step nor route says."
    )
    cache: CachePolicy = Field(default_factory=CachePolicy)
    budget: BudgetPolicy = Field(default_factory=BudgetPolicy)
    baseline_tier: str = "sonnet"
    limits: Limits = Field(default_factory=Limits)
    tags: dict[str, str] = Field(default_factory=dict, description="Labels, e.g. team: support.")
