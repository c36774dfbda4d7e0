"""The Tracker facade: pricing, settling, committing, events, resume, the summary."""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from structlog.testing import capture_logs

from llmflow.catalog import ModelInfo, TokenUsage
from llmflow.errors import BudgetExceeded
from llmflow.tracker import Completed, Failed, LimitSpec, Tracker
from llmflow.tracker.records import Response, RunInfo, request_key
from llmflow.tracker.store import RunStore

D = Decimal
MakeInfo = Callable[..., RunInfo]
MakeResponse = Callable[..., Response]

# Hand-computed: haiku $1/$5 per MTok; 1000 in + 2000 w5m + 500 w1h + 10000 read + 300 out
#   1000·1e-6 + 2000·1.25e-6 + 500·2e-6 + 10000·0.1e-6 + 300·5e-6
#   = 0.001 + 0.0025 + 0.001 + 0.001 + 0.0015 = 0.007 (batch: 0.0035)
# 120 of the 300 output tokens are thinking: billed within output, never again.
# Baseline sonnet $3/$15, all 13500 input plain, sync: 0.0405 + 0.0045 = 0.045
USAGE = TokenUsage(
    input=1000, cache_write_5m=2000, cache_write_1h=500, cache_read=10000, output=300,
    thinking=120,
)  # fmt: skip


def _sync(t: Tracker, model: ModelInfo, i: int, usage: TokenUsage = USAGE) -> Decimal:
    key = request_key("classify", i)
    res = t.dispatch(
        "classify", key, i, model=model.id, tier="haiku", mode="sync", upper_bound=D("0.01")
    )
    return t.record_response(
        "classify", key, i, model, "haiku", "sync", usage, f"req_{i}", {"label": i}, "end_turn", res
    )


def test_exact_costs_and_summary(
    store: RunStore, make_info: MakeInfo, haiku: ModelInfo, sonnet: ModelInfo
) -> None:
    t = Tracker.open(
        store, "r1", make_info(budget_limit=D("1"), plan_cost_expected=D("0.02")), baseline=sonnet
    )
    assert _sync(t, haiku, 0) == D("0.007")
    reqs = [(request_key("classify", 1), 1, D("0.01"))]
    reservations = t.reserve_batch("classify", reqs)
    t.batch_submitted("classify", "msgbatch_1", reqs, model=haiku.id, tier="haiku")
    [cost] = t.record_batch(
        [
            Completed(
                "classify", reqs[0][0], 1, haiku, "haiku", "batch", USAGE,
                reservations[reqs[0][0]], service_tier="batch", output="x",
            )
        ]
    )  # fmt: skip
    assert cost == D("0.0035")
    assert t.batch_ended("msgbatch_1", reservations) == []
    assert t.budget.spent == D("0.0105")
    assert t.budget.reserved == 0

    summary, path = t.finish("succeeded")
    data = json.loads(path.read_text())
    assert path == store.state_dir / "runs" / "r1" / "summary.json"
    assert data["status"] == "succeeded"
    assert data["total"] == {
        "cost": "0.0105",
        "plan_cost_expected": "0.02",
        "plan_cost_max": None,
        "cost_baseline": "0.09",
        "savings_pct": "88.3",
        "cache_hit_ratio": "0.7407",
        "thinking": 240,
    }
    step = data["steps"][0]
    assert step["id"] == "classify"
    assert step["usage"] == {
        "input": 2000, "cache_write_5m": 4000, "cache_write_1h": 1000,
        "cache_read": 20000, "output": 600, "thinking": 240,
    }  # fmt: skip
    assert (step["requests"], step["succeeded"], step["failed"], step["skipped"]) == (10, 2, 0, 0)
    assert step["cost"] == "0.0105"
    assert step["plan_cost_expected"] == "0.01"
    assert data["budget"] == {"limit": "1", "spent": "0.0105", "alerts": []}
    assert summary.total.cost == D("0.0105")
    # every money field is a string, never a float
    assert not any(isinstance(v, float) for v in data["total"].values())


def test_request_completed_event_has_usage_and_cost_only(
    store: RunStore, make_info: MakeInfo, haiku: ModelInfo
) -> None:
    t = Tracker.open(store, "r1", make_info())
    with capture_logs() as logs:
        _sync(t, haiku, 0)
    [event] = [e for e in logs if e["event"] == "request.completed"]
    assert event["cost"] == "0.007"
    assert event["cache_read"] == 10000
    assert (event["thinking"], event["speed"], event["inference_geo"]) == (120, None, None)
    assert event["request_id"] == "req_0"
    assert event["step"] == "classify" and event["item"] == 0
    assert "output" not in event or event["output"] == 300  # the token count, not the text
    assert not any("label" in str(v) for v in event.values())


