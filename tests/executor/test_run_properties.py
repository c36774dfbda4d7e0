"""Properties of `llmflow run`: under any concurrency, faults and budget, the budget is
never exceeded and the tracker's totals equal what the emulator billed, exactly."""

from __future__ import annotations

import asyncio
import dataclasses
from decimal import Decimal
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from llmflow.catalog import load_catalog
from llmflow.emulator.app import create_app
from llmflow.emulator.config import EmulatorConfig, FaultRates
from llmflow.executor.retry import Backoff
from llmflow.executor.run import RunRequest, execute
from llmflow.planner import build_plan_async
from llmflow.spec.loader import load_pair
from llmflow.tracker import RunStore

from .conftest import FIXTURES, Emulated, ledger_cost, ledger_usage, summary_usage  # type: ignore[import-not-found]

CATALOG = load_catalog()


async def _run(
    tmp: Path, budget: Decimal, concurrency: int, faults: FaultRates, seed: int, latency: float
) -> tuple[Decimal, Decimal, bool, str]:
    emu = Emulated(create_app(EmulatorConfig(latency_ms=latency, faults=faults, seed=seed)))
    pipeline_file, policy_file = load_pair(
        FIXTURES / "small_chain.yaml", FIXTURES / "policy.yaml", inputs={}
    )
    assert policy_file is not None
    limits = policy_file.policy.limits.model_copy(update={"max_concurrency": concurrency})
    policy_file = dataclasses.replace(
        policy_file, policy=policy_file.policy.model_copy(update={"limits": limits})
    )
    plan = await build_plan_async(pipeline_file, policy_file, inputs={}, catalog=CATALOG)
    client = emu.client()
    store = RunStore.open(tmp)
    try:
        outcome = await execute(
            RunRequest(
                pipeline_file,
                policy_file,
                plan,
                CATALOG,
                client,
                store,
                "p",
                {},
                budget_usd=budget,
                backoff=Backoff(base_seconds=0.0005, max_seconds=0.002),
            )
        )
    finally:
        await client.close()
        store.close()
    ledger = await emu.ledger()
    same_usage = summary_usage(outcome) == ledger_usage(ledger)
    return Decimal(outcome.summary.total.cost), ledger_cost(ledger), same_usage, outcome.status


@settings(
    max_examples=15,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
@given(
    budget=st.decimals(min_value=Decimal("0.0005"), max_value=Decimal("0.03"), places=4),
    concurrency=st.integers(min_value=1, max_value=16),
    rate_limit=st.sampled_from([0.0, 0.1, 0.3]),
    overloaded=st.sampled_from([0.0, 0.1]),
    server_error=st.sampled_from([0.0, 0.05]),
    seed=st.integers(min_value=0, max_value=10_000),
    latency=st.sampled_from([0.0, 2.0]),
)
def test_budget_is_never_exceeded_and_nothing_is_lost(
    tmp_path_factory: pytest.TempPathFactory,
    budget: Decimal,
    concurrency: int,
    rate_limit: float,
    overloaded: float,
    server_error: float,
    seed: int,
    latency: float,
) -> None:
    tmp = tmp_path_factory.mktemp("run")
    faults = FaultRates(rate_limit=rate_limit, overloaded=overloaded, server_error=server_error)
    recorded, billed, same_usage, status = asyncio.run(
        _run(tmp, budget, concurrency, faults, seed, latency)
    )
    assert recorded <= budget, (recorded, budget, status)
    assert recorded == billed
    assert same_usage
