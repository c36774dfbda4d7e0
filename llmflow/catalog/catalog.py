"""The model catalog: ids, lifecycle, prices, limits and capabilities, shipped as package data.

``load_catalog()`` reads ``models.yaml`` once (its parse is cached beside the bytecode);
a policy overrides any price or limit per tier with :meth:`ModelInfo.overridden`. What a
model accepts on a request (sampling, thinking, effort, fast mode, ...) is in
:class:`Capabilities`; the rules that read it live in :mod:`llmflow.catalog.rules`.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from decimal import Decimal
from functools import cache, cached_property
from importlib import resources
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, PrivateAttr

from llmflow.catalog.yaml_cache import load_yaml_cached

Status = Literal["latest", "active", "legacy", "deprecated", "retired"]
Lifecycle = Literal["active", "deprecated", "retired"]
Effort = Literal["low", "medium", "high", "xhigh", "max"]
ThinkingType = Literal["adaptive", "enabled", "disabled", "between_tools"]
ThinkingDefault = Literal["off", "on", "always"]
Tokenizer = Literal["old", "new"]

EFFORT_LEVELS: tuple[Effort, ...] = ("low", "medium", "high", "xhigh", "max")

#: Fields of :class:`ModelInfo` a policy may override per tier.
OVERRIDABLE_FIELDS = (
    "input_usd_per_mtok",
    "output_usd_per_mtok",
    "cache_write_5m_multiplier",
    "cache_write_1h_multiplier",
    "cache_read_multiplier",
    "batch_multiplier",
    "residency_multiplier",
    "min_cacheable_tokens",
    "context_window",
    "max_output_tokens",
)


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class Capabilities(_Frozen):
    """What a model accepts on a request, and its defaults."""

    sampling: bool = Field(description="temperature, top_p and top_k are accepted.")
    forced_tool_choice: bool = Field(description="tool_choice `any` or `tool` is accepted.")
    structured_outputs: bool = Field(description="output_config.format is accepted.")
    prefill: bool = Field(description="A final assistant turn is accepted.")
    batch: bool = True
    thinking_types: tuple[ThinkingType, ...]
    thinking_default: ThinkingDefault = Field(
        description="off: no thinking unless asked; on: adaptive unless disabled; always."
    )
    thinking_disabled_efforts: tuple[Effort, ...] | None = Field(
        default=None, description="Efforts at which `disabled` is accepted (None: any)."
    )
    thinking_between_tools_efforts: tuple[Effort, ...] | None = None
    effort_levels: tuple[Effort, ...] = ()
    effort_default: Effort | None = None


class PriceBand(_Frozen):
    """Prices of a request whose prompt exceeds ``above_prompt_tokens`` (every category)."""

    above_prompt_tokens: int = Field(gt=0)
    input_usd_per_mtok: Decimal = Field(ge=0)
    output_usd_per_mtok: Decimal = Field(ge=0)


class FastMode(_Frozen):
    """``speed: fast`` prices; offered until ``until`` (exclusive) when set."""

    input_usd_per_mtok: Decimal = Field(ge=0)
    output_usd_per_mtok: Decimal = Field(ge=0)
    until: dt.date | None = None

    def offered_on(self, day: dt.date) -> bool:
        """Whether fast mode is still offered on ``day``."""
        return self.until is None or day < self.until


class InjectedPrompt(_Frozen):
    """Input tokens the API adds as a system prompt (billed as input)."""

    tools: int = Field(ge=0, description="With tools and tool_choice auto or none.")
    forced_tool: int = Field(ge=0, description="With tool_choice any or tool.")
    structured_output: int = Field(ge=0, description="With output_config.format.")


class Prices(_Frozen):
    """USD per million tokens of each billing category."""

    input: Decimal
    output: Decimal
    cache_write_5m: Decimal
    cache_write_1h: Decimal
    cache_read: Decimal


class ModelInfo(_Frozen):
    """Everything llmflow knows about one model, prices in USD per million tokens."""

    id: str
    display_name: str
    line: str
    status: Status
    released: dt.date | None = None
    retires_at: dt.date | None = None
    replacement: str | None = None
    aliases: tuple[str, ...] = ()
    input_usd_per_mtok: Decimal = Field(ge=0)
    output_usd_per_mtok: Decimal = Field(ge=0)
    cache_write_5m_multiplier: Decimal = Field(ge=0)
    cache_write_1h_multiplier: Decimal = Field(ge=0)
    cache_read_multiplier: Decimal = Field(ge=0)
    batch_multiplier: Decimal = Field(ge=0)
    residency_multiplier: Decimal = Field(ge=0)
    bands: tuple[PriceBand, ...] = ()
    fast: FastMode | None = None
    data_residency: bool
    min_cacheable_tokens: int = Field(ge=0)
    context_window: int = Field(gt=0)
    max_output_tokens: int = Field(gt=0)
    batch_max_output_tokens: int = Field(gt=0)
    tokenizer: Tokenizer
    injected_prompt_tokens: InjectedPrompt
    thinking_estimates: dict[Effort, int]
    capabilities: Capabilities
    priced_on: dt.date
    price_source: str
    third_party: tuple[str, ...] = ()
    assumed: tuple[str, ...] = ()
    notes: tuple[str, ...] = ()
    _prices: dict[tuple[bool, PriceBand | None], Prices] = PrivateAttr(default_factory=dict)

    @property
    def family(self) -> str:
        """The model line (haiku, sonnet, opus, fable)."""
        return self.line

    @property
    def lifecycle(self) -> Lifecycle:
        """The Models API lifecycle: latest, active and legacy models are all ``active``."""
        if self.status in ("deprecated", "retired"):
            return self.status
        return "active"

    def prices(self, *, prompt_tokens: int = 0, speed: str = "standard") -> Prices:
        """Per-category prices of one request with this prompt size and speed."""
        fast = speed == "fast" and self.fast is not None
        band = None if fast else self.band(prompt_tokens)
        key = (fast, band)
        found = self._prices.get(key)
        if found is None:
            found = self._prices[key] = self._priced(fast, band)
        return found

    def _priced(self, fast: bool, band: PriceBand | None) -> Prices:
        p, q = self.input_usd_per_mtok, self.output_usd_per_mtok
        if fast and self.fast is not None:
            p, q = self.fast.input_usd_per_mtok, self.fast.output_usd_per_mtok
        elif band is not None:
            p, q = band.input_usd_per_mtok, band.output_usd_per_mtok
        return Prices(
            input=p,
            output=q,
            cache_write_5m=p * self.cache_write_5m_multiplier,
            cache_write_1h=p * self.cache_write_1h_multiplier,
            cache_read=p * self.cache_read_multiplier,
        )

    def band(self, prompt_tokens: int) -> PriceBand | None:
        """The price band a request with this many prompt tokens falls in (None: base)."""
        found = None
        for band in self.bands:
            if prompt_tokens > band.above_prompt_tokens:
                found = band
        return found

    def thinking_estimate(self, effort: str | None) -> int:
        """llmflow's estimate of thinking tokens per request at ``effort`` (an estimate)."""
        level = effort or self.capabilities.effort_default or "high"
        return next((n for e, n in self.thinking_estimates.items() if e == level), 0)

    def overridden(self, overrides: Mapping[str, Any]) -> ModelInfo:
        """A copy with the given fields replaced (validated like the catalog's own)."""
        unknown = set(overrides) - set(OVERRIDABLE_FIELDS)
        if unknown:
            raise KeyError(f"not overridable: {', '.join(sorted(unknown))}")
        data = self.model_dump()
        data.update({k: v for k, v in overrides.items() if v is not None})
        return ModelInfo.model_validate(data)