def test_budget_stop_then_resume_keeps_limit_and_alerts(
    tmp_path: Path, make_info: MakeInfo, haiku: ModelInfo, sonnet: ModelInfo
) -> None:
    state = tmp_path / "state"
    s1 = RunStore.open(state)
    limits = [LimitSpec(D("0.02"))]
    t1 = Tracker.open(s1, "r1", make_info(budget_limit=D("0.02")), limits=limits, alert_at=D("0.5"))
    _sync(t1, haiku, 0)
    with capture_logs() as logs:
        _sync(t1, haiku, 1)  # spent 0.014 ≥ 0.01: alert
    assert [e["event"] for e in logs].count("budget.alert") == 1
    with pytest.raises(BudgetExceeded):  # 0.014 + 0.01 > 0.02: refused, nothing marked
        t1.dispatch(
            "classify", request_key("classify", 2), 2,
            model=haiku.id, tier="haiku", mode="sync", upper_bound=D("0.01"),
        )  # fmt: skip
    assert s1.keys_with_status("r1", ["in_flight", "pending"]) == {}
    summary, _ = t1.finish("budget_stopped")
    assert summary.status == "budget_stopped"
    assert [a.limit_name for a in summary.budget.alerts] == ["run"]
    s1.close()

    s2 = RunStore.open(state)
    t2 = Tracker.open(s2, "r1", make_info(), limits=limits, alert_at=D("0.5"), baseline=sonnet)
    assert t2.resumed
    assert s2.read_counter("run/r1") == (D("0.014"), 0, 0)  # the store holds the run's spend
    assert t2.headroom() == D("0.006")
    with capture_logs() as logs:
        t2.record_batch(
            [
                Completed(
                    "classify", request_key("classify", 3), 3, haiku, "haiku", "sync", USAGE, None
                )
            ]
        )
    assert "budget.alert" not in [e["event"] for e in logs]  # fired in session 1 already
    with pytest.raises(BudgetExceeded):
        t2.dispatch(
            "classify", request_key("classify", 2), 2,
            model=haiku.id, tier="haiku", mode="sync", upper_bound=D("0.01"),
        )  # fmt: skip
    summary, _ = t2.finish("budget_stopped")
    assert summary.total.cost == D("0.021")  # both sessions, the store's view
    s2.close()


def test_day_limit_counts_other_runs(
    store: RunStore, clock: Any, make_info: MakeInfo, make_response: MakeResponse, haiku: ModelInfo
) -> None:
    store.start_run("earlier", make_info(tags={"team": "support"}))
    store.record_success("earlier", make_response("classify", 0, cost="0.995"))
    store.finish_run("earlier", "succeeded")
    clock.advance(minutes=5)
    limits = [LimitSpec(D("1"), "day"), LimitSpec(D("50"), "month", tag=("team", "support"))]
    t = Tracker.open(store, "now", make_info(tags={"team": "support"}), limits=limits)
    assert store.read_counter("day/2026-05-20/pipeline/triage")[0] == D("0.995")
    assert store.read_counter("month/2026-05/tag/team=support")[0] == D("0.995")
    assert t.headroom() == D("0.005")
    with pytest.raises(BudgetExceeded) as info:
        t.dispatch(
            "classify", "k", 0, model=haiku.id, tier="haiku", mode="sync", upper_bound=D("0.01")
        )
    assert (info.value.limit, info.value.limit_name, info.value.key) == (
        D("1"),
        "day",
        "budget.per_day_usd",
    )
    assert info.value.resets_at == datetime(2026, 5, 21, tzinfo=UTC)
    assert "raise budget.per_day_usd, or run again after 2026-05-21 00:00 UTC" in str(info.value)
    # the next day the day limit starts afresh
    clock.advance(days=1)
    t2 = Tracker.open(store, "tomorrow", make_info(), limits=limits[:1])
    assert t2.headroom() == D("1")


def test_failure_releases_and_resume_replaces_counts(
    tmp_path: Path, make_info: MakeInfo, haiku: ModelInfo
) -> None:
    state = tmp_path / "state"
    s1 = RunStore.open(state)
    t1 = Tracker.open(s1, "r1", make_info())
    key = request_key("classify", 0)
    res = t1.dispatch(
        "classify", key, 0, model=haiku.id, tier="haiku", mode="sync", upper_bound=D(1)
    )
    assert t1.budget.reserved == 1
    assert t1.record_failure("classify", key, 0, error="overloaded", reservation=res) == 0
    assert t1.budget.reserved == 0
    t1.record_skipped("digest", request_key("digest", 0), 0, reason="upstream failed")
    assert (t1.step_progress("classify").failed, t1.step_progress("digest").skipped) == (1, 1)
    t1.finish("partial")
    s1.close()

    s2 = RunStore.open(state)
    t2 = Tracker.open(s2, "r1", make_info())
    assert t2.step_progress("classify").failed == 1  # seeded from the store
    _sync(t2, haiku, 0)
    progress = t2.step_progress("classify")
    assert (progress.succeeded, progress.failed, progress.done, progress.total) == (1, 0, 1, 10)
    assert progress.cost == D("0.007")
    assert progress.cache_hit_ratio == D(10000) / D(13500)
    summary, _ = t2.finish("partial")
    assert (summary.steps[0].succeeded, summary.steps[0].failed) == (1, 0)
    s2.close()


