"""Running pipelines end to end on an in-process emulator whose ledger we can read."""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx2
import pytest
from starlette.applications import Starlette

from llmflow.backends import open_client
from llmflow.catalog import TokenUsage, load_catalog
from llmflow.emulator.app import create_app
from llmflow.emulator.config import EmulatorConfig
from llmflow.emulator.ledger import entry_cost, entry_usage
from llmflow.executor.retry import Backoff
from llmflow.executor.run import RunOutcome, RunRequest, execute
from llmflow.planner import build_plan_async
from llmflow.spec.loader import load_pair
from llmflow.tracker import RunStore

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "run"
CATALOG = load_catalog()


@dataclass
class Emulated:
    """One emulator instance shared by the runs of a test."""

    app: Starlette

    def client(self) -> Any:
        return open_client("emulator", transport=httpx2.ASGITransport(app=self.app))

    async def ledger(self) -> dict[str, Any]:
        transport = httpx2.ASGITransport(app=self.app)
        async with httpx2.AsyncClient(transport=transport, base_url="http://emulator.local") as c:
            response = await c.get("/_emulator/ledger", headers={"x-api-key": "test"})
            response.raise_for_status()
            return dict(response.json())


def ledger_usage(ledger: dict[str, Any]) -> TokenUsage:
    """What the emulator billed, as the tracker's categories."""
    return sum((entry_usage(e) for e in ledger["requests"]), TokenUsage())


def ledger_cost(ledger: dict[str, Any]) -> Decimal:
    """What the emulator billed, priced with the catalog."""
    return sum((entry_cost(e) for e in ledger["requests"]), Decimal(0))


def summary_usage(outcome: RunOutcome) -> TokenUsage:
    total = TokenUsage()
    for step in json.loads(outcome.summary_path.read_text())["steps"]:
        u = step["usage"]
        total += TokenUsage(
            input=u["input"], cache_write_5m=u["cache_write_5m"], cache_write_1h=u["cache_write_1h"],
            cache_read=u["cache_read"], output=u["output"], thinking=u.get("thinking", 0),
        )  # fmt: skip
    return total


Runner = Callable[..., Awaitable[RunOutcome]]


@pytest.fixture
def emulated() -> Callable[[EmulatorConfig], Emulated]:
    def make(config: EmulatorConfig) -> Emulated:
        return Emulated(create_app(config))

    return make


@pytest.fixture
def run_pipeline(tmp_path: Path) -> Runner:
    """``await run_pipeline(emulated, "chain.yaml", run_id=..., budget=...)``; names are
    fixture files, absolute paths are used as they are."""

    async def run(
        emu: Emulated,
        pipeline: str | Path,
        policy: str | Path = "policy.yaml",
        *,
        run_id: str = "r1",
        budget: Decimal | None = None,
        state_dir: Path | None = None,
    ) -> RunOutcome:
        pipeline_file, policy_file = load_pair(FIXTURES / pipeline, FIXTURES / policy, inputs={})
        assert policy_file is not None
        plan = await build_plan_async(pipeline_file, policy_file, inputs={}, catalog=CATALOG)
        client = emu.client()
        store = RunStore.open(state_dir or tmp_path / "state")
        try:
            request = RunRequest(
                pipeline_file, policy_file, plan, CATALOG, client, store, run_id, {},
                budget_usd=budget, backoff=Backoff(base_seconds=0.001, max_seconds=0.01),
            )  # fmt: skip
            return await execute(request)
        finally:
            await client.close()
            store.close()

    return run
