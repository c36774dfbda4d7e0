"""Model facts and prices (package data), and the cost formula."""

from llmflow.catalog.catalog import OVERRIDABLE_FIELDS, Catalog, ModelInfo, load_catalog
from llmflow.catalog.pricing import ZERO, TokenUsage, cost, format_usd

__all__ = [
    "OVERRIDABLE_FIELDS",
    "ZERO",
    "Catalog",
    "ModelInfo",
    "TokenUsage",
    "cost",
    "format_usd",
    "load_catalog",
]
