"""Shared helpers for the tracker tests."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path

import pytest

from llmflow.catalog import ModelInfo, TokenUsage, load_catalog
from llmflow.tracker.records import Response, RunInfo, StepPlan, request_key
from llmflow.tracker.store import RunStore
from tests.postgres import fresh_schema


class Clock:
    """A settable clock for the store (timestamps decide period spend)."""

    def __init__(self, start: datetime) -> None:
        self.now = start

    def __call__(self) -> datetime:
        return self.now

    def advance(self, **kw: float) -> None:
        self.now += timedelta(**kw)


@pytest.fixture
def clock() -> Clock:
    return Clock(datetime(2026, 5, 20, 12, 0, tzinfo=UTC))


@pytest.fixture(params=["sqlite", "postgresql"])
def store(request: pytest.FixtureRequest, tmp_path: Path, clock: Clock) -> Iterator[RunStore]:
    """The run store on each database: SQLite in a directory, and a real PostgreSQL."""
    if request.param == "sqlite":
        s = RunStore.open(tmp_path / "state", clock=clock)
        yield s
        s.close()
        return
    with fresh_schema() as url:
        s = RunStore.open(url, clock=clock, runs_dir=tmp_path / "state")
        yield s
        s.close()


@pytest.fixture
def haiku() -> ModelInfo:
    found = load_catalog().get("claude-haiku-4-5")
    assert found is not None
    return found


@pytest.fixture
def sonnet() -> ModelInfo:
    found = load_catalog().get("claude-sonnet-4-6")
    assert found is not None
    return found


def _info(pipeline: str = "triage", tags: dict[str, str] | None = None, **kw: object) -> RunInfo:
    steps = (StepPlan("classify", 10, plan_cost_expected=Decimal("0.01")), StepPlan("digest", 1))
    return RunInfo(
        pipeline=pipeline,
        policy="default",
        tags=tags or {},
        steps=steps,
        **kw,  # type: ignore[arg-type]
    )


def _response(step: str, i: int, cost: str = "0.001", **usage: int) -> Response:
    return Response(
        step_id=step,
        key=request_key(step, i),
        item_index=i,
        model="claude-haiku-4-5",
        tier="haiku",
        mode="sync",
        usage=TokenUsage(**(usage or {"input": 10, "output": 2})),
        cost=Decimal(cost),
        request_id=f"req_{step}_{i}",
        stop_reason="end_turn",
        output=f"label-{i}",
    )


@pytest.fixture
def make_info() -> Callable[..., RunInfo]:
    """make_info(pipeline="triage", tags=None, **RunInfo fields)."""
    return _info


@pytest.fixture
def make_response() -> Callable[..., Response]:
    """make_response(step, i, cost="0.001", **usage) → a succeeded Response."""
    return _response
