"""Plain values passed in and out of the run store (no I/O here)."""

from __future__ import annotations

import hashlib
import json
import re
import secrets
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any, Literal

from llmflow.catalog import ZERO, ModelInfo, TokenUsage

RunStatus = Literal[
    "running", "succeeded", "partial", "budget_stopped", "failed", "interrupted", "pending"
]
FinalStatus = Literal["succeeded", "partial", "budget_stopped", "failed", "interrupted", "pending"]
RequestStatus = Literal["pending", "in_flight", "succeeded", "failed", "skipped"]
Mode = Literal["sync", "batch"]
#: A JSON-serialisable output (text, or a tool_use input object).
JsonValue = Any

KEY_PATTERN = re.compile(r"^[a-zA-Z0-9_-]{1,64}$")
RUN_ID_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$")
STEP_ID_PATTERN = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}$")


def check_key(key: str) -> str:
    """A request key must be a valid batch custom_id (``^[a-zA-Z0-9_-]{1,64}$``)."""
    if not KEY_PATTERN.match(key):
        raise ValueError(f"request key {key!r} is not a valid custom_id")
    return key


def check_run_id(run_id: str) -> str:
    """A run id names a directory: letters, digits, ``_ . -``, no ``..``."""
    if not RUN_ID_PATTERN.match(run_id) or ".." in run_id:
        raise ValueError(f"invalid run id {run_id!r}: use letters, digits, '_', '.', '-'")
    return run_id


def check_step_id(step_id: str) -> str:
    """A step id names a file under the run directory."""
    if not STEP_ID_PATTERN.match(step_id) or ".." in step_id:
        raise ValueError(f"invalid step id {step_id!r}")
    return step_id


def request_key(step_id: str, item_index: int) -> str:
    """The deterministic custom_id-safe key of item ``item_index`` of a step.

    ``<step>-<index>`` when it fits, else a hash of the step id with the index, so
    the same step and item always get the same key (resume depends on it).
    """
    if item_index < 0:
        raise ValueError("item_index cannot be negative")
    suffix = f"-{item_index}"
    safe = re.sub(r"[^a-zA-Z0-9_-]", "_", step_id)
    if safe == step_id and len(step_id) + len(suffix) <= 64:
        return step_id + suffix
    digest = hashlib.sha256(step_id.encode("utf-8")).hexdigest()[:16]
    head = safe[: 64 - len(suffix) - len(digest) - 1]
    return f"{head}_{digest}{suffix}"


def new_run_id(now: datetime | None = None) -> str:
    """A fresh sortable run id, e.g. ``20261124T101500Z-3f9a1c``."""
    moment = (now or datetime.now(UTC)).astimezone(UTC)
    return f"{moment:%Y%m%dT%H%M%SZ}-{secrets.token_hex(3)}"


@dataclass(frozen=True, slots=True)
class StepPlan:
    """What the plan expects of one step (stored at run start, shown in the summary)."""

    step_id: str
    requests: int
    model: str | None = None
    tier: str | None = None
    mode: Mode | None = None
    plan_cost_expected: Decimal | None = None
    plan_cost_max: Decimal | None = None


@dataclass(frozen=True, slots=True)
class RunInfo:
    """Everything the executor knows about a run when it starts or resumes it."""

    pipeline: str
    policy: str
    pipeline_path: str | None = None
    policy_path: str | None = None
    plan_hash: str | None = None
    tags: dict[str, str] = field(default_factory=dict)
    budget_limit: Decimal | None = None
    plan_cost_expected: Decimal | None = None
    plan_cost_max: Decimal | None = None
    plan_cost_baseline: Decimal | None = None
    steps: tuple[StepPlan, ...] = ()
    report_settings: str | None = None  # JSON: what reports price with, fixed at run time


@dataclass(frozen=True, slots=True)
class RunRecord:
    """A row of ``runs`` with its tags."""

    run_id: str
    pipeline: str
    policy: str
    pipeline_path: str | None
    policy_path: str | None
    plan_hash: str | None
    status: RunStatus
    started_at: datetime
    ended_at: datetime | None
    sessions: int
    tags: dict[str, str]
    budget_limit: Decimal | None
    plan_cost_expected: Decimal | None
    plan_cost_max: Decimal | None
    plan_cost_baseline: Decimal | None
    unrecorded_usd: Decimal
    report_settings: str | None = None


@dataclass(frozen=True, slots=True)
class Response:
    """One billed response, as recorded: usage, its exact cost and the output.

    ``speed`` and ``inference_geo`` are what the API reported (they priced it).
    """

    step_id: str
    key: str
    item_index: int
    model: str
    tier: str | None
    mode: Mode
    usage: TokenUsage
    cost: Decimal
    request_id: str | None = None
    service_tier: str | None = None
    stop_reason: str | None = None
    output: JsonValue = None
    speed: str | None = None
    inference_geo: str | None = None
    open_usd: Decimal = ZERO  # what the API may still bill beyond ``cost`` (unrecorded)


@dataclass(frozen=True, slots=True)
class BatchRecord:
    """A submitted batch; ``status`` is the API's processing_status (or ``ended``)."""

    run_id: str
    step_id: str
    batch_id: str
    status: str
    submitted_at: datetime
    ended_at: datetime | None
    keys: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class OutputRecord:
    """A succeeded request's output with its place in the step."""

    item_index: int
    key: str
    output: JsonValue


@dataclass(frozen=True, slots=True)
class StepTotals:
    """Counts, usage and cost of one step across every session of a run."""

    step_id: str
    planned_requests: int
    requests: int
    succeeded: int
    failed: int
    skipped: int
    usage: TokenUsage = field(default_factory=TokenUsage)
    cost: Decimal = ZERO
    plan_cost_expected: Decimal | None = None
    plan_cost_max: Decimal | None = None


@dataclass(frozen=True, slots=True)
class PricedWith:
    """What a run's report prices with, stored when the run starts so that a report
    never depends on the policy file as it is later: the baseline model (with the
    policy's price overrides) and the policy's report thresholds."""

    baseline: ModelInfo | None
    min_hit_ratio: Decimal
    batch_hit_rate: Decimal

    def to_json(self) -> str:
        baseline = None if self.baseline is None else self.baseline.model_dump(mode="json")
        return json.dumps(
            {
                "baseline": baseline,
                "min_hit_ratio": str(self.min_hit_ratio),
                "batch_hit_rate": str(self.batch_hit_rate),
            },
            sort_keys=True,
        )

    @classmethod
    def from_json(cls, text: str) -> PricedWith:
        data = json.loads(text)
        baseline = data.get("baseline")
        return cls(
            baseline=None if baseline is None else ModelInfo.model_validate(baseline),
            min_hit_ratio=Decimal(data["min_hit_ratio"]),
            batch_hit_rate=Decimal(data["batch_hit_rate"]),
        )
