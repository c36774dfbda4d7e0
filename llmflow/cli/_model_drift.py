"""``llmflow models --check``: the catalog compared with the live Models API.

The Models API (``client.models.list()``) is the live source of every catalog fact but
prices: which models exist, their lifecycle and retirement date, context window,
maximum output, and capabilities (batch, effort levels, thinking types, structured
outputs). Each difference is one :class:`Drift`.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass
from typing import Final, Literal

import anthropic
from anthropic.types import ModelCapabilities
from anthropic.types import ModelInfo as ApiModel

from llmflow.backends import sdk_errors
from llmflow.catalog import EFFORT_LEVELS, Catalog, ModelInfo

#: Every lifecycle stage: the API lists retired models only when asked for them.
ALL_LIFECYCLES: Final[list[Literal["active", "deprecated", "retired"]]] = [
    "active",
    "deprecated",
    "retired",
]
THINKING_TYPES: Final = ("adaptive", "enabled", "disabled", "between_tools")

Value = str | int | bool | list[str] | None


@dataclass(frozen=True, slots=True)
class Drift:
    """One fact on which the catalog and the Models API disagree."""

    model: str
    field: str
    catalog: Value
    api: Value

    def as_json(self) -> dict[str, Value]:
        """The drift as a JSON object."""
        return asdict(self)


async def list_models(client: anthropic.AsyncAnthropic) -> list[ApiModel]:
    """Every model the API lists, retired ones included; BackendError when it cannot."""
    with sdk_errors("models.list"):
        return [model async for model in client.models.list(lifecycle=ALL_LIFECYCLES)]


def compare(catalog: Catalog, listed: Sequence[ApiModel]) -> list[Drift]:
    """Every difference between the catalog and the API's list, catalog order."""
    found: list[Drift] = []
    seen: set[str] = set()
    for api in listed:
        info = catalog.get(api.id)
        if info is None:
            found.append(Drift(api.id, "listed", "missing from the catalog", api.lifecycle))
            continue
        seen.add(info.id)
        found += _differences(info, api)
    for info in catalog.models.values():
        if info.id not in seen and info.status != "retired":
            found.append(Drift(info.id, "listed", info.lifecycle, "not listed by the API"))
    return found


def _differences(info: ModelInfo, api: ApiModel) -> Iterator[Drift]:
    retires = api.retires_at.date().isoformat() if api.retires_at is not None else None
    pairs: list[tuple[str, Value, Value]] = [
        ("lifecycle", info.lifecycle, api.lifecycle),
        ("retires_at", info.retires_at.isoformat() if info.retires_at else None, retires),
        ("context_window", info.context_window, api.max_input_tokens),
        ("max_output_tokens", info.max_output_tokens, api.max_tokens),
    ]
    if api.capabilities is not None:
        pairs += _capability_pairs(info, api.capabilities)
    for name, ours, theirs in pairs:
        # An unknown limit (null) is no drift; no retirement date (null) is a fact.
        if (theirs is not None or name == "retires_at") and ours != theirs:
            yield Drift(info.id, name, ours, theirs)


def _capability_pairs(info: ModelInfo, caps: ModelCapabilities) -> list[tuple[str, Value, Value]]:
    effort = caps.effort
    levels: list[str] = [
        level
        for level in EFFORT_LEVELS
        if effort.supported and (support := getattr(effort, level, None)) and support.supported
    ]
    types = caps.thinking.types
    thinking = [t for t in THINKING_TYPES if getattr(types, t).supported]
    return [
        (
            "effort_levels",
            [e for e in EFFORT_LEVELS if e in info.capabilities.effort_levels],
            levels,
        ),
        ("thinking_types", catalog_thinking_types(info), thinking),
        (
            "structured_outputs",
            info.capabilities.structured_outputs,
            caps.structured_outputs.supported,
        ),
        ("batch", info.capabilities.batch, caps.batch.supported),
    ]


def catalog_thinking_types(info: ModelInfo) -> list[str]:
    """The ``thinking.type`` values the catalog says ``model`` accepts, as the Models API
    reports them: ``disabled`` is accepted by a model that cannot think at all."""
    accepted = set(info.capabilities.thinking_types)
    if not accepted & {"adaptive", "enabled"}:
        accepted.add("disabled")
    return [t for t in THINKING_TYPES if t in accepted]
