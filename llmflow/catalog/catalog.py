"""The model catalog: ids, prices and cache facts, shipped as package data.

``load_catalog()`` reads ``models.yaml`` once; a policy overrides any field per tier
with :meth:`ModelInfo.overridden`.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from decimal import Decimal
from functools import cache
from importlib import resources
from typing import Any

from pydantic import BaseModel, ConfigDict, Field
from ruamel.yaml import YAML

_SNAPSHOT_SUFFIX = re.compile(r"-\d{8}$")

#: Fields of :class:`ModelInfo` a policy may override per tier.
OVERRIDABLE_FIELDS = (
    "input_usd_per_mtok",
    "output_usd_per_mtok",
    "cache_write_5m_multiplier",
    "cache_write_1h_multiplier",
    "cache_read_multiplier",
    "batch_multiplier",
    "min_cacheable_tokens",
    "context_window",
    "max_output_tokens",
)


class ModelInfo(BaseModel):
    """Everything llmflow knows about one model, prices in USD per million tokens."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    id: str
    family: str
    input_usd_per_mtok: Decimal = Field(ge=0)
    output_usd_per_mtok: Decimal = Field(ge=0)
    cache_write_5m_multiplier: Decimal = Field(ge=0)
    cache_write_1h_multiplier: Decimal = Field(ge=0)
    cache_read_multiplier: Decimal = Field(ge=0)
    batch_multiplier: Decimal = Field(ge=0)
    min_cacheable_tokens: int = Field(ge=0)
    context_window: int = Field(gt=0)
    max_output_tokens: int = Field(gt=0)

    def overridden(self, overrides: Mapping[str, Any]) -> ModelInfo:
        """A copy with the given fields replaced (validated like the catalog's own)."""
        unknown = set(overrides) - set(OVERRIDABLE_FIELDS)
        if unknown:
            raise KeyError(f"not overridable: {', '.join(sorted(unknown))}")
        data = self.model_dump()
        data.update({k: v for k, v in overrides.items() if v is not None})
        return ModelInfo.model_validate(data)


class Catalog(BaseModel):
    """The set of known models and the date their prices were read."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    prices_read_on: str
    source: str
    models: dict[str, ModelInfo]

    def get(self, model_id: str) -> ModelInfo | None:
        """The model with this id; a dated snapshot id (``...-20251001``) finds its alias."""
        found = self.models.get(model_id)
        if found is None:
            found = self.models.get(_SNAPSHOT_SUFFIX.sub("", model_id))
        return found

    def resolve(self, model_id: str, overrides: Mapping[str, Any]) -> ModelInfo | None:
        """The model with a policy tier's overrides applied (unset ones, and keys that are
        not overridable such as ``model``, are ignored); None for an unknown model."""
        info = self.get(model_id)
        if info is None:
            return None
        changed = {f: overrides[f] for f in OVERRIDABLE_FIELDS if overrides.get(f) is not None}
        return info.overridden(changed) if changed else info

    def ids(self) -> list[str]:
        """Known model ids, sorted."""
        return sorted(self.models)


@cache
def load_catalog() -> Catalog:
    """The catalog shipped with the package (read once per process)."""
    text = resources.files("llmflow.catalog").joinpath("models.yaml").read_text("utf-8")
    raw = YAML(typ="safe").load(text)
    defaults: dict[str, Any] = dict(raw.get("defaults", {}))
    models = {
        model_id: ModelInfo.model_validate({**defaults, **fields, "id": model_id})
        for model_id, fields in raw["models"].items()
    }
    return Catalog(prices_read_on=str(raw["prices_read_on"]), source=raw["source"], models=models)