class Catalog(BaseModel):
    """The set of known models, the date the catalog was compiled, and its sources."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    catalog_date: dt.date
    sources: dict[str, str]
    models: dict[str, ModelInfo]

    @property
    def prices_read_on(self) -> str:
        """The date the catalog's prices were read (ISO)."""
        return self.catalog_date.isoformat()

    def get(self, model_id: str) -> ModelInfo | None:
        """The model with this id or one of its dated aliases (``...-20251001``)."""
        found = self.models.get(model_id)
        if found is None:
            found = self.alias_map.get(model_id)
        return found

    def resolve(self, model_id: str, overrides: Mapping[str, Any]) -> ModelInfo | None:
        """The model with a policy tier's overrides applied (unset ones, and keys that are
        not overridable such as ``model``, are ignored); None for an unknown model."""
        info = self.get(model_id)
        if info is None:
            return None
        changed = {f: overrides[f] for f in OVERRIDABLE_FIELDS if overrides.get(f) is not None}
        return info.overridden(changed) if changed else info

    def ids(self, *, with_aliases: bool = False) -> list[str]:
        """Known model ids, sorted (dated aliases too when asked)."""
        ids = set(self.models)
        if with_aliases:
            ids |= set(self.alias_map)
        return sorted(ids)

    @cached_property
    def alias_map(self) -> dict[str, ModelInfo]:
        """Dated alias → its model."""
        return {alias: info for info in self.models.values() for alias in info.aliases}

    def source(self, key: str) -> str:
        """The source named ``key`` in the catalog's ``sources``."""
        return self.sources.get(key, key)


def _merged(defaults: Mapping[str, Any], fields: Mapping[str, Any]) -> dict[str, Any]:
    merged = {**defaults, **fields}
    merged["capabilities"] = {**defaults["capabilities"], **fields.get("capabilities", {})}
    return merged


@cache
def load_catalog() -> Catalog:
    """The catalog shipped with the package (read once per process; the parse of its YAML
    is cached, :mod:`llmflow.catalog.yaml_cache`)."""
    raw = load_yaml_cached(resources.files("llmflow.catalog").joinpath("models.yaml"))
    defaults: dict[str, Any] = dict(raw["defaults"])
    models = {
        model_id: ModelInfo.model_validate({**_merged(defaults, fields), "id": model_id})
        for model_id, fields in raw["models"].items()
    }
    return Catalog(catalog_date=raw["catalog_date"], sources=raw["sources"], models=models)
