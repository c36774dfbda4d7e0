"""Day and month budgets are enforced by `llmflow run` from the run store: the spend of
earlier runs in the period counts, and a run that would cross the limit stops (exit 3)."""

from __future__ import annotations

from collections.abc import Callable
from decimal import Decimal
from pathlib import Path

from llmflow.emulator.config import EmulatorConfig

from .conftest import Emulated, Runner, ledger_cost  # type: ignore[import-not-found]


async def test_a_daily_budget_counts_earlier_runs_of_the_pipeline(
    emulated: Callable[[EmulatorConfig], Emulated], run_pipeline: Runner, tmp_path: Path
) -> None:
    emu = emulated(EmulatorConfig())
    state = tmp_path / "state"
    first = await run_pipeline(emu, "fanout.yaml", "daily.yaml", run_id="morning", state_dir=state)
    assert first.status == "succeeded"
    spent_first = Decimal(first.summary.total.cost)
    second = await run_pipeline(emu, "fanout.yaml", "daily.yaml", run_id="noon", state_dir=state)
    assert second.status == "budget_stopped" and second.exit_code == 3
    spent_second = Decimal(second.summary.total.cost)
    assert 0 < spent_second < spent_first  # it stopped part-way
    assert spent_first + spent_second <= Decimal("0.3")
    assert spent_first + spent_second == ledger_cost(await emu.ledger())
    assert any(
        a.limit_name == "day" for a in first.summary.budget.alerts + second.summary.budget.alerts
    )


async def test_a_monthly_team_budget_is_shared_across_pipelines(
    emulated: Callable[[EmulatorConfig], Emulated], run_pipeline: Runner, tmp_path: Path
) -> None:
    emu = emulated(EmulatorConfig())
    state = tmp_path / "state"
    first = await run_pipeline(emu, "fanout.yaml", "team_month.yaml", run_id="a", state_dir=state)
    assert first.status == "succeeded"
    other = await run_pipeline(
        emu, "fanout_other.yaml", "team_month.yaml", run_id="b", state_dir=state
    )
    assert other.status == "budget_stopped" and other.exit_code == 3
    total = Decimal(first.summary.total.cost) + Decimal(other.summary.total.cost)
    assert total <= Decimal("0.3")
    assert total == ledger_cost(await emu.ledger())
