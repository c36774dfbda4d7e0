"""The Models API: ``GET /v1/models`` and ``GET /v1/models/{model_id}`` from the catalog.

Each model is shaped like the SDK's ``ModelInfo``: ``created_at`` is the release date
(the epoch when the catalog has none), ``lifecycle`` the catalog's (latest, active and
legacy models are ``active``), ``max_input_tokens`` the context window, ``max_tokens``
the maximum output, and ``capabilities`` carries every key of ``ModelCapabilities``.
Batch, effort levels, thinking types and structured outputs come from the catalog; the
catalog records no deprecation date (``deprecated_at`` is null) and nothing about
citations, image and PDF input, server tools, programmatic tool calling or context
management, which every model in it supports (:data:`ALWAYS_SUPPORTED`).

The list is newest release first (catalog order among equals). As in the API, it holds
the ``active`` and ``deprecated`` models unless ``lifecycle`` names stages (``retired``
models appear only when asked for); retrieving a retired model by id works. A dated
alias retrieves its model.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from typing import Any, Final

from llmflow.catalog import EFFORT_LEVELS, Catalog, ModelInfo
from llmflow.emulator.errors import invalid, not_found

LIFECYCLES: Final = ("active", "deprecated", "retired")
DEFAULT_LIFECYCLES: Final = ("active", "deprecated")
#: Capabilities the catalog does not record, supported by every model in it.
ALWAYS_SUPPORTED: Final = (
    "citations",
    "code_execution",
    "image_input",
    "pdf_input",
)
_EPOCH: Final = "1970-01-01T00:00:00Z"
_CONTEXT_STRATEGIES: Final = (
    "clear_thinking_20251015",
    "clear_tool_uses_20250919",
    "compact_20260112",
)


def _rfc3339(day: dt.date | None) -> str | None:
    return None if day is None else f"{day.isoformat()}T00:00:00Z"


def _support(flag: bool) -> dict[str, bool]:
    return {"supported": flag}


def capabilities(model: ModelInfo) -> dict[str, Any]:
    """``ModelCapabilities`` of ``model``."""
    caps = model.capabilities
    effort: dict[str, Any] = {
        level: _support(level in caps.effort_levels) for level in EFFORT_LEVELS
    }
    effort["supported"] = bool(caps.effort_levels)
    types = {
        t: _support(t in caps.thinking_types) for t in ("adaptive", "enabled", "between_tools")
    }
    # "disabled" is accepted by a model that cannot think at all.
    thinks = types["adaptive"]["supported"] or types["enabled"]["supported"]
    types["disabled"] = _support("disabled" in caps.thinking_types or not thinks)
    context: dict[str, Any] = {name: _support(True) for name in _CONTEXT_STRATEGIES}
    context["supported"] = True
    return {
        **{name: _support(True) for name in ALWAYS_SUPPORTED},
        "batch": _support(caps.batch),
        "context_management": context,
        "effort": effort,
        "server_tools": {
            "code_execution": _support(True),
            "web_search": _support(True),
            "supported": True,
        },
        "structured_outputs": _support(caps.structured_outputs),
        "thinking": {"supported": thinks, "types": types},
    }


def model_json(model: ModelInfo) -> dict[str, Any]:
    """The ``ModelInfo`` object of ``model``."""
    return {
        "type": "model",
        "id": model.id,
        "display_name": model.display_name,
        "created_at": _rfc3339(model.released) or _EPOCH,
        "lifecycle": model.lifecycle,
        "deprecated_at": None,
        "retires_at": _rfc3339(model.retires_at),
        "line": model.line,
        "max_input_tokens": model.context_window,
        "max_tokens": model.max_output_tokens,
        "capabilities": capabilities(model),
    }


def parse_lifecycles(values: Sequence[str]) -> tuple[str, ...]:
    """The ``lifecycle`` filter (repeated, bracketed or comma-separated values)."""
    wanted = [part for value in values for part in value.split(",") if part]
    if not wanted:
        return DEFAULT_LIFECYCLES
    if len(wanted) > len(LIFECYCLES):
        raise invalid(f"lifecycle: at most {len(LIFECYCLES)} values")
    for value in wanted:
        if value not in LIFECYCLES:
            raise invalid(
                f"lifecycle: Input should be 'active', 'deprecated' or 'retired' ({value!r})"
            )
    return tuple(wanted)


def listed(catalog: Catalog, lifecycles: Sequence[str]) -> list[ModelInfo]:
    """The models in the list, newest release first."""
    models = [m for m in catalog.models.values() if m.lifecycle in lifecycles]
    oldest = dt.date.min
    return sorted(models, key=lambda m: m.released or oldest, reverse=True)


def retrieve(catalog: Catalog, model_id: str) -> ModelInfo:
    """The model with this id or alias, or 404."""
    model = catalog.get(model_id)
    if model is None:
        raise not_found(f"model: {model_id}")
    return model
