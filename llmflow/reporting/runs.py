"""``llmflow runs``: every run in the store with status, cost and date, newest first."""

from __future__ import annotations

import json
from datetime import datetime
from decimal import Decimal

from pydantic import BaseModel, ConfigDict
from rich.table import Table

from llmflow.catalog import format_usd
from llmflow.reporting.fmt import moment, usd_short
from llmflow.tracker import RunStore


class RunRow(BaseModel):
    """One run as ``llmflow runs`` lists it; ``status`` is as stored (``running`` included)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    run_id: str
    pipeline: str
    policy: str
    status: str
    started_at: datetime
    ended_at: datetime | None
    cost: Decimal
    plan_cost_expected: Decimal | None
    budget_limit: Decimal | None


def list_run_rows(store: RunStore, *, limit: int | None = None) -> list[RunRow]:
    """Runs newest first, each with what it spent across its sessions (one grouped
    query over the ledger for every run listed)."""
    runs = store.list_runs(limit=limit)
    spent = store.runs_spent([r.run_id for r in runs])
    return [
        RunRow(
            run_id=r.run_id,
            pipeline=r.pipeline,
            policy=r.policy,
            status=r.status,
            started_at=r.started_at,
            ended_at=r.ended_at,
            cost=spent[r.run_id],
            plan_cost_expected=r.plan_cost_expected,
            budget_limit=r.budget_limit,
        )
        for r in runs
    ]


def runs_json(rows: list[RunRow]) -> str:
    """``{"runs": [...]}``; money as decimal strings, times ISO 8601."""

    def money(value: Decimal | None) -> str | None:
        return None if value is None else format_usd(value)

    data = [
        {
            "run_id": r.run_id,
            "pipeline": r.pipeline,
            "policy": r.policy,
            "status": r.status,
            "started_at": r.started_at.isoformat(),
            "ended_at": r.ended_at.isoformat() if r.ended_at else None,
            "cost": money(r.cost),
            "plan_cost_expected": money(r.plan_cost_expected),
            "budget_limit": money(r.budget_limit),
        }
        for r in rows
    ]
    return json.dumps({"runs": data}, indent=2) + "\n"


def runs_table(rows: list[RunRow]) -> Table:
    """A rich table of the runs."""
    table = Table(title="Runs (newest first)", title_justify="left", header_style="bold")
    table.add_column("run id", no_wrap=True, min_width=len(rows[0].run_id) if rows else 6)
    for name in ("pipeline", "policy", "status"):
        table.add_column(name, overflow="fold")
    for name in ("started", "ended"):
        table.add_column(name, overflow="fold")
    for name in ("cost", "plan", "budget"):
        table.add_column(name, justify="right", no_wrap=True)
    for r in rows:
        table.add_row(
            r.run_id,
            r.pipeline,
            r.policy,
            r.status,
            moment(r.started_at),
            moment(r.ended_at),
            usd_short(r.cost),
            usd_short(r.plan_cost_expected),
            usd_short(r.budget_limit),
        )
    return table
