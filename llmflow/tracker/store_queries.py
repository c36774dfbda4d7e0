"""The run store's read side: outputs in item order, spend by run and period, totals."""

from __future__ import annotations

import json
from datetime import datetime
from decimal import Decimal
from pathlib import Path

from llmflow.catalog import ZERO, TokenUsage
from llmflow.tracker.db import Cursor
from llmflow.tracker.records import JsonValue, OutputRecord, StepTotals, check_step_id
from llmflow.tracker.schema import timestamp, to_decimal
from llmflow.tracker.store_base import StoreBase
from llmflow.tracker.store_requests import USAGE_COLS, token_usage

#: Sums of :data:`USAGE_COLS`, for a GROUP BY over ``usage``.
USAGE_SUMS = ", ".join(f"sum({col})" for col in USAGE_COLS.split(", "))


class QueriesMixin(StoreBase):
    """Outputs, money and per-step totals (across every session of a run)."""

    def step_ids(self, run_id: str) -> list[str]:
        """Steps of the run: planned ones in plan order, then any others seen."""
        rows = self._read(
            lambda c: (
                c.execute(
                    "SELECT step_id FROM steps WHERE run_id = ? ORDER BY position", (run_id,)
                ).fetchall()
                + c.execute(
                    "SELECT DISTINCT step_id FROM requests WHERE run_id = ? AND step_id NOT IN"
                    " (SELECT step_id FROM steps WHERE run_id = ?) ORDER BY step_id",
                    (run_id, run_id),
                ).fetchall()
            )
        )
        return [s for (s,) in rows]

    def step_output_records(self, run_id: str, step_id: str) -> list[OutputRecord]:
        """Succeeded outputs of a step in item order (across every session)."""
        rows = self._read(
            lambda c: c.execute(
                "SELECT item_index, key, output_json FROM requests WHERE run_id = ?"
                " AND step_id = ? AND status = 'succeeded' ORDER BY item_index, key",
                (run_id, step_id),
            ).fetchall()
        )
        return [OutputRecord(i, k, json.loads(o) if o is not None else None) for i, k, o in rows]

    def step_outputs(self, run_id: str, step_id: str) -> list[JsonValue]:
        """Just the outputs, in item order (what downstream templates see)."""
        return [r.output for r in self.step_output_records(run_id, step_id)]

    def write_outputs(self, run_id: str, step_id: str) -> Path:
        """(Re)write ``outputs/<step_id>.jsonl`` from the database, atomically.

        One line per succeeded item: ``{"item": index, "key": key, "output": ...}``.
        """
        path = self.run_dir(run_id) / "outputs" / f"{check_step_id(step_id)}.jsonl"
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".jsonl.tmp")
        with tmp.open("w", encoding="utf-8") as fh:
            for rec in self.step_output_records(run_id, step_id):
                line = {"item": rec.item_index, "key": rec.key, "output": rec.output}
                fh.write(json.dumps(line, ensure_ascii=False) + "\n")
        tmp.replace(path)
        return path

    # -- money and totals ------------------------------------------------------

    def run_spent(self, run_id: str) -> Decimal:
        """Recorded spend of the run across every session."""
        row = self._read(
            lambda c: c.execute(
                "SELECT dsum(cost_usd) FROM usage WHERE run_id = ?", (run_id,)
            ).fetchone()
        )
        return Decimal(row[0] or "0")

    def spend_since(
        self,
        since: datetime,
        *,
        pipeline: str | None = None,
        tag: tuple[str, str] | None = None,
        exclude_run: str | None = None,
    ) -> Decimal:
        """Money recorded since ``since`` by runs of ``pipeline`` and/or with ``tag``."""
        scope, args = self._scope(pipeline, tag, exclude_run)
        sql = "SELECT dsum(u.cost_usd) FROM usage u JOIN runs r USING (run_id)"
        sql += " WHERE u.recorded_at >= ?" + scope
        row = self._read(lambda c: c.execute(sql, (timestamp(since), *args)).fetchone())
        return Decimal(row[0] or "0")

    def reserved_since(
        self,
        since: datetime,
        *,
        pipeline: str | None = None,
        tag: tuple[str, str] | None = None,
        exclude_run: str | None = None,
    ) -> Decimal:
        """Upper bounds of requests dispatched since ``since`` and still in flight.

        What running processes have committed but not yet recorded: a period budget
        counts it so that it holds across concurrent runs.
        """
        scope, args = self._scope(pipeline, tag, exclude_run)
        sql = "SELECT dsum(q.reserved_usd) FROM requests q JOIN runs r USING (run_id)"
        sql += " WHERE q.status = 'in_flight' AND q.dispatched_at >= ?" + scope
        row = self._read(lambda c: c.execute(sql, (timestamp(since), *args)).fetchone())
        return Decimal(row[0] or "0")

    @staticmethod
    def _scope(
        pipeline: str | None, tag: tuple[str, str] | None, exclude_run: str | None
    ) -> tuple[str, list[str]]:
        sql, args = "", list[str]()
        if pipeline is not None:
            sql, args = sql + " AND r.pipeline = ?", [*args, pipeline]
        if tag is not None:
            sql += (
                " AND EXISTS (SELECT 1 FROM run_tags t WHERE t.run_id = r.run_id"
                " AND t.key = ? AND t.value = ?)"
            )
            args = [*args, tag[0], tag[1]]
        if exclude_run is not None:
            sql, args = sql + " AND r.run_id != ?", [*args, exclude_run]
        return sql, args

    def step_totals(self, run_id: str) -> list[StepTotals]:
        """Per step: planned and seen requests, outcome counts, usage and cost."""

        def query(c: Cursor) -> list[StepTotals]:
            plans = {
                s: (n, to_decimal(e), to_decimal(m))
                for s, n, e, m in c.execute(
                    "SELECT step_id, requests, plan_cost_expected, plan_cost_max FROM steps"
                    " WHERE run_id = ?",
                    (run_id,),
                ).fetchall()
            }
            counts: dict[str, dict[str, int]] = {}
            for s, status, n in c.execute(
                "SELECT step_id, status, count(*) FROM requests WHERE run_id = ?"
                " GROUP BY step_id, status",
                (run_id,),
            ).fetchall():
                counts.setdefault(s, {})[status] = n
            usage: dict[str, tuple[TokenUsage, Decimal]] = {}
            for s, *tokens, cost in c.execute(
                f"SELECT step_id, {USAGE_SUMS}, dsum(cost_usd) FROM usage WHERE run_id = ?"
                " GROUP BY step_id",
                (run_id,),
            ).fetchall():
                usage[s] = (token_usage(tokens), Decimal(cost))
            out = []
            for step_id in self.step_ids(run_id):
                planned, expected, maximum = plans.get(step_id, (0, None, None))
                n = counts.get(step_id, {})
                tokens, cost = usage.get(step_id, (TokenUsage(), ZERO))
                out.append(
                    StepTotals(
                        step_id=step_id, planned_requests=planned,
                        requests=max(planned, sum(n.values())),
                        succeeded=n.get("succeeded", 0), failed=n.get("failed", 0),
                        skipped=n.get("skipped", 0), usage=tokens, cost=cost,
                        plan_cost_expected=expected, plan_cost_max=maximum,
                    )
                )  # fmt: skip
            return out

        return self._read(query)
