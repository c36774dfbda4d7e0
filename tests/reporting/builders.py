"""Runs for the reporting tests, written by driving the real Tracker (what `llmflow run` does).

Loaded by path from ``conftest.py`` and ``tests/cli/test_report_cli.py`` (the test
tree has no packages).
"""

from __future__ import annotations

import importlib.util
import sys
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from types import ModuleType

from llmflow.catalog import ModelInfo, TokenUsage, load_catalog
from llmflow.tracker import (
    Completed,
    LimitSpec,
    RunInfo,
    RunStore,
    RunSummary,
    StepPlan,
    Tracker,
    request_key,
)


def _model(model_id: str) -> ModelInfo:
    found = load_catalog().get(model_id)
    assert found is not None
    return found


HAIKU = _model("claude-haiku-4-5")
SONNET = _model("claude-sonnet-4-6")
PREFIX = 5000  # tokens of the cached system prefix of `classify`


@dataclass
class Clock:
    """A settable UTC clock for the store: timestamps decide spend per day and month."""

    now: datetime = field(default_factory=lambda: datetime(2026, 5, 20, 12, 0, tzinfo=UTC))

    def __call__(self) -> datetime:
        return self.now

    def tick(self, seconds: float = 1.0) -> None:
        self.now += timedelta(seconds=seconds)


def triage_run(
    store: RunStore,
    clock: Clock,
    run_id: str = "run-triage",
    *,
    pipeline: str = "triage",
    policy_path: str | None = None,
    budget: Decimal = Decimal("0.06"),
) -> RunSummary:
    """Three steps, finished ``partial``:

    * ``classify`` (haiku, batch, 10 items): every request has the 5,000-token prefix
      but only one reads it (the plan expected 5 at batch_hit_rate 0.5).
    * ``extract`` (haiku, sync, 5 items): no cache; item 3 stops at max_tokens, item 4
      fails (not billed); 60 of each response's 100 output tokens are thinking.
    * ``digest`` (sonnet, sync, 1 item), 180 of its 300 output tokens thinking.

    The budget alert (50% of ``budget``) fires during the run.
    """
    info = RunInfo(
        pipeline=pipeline,
        policy="basic",
        policy_path=policy_path,
        budget_limit=budget,
        plan_cost_expected=Decimal("0.04"),
        plan_cost_max=Decimal("0.058"),
        plan_cost_baseline=Decimal("0.3"),
        steps=(
            StepPlan("classify", 10, HAIKU.id, "haiku", "batch", Decimal("0.02"), Decimal("0.03")),
            StepPlan("extract", 5, HAIKU.id, "haiku", "sync", Decimal("0.008"), Decimal("0.01")),
            StepPlan("digest", 1, SONNET.id, "sonnet", "sync", Decimal("0.012"), Decimal("0.018")),
        ),
    )
    tracker = Tracker.open(
        store, run_id, info, limits=[LimitSpec(budget)], alert_at=Decimal("0.5"),
        baseline=SONNET,
    )  # fmt: skip
    # classify: one batch of 10
    requests = [(request_key("classify", i), i, Decimal("0.004")) for i in range(10)]
    reservations = tracker.reserve_batch("classify", requests)
    tracker.batch_submitted("classify", "msgbatch_01", requests, model=HAIKU.id, tier="haiku")
    clock.tick(30)
    done = []
    for key, i, _ in requests:
        cached = {"cache_read": PREFIX} if i == 1 else {"cache_write_5m": PREFIX}
        done.append(
            Completed(
                "classify", key, i, HAIKU, "haiku", "batch",
                TokenUsage(input=50, output=4, **cached), reservations[key],
                request_id=f"req_c{i}", output=f"label-{i}", stop_reason="end_turn",
                service_tier="batch",
            )
        )  # fmt: skip
    tracker.record_batch(done)
    tracker.batch_ended("msgbatch_01", reservations)
    # extract: 4 succeed (one cut at max_tokens), 1 fails
    for i in range(5):
        clock.tick()
        key = request_key("extract", i)
        res = tracker.dispatch(
            "extract", key, i, model=HAIKU.id, tier="haiku", mode="sync",
            upper_bound=Decimal("0.002"),
        )  # fmt: skip
        if i == 4:
            tracker.record_failure(
                "extract", key, i, error="invalid_request_error", reservation=res
            )
            continue
        tracker.record_response(
            "extract", key, i, HAIKU, "haiku", "sync",
            TokenUsage(input=800, output=100, thinking=60),
            f"req_e{i}", {"item": i}, "max_tokens" if i == 3 else "end_turn", res,
        )  # fmt: skip
    # digest
    clock.tick()
    key = request_key("digest", 0)
    res = tracker.dispatch(
        "digest", key, 0, model=SONNET.id, tier="sonnet", mode="sync",
        upper_bound=Decimal("0.012"),
    )  # fmt: skip
    clock.tick(2)
    tracker.record_response(
        "digest", key, 0, SONNET, "sonnet", "sync",
        TokenUsage(input=2000, output=300, thinking=180),
        "req_d0", "all good", "end_turn", res,
    )  # fmt: skip
    summary, _ = tracker.finish("partial")
    return summary


def simple_run(
    store: RunStore, clock: Clock, run_id: str, *, pipeline: str, responses: int
) -> Decimal:
    """A finished one-step sync run of ``responses`` haiku requests; returns its cost."""
    info = RunInfo(pipeline=pipeline, policy="basic", steps=(StepPlan("only", responses),))
    tracker = Tracker.open(store, run_id, info, baseline=SONNET)
    total = Decimal(0)
    for i in range(responses):
        clock.tick()
        key = request_key("only", i)
        res = tracker.dispatch(
            "only", key, i, model=HAIKU.id, tier="haiku", mode="sync", upper_bound=Decimal("1")
        )
        total += tracker.record_response(
            "only", key, i, HAIKU, "haiku", "sync", TokenUsage(input=1000, output=10),
            None, "x", "end_turn", res,
        )  # fmt: skip
    tracker.finish("succeeded")
    return total


def load(name: str = "reporting_builders") -> ModuleType:
    """This module, loaded by file path (once per process)."""
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, Path(__file__))
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module
