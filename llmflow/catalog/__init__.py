"""Model facts and prices (package data), and the cost formula."""

from llmflow.catalog.catalog import (
    EFFORT_LEVELS,
    OVERRIDABLE_FIELDS,
    Capabilities,
    Catalog,
    Effort,
    ModelInfo,
    Prices,
    ThinkingType,
    load_catalog,
)
from llmflow.catalog.pricing import (
    ZERO,
    TokenUsage,
    cost,
    format_usd,
    is_regional,
    request_cost,
)

__all__ = [
    "EFFORT_LEVELS",
    "OVERRIDABLE_FIELDS",
    "ZERO",
    "Capabilities",
    "Catalog",
    "Effort",
    "ModelInfo",
    "Prices",
    "ThinkingType",
    "TokenUsage",
    "cost",
    "format_usd",
    "is_regional",
    "load_catalog",
    "request_cost",
]