def test_billed_failure_is_recorded(store: RunStore, make_info: MakeInfo, haiku: ModelInfo) -> None:
    t = Tracker.open(store, "r1", make_info())
    key = request_key("classify", 0)
    res = t.dispatch(
        "classify", key, 0, model=haiku.id, tier="haiku", mode="sync", upper_bound=D(1)
    )
    billed = Completed("classify", key, 0, haiku, "haiku", "sync", USAGE, None, "req_x")
    assert t.record_failure(
        "classify", key, 0, error="bad tool input", reservation=res, billed=billed
    ) == D("0.007")
    assert t.budget.spent == D("0.007")
    assert store.run_spent("r1") == D("0.007")
    assert store.finished_keys("r1") == set()


def test_resume_reservations_cover_open_batches(
    tmp_path: Path, make_info: MakeInfo, haiku: ModelInfo
) -> None:
    state = tmp_path / "state"
    s1 = RunStore.open(state)
    t1 = Tracker.open(s1, "r1", make_info(), limits=[LimitSpec(D("0.05"))])
    reqs = [(request_key("classify", i), i, D("0.01")) for i in range(4)]
    t1.reserve_batch("classify", reqs)
    t1.batch_submitted("classify", "msgbatch_1", reqs, model=haiku.id, tier="haiku")
    s1.close()  # killed while the batch runs

    s2 = RunStore.open(state)
    t2 = Tracker.open(s2, "r1", make_info(), limits=[LimitSpec(D("0.05"))])
    reservations = t2.resume_reservations()
    assert set(reservations) == {k for k, _, _ in reqs}
    assert t2.budget.reserved == D("0.04")
    with pytest.raises(BudgetExceeded):  # the batch still owes its upper bounds
        t2.dispatch(
            "digest", "d0", 0, model=haiku.id, tier="haiku", mode="sync", upper_bound=D("0.02")
        )
    results = [
        Completed("classify", k, i, haiku, "haiku", "batch", USAGE, reservations[k])
        for k, i, _ in reqs[:2]
    ]
    failures = [Failed("classify", reqs[2][0], 2, "expired", reservations[reqs[2][0]])]
    t2.record_batch(results, failures)
    assert t2.batch_ended("msgbatch_1", reservations) == [reqs[3][0]]
    assert t2.budget.reserved == 0
    assert t2.budget.spent == D("0.007")
    assert s2.open_batches("r1") == []
    s2.close()


def test_dispatch_of_finished_key_releases_reservation(
    store: RunStore, make_info: MakeInfo, haiku: ModelInfo
) -> None:
    from llmflow.errors import RunStoreError

    t = Tracker.open(store, "r1", make_info())
    _sync(t, haiku, 0)
    with pytest.raises(RunStoreError):
        _sync(t, haiku, 0)
    assert t.budget.reserved == 0


def test_batch_results_delivered_twice_are_counted_once(
    tmp_path: Path, make_info: MakeInfo, haiku: ModelInfo
) -> None:
    """Killed after recording results but before closing the batch: the resumed run
    fetches the same results again and must not pay or count them twice."""
    state = tmp_path / "state"
    s1 = RunStore.open(state)
    t1 = Tracker.open(s1, "r1", make_info(), limits=[LimitSpec(D("1"))])
    reqs = [(request_key("classify", i), i, D("0.01")) for i in range(2)]
    res = t1.reserve_batch("classify", reqs)
    t1.batch_submitted("classify", "msgbatch_1", reqs, model=haiku.id, tier="haiku")
    t1.record_batch(
        [Completed("classify", reqs[0][0], 0, haiku, "haiku", "batch", USAGE, res[reqs[0][0]])]
    )
    s1.close()

    s2 = RunStore.open(state)
    t2 = Tracker.open(s2, "r1", make_info(), limits=[LimitSpec(D("1"))])
    assert s2.read_counter("run/r1") == (D("0.0035"), D("0.01"), 0)  # one still owed
    res2 = t2.resume_reservations()
    assert set(res2) == {reqs[1][0]}  # only the one still owed
    with capture_logs() as logs:
        costs = t2.record_batch(
            [
                Completed("classify", k, i, haiku, "haiku", "batch", USAGE, res2.get(k))
                for k, i, _ in reqs
            ]
        )
    assert costs == [D(0), D("0.0035")]
    assert "request.duplicate_result" in [e["event"] for e in logs]
    assert t2.budget.spent == D("0.0035")
    assert t2.budget.reserved == 0
    assert s2.run_spent("r1") == D("0.007")
    assert s2.read_counter("run/r1") == (D("0.007"), 0, 0)
    assert t2.step_progress("classify").succeeded == 2
    s2.close()
