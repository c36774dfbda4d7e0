"""The run store's read side: outputs in item order, spend by run, totals, report aggregates.

Every query for reports is an aggregate: what it returns grows with a run's steps (and
a bounded number of time buckets), never with its requests. The SQL is the portable
kind (:mod:`llmflow.tracker.db`): ``dsum`` for money, ``CASE WHEN`` for counts,
``substr``/``CAST`` over the fixed-width ISO 8601 timestamps for time buckets.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import Decimal
from pathlib import Path

from llmflow.catalog import ZERO, TokenUsage
from llmflow.tracker.db import Cursor
from llmflow.tracker.records import JsonValue, Mode, OutputRecord, StepTotals, check_step_id
from llmflow.tracker.schema import parse_timestamp, to_decimal
from llmflow.tracker.store_base import StoreBase
from llmflow.tracker.store_requests import USAGE_COLS, token_usage

#: Sums of :data:`USAGE_COLS`, for a GROUP BY over ``usage``.
USAGE_SUMS = ", ".join(f"sum({col})" for col in USAGE_COLS.split(", "))

#: Time buckets of a run's spend series (about; a run crossing midnight has a few more).
SERIES_BUCKETS = 200

#: Milliseconds since midnight (UTC) of ``recorded_at`` (``2026-11-30T10:00:00.123456+00:00``).
_MS_OF_DAY = (
    "CAST(substr(recorded_at, 12, 2) AS INTEGER) * 3600000"
    " + CAST(substr(recorded_at, 15, 2) AS INTEGER) * 60000"
    " + CAST(substr(recorded_at, 18, 2) AS INTEGER) * 1000"
    " + CAST(substr(recorded_at, 21, 3) AS INTEGER)"
)
_CHUNK = 500  # run ids per IN (...) list


@dataclass(frozen=True, slots=True)
class UsageCell:
    """Billed responses of one step on one (tier, model, mode) within one time bucket.

    A bucket is ``(day, slot)``: the UTC day of ``recorded_at`` and its millisecond of
    the day divided by the bucket width, so buckets follow each other in time order.
    ``first_id`` is the smallest ledger id (the order groups first appeared in);
    ``reading`` and ``writing`` count the responses that read from / wrote to the
    prompt cache; ``first`` and ``last`` are the earliest and latest ``recorded_at``
    within the cell.
    """

    step_id: str
    tier: str | None
    model: str
    mode: Mode
    day: str
    slot: int
    first_id: int
    first: datetime
    last: datetime
    responses: int
    reading: int
    writing: int
    usage: TokenUsage
    cost: Decimal

    @property
    def bucket(self) -> tuple[str, int]:
        return self.day, self.slot


def step_usage(cells: Iterable[UsageCell]) -> dict[str, tuple[TokenUsage, Decimal]]:
    """Tokens and exact cost per step, summed over ``cells`` (for :meth:`step_totals`)."""
    out: dict[str, tuple[TokenUsage, Decimal]] = {}
    for cell in cells:
        tokens, cost = out.get(cell.step_id, (TokenUsage(), ZERO))
        out[cell.step_id] = (tokens + cell.usage, cost + cell.cost)
    return out


def bucket_width_ms(start: datetime, end: datetime, buckets: int) -> int:
    """Milliseconds per bucket for about ``buckets`` buckets from ``start`` to ``end``."""
    span = max(0, -(-(end - start) // timedelta(milliseconds=1)))
    return max(1, -(-span // max(1, buckets)))


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
        return self.runs_spent([run_id])[run_id]

    def runs_spent(self, run_ids: Sequence[str]) -> dict[str, Decimal]:
        """Recorded spend of each of ``run_ids`` (every session): one grouped read."""
        ids = list(dict.fromkeys(run_ids))

        def query(c: Cursor) -> dict[str, Decimal]:
            out = dict.fromkeys(ids, ZERO)
            for at in range(0, len(ids), _CHUNK):
                chunk = ids[at : at + _CHUNK]
                marks = ", ".join("?" for _ in chunk)
                for run_id, spent in c.execute(
                    f"SELECT run_id, dsum(cost_usd) FROM usage WHERE run_id IN ({marks})"
                    " GROUP BY run_id",
                    chunk,
                ).fetchall():
                    out[run_id] = Decimal(spent)
            return out

        return self._read(query)

    def step_totals(
        self, run_id: str, *, usage: Mapping[str, tuple[TokenUsage, Decimal]] | None = None
    ) -> list[StepTotals]:
        """Per step: planned and seen requests, outcome counts, usage and cost.

        ``usage`` is each step's tokens and cost when the caller has already summed
        the ledger (:func:`step_usage` of :meth:`usage_cells`); else it is summed here.
        Steps come in plan order, then any others seen (as :meth:`step_ids`).
        """

        def query(c: Cursor) -> list[StepTotals]:
            plans = {
                s: (n, to_decimal(e), to_decimal(m))
                for s, n, e, m in c.execute(
                    "SELECT step_id, requests, plan_cost_expected, plan_cost_max FROM steps"
                    " WHERE run_id = ? ORDER BY position",
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
            summed = usage
            if summed is None:
                summed = {
                    s: (token_usage(tokens), Decimal(cost))
                    for s, *tokens, cost in c.execute(
                        f"SELECT step_id, {USAGE_SUMS}, dsum(cost_usd) FROM usage"
                        " WHERE run_id = ? GROUP BY step_id",
                        (run_id,),
                    ).fetchall()
                }
            seen = sorted(set(counts) - set(plans))
            out = []
            for step_id in [*plans, *seen]:
                planned, expected, maximum = plans.get(step_id, (0, None, None))
                n = counts.get(step_id, {})
                tokens, cost = summed.get(step_id, (TokenUsage(), ZERO))
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

    def max_tokens_stops(self, run_id: str) -> dict[str, int]:
        """step id → succeeded requests that stopped at ``max_tokens`` (truncated)."""
        rows = self._read(
            lambda c: c.execute(
                "SELECT step_id, count(*) FROM requests WHERE run_id = ?"
                " AND status = 'succeeded' AND stop_reason = 'max_tokens' GROUP BY step_id",
                (run_id,),
            ).fetchall()
        )
        return {step_id: n for step_id, n in rows}

    def last_recorded(self, run_id: str) -> datetime | None:
        """When the run's latest billed response was recorded (None: nothing billed)."""
        row = self._read(
            lambda c: c.execute(
                "SELECT max(recorded_at) FROM usage WHERE run_id = ?", (run_id,)
            ).fetchone()
        )
        return parse_timestamp(row[0]) if row and row[0] else None

    def usage_cells(self, run_id: str, *, width_ms: int) -> list[UsageCell]:
        """The run's usage ledger summed per step, tier, model, mode and time bucket.

        One pass over the ledger in SQL; a bucket is ``width_ms`` milliseconds of a UTC
        day (:class:`UsageCell`; :func:`bucket_width_ms` picks a width), so the result
        has at most steps × tiers × modes × buckets rows, whatever the requests. Cells
        come in no particular order.
        """
        width = max(1, int(width_ms))
        rows = self._read(
            lambda c: c.execute(
                "SELECT step_id, tier, model, mode, substr(recorded_at, 1, 10),"
                f" ({_MS_OF_DAY}) / CAST(? AS INTEGER), min(id),"
                " min(recorded_at), max(recorded_at), count(*),"
                " sum(CASE WHEN cache_read > 0 THEN 1 ELSE 0 END),"
                " sum(CASE WHEN cache_write_5m + cache_write_1h > 0 THEN 1 ELSE 0 END),"
                f" {USAGE_SUMS}, dsum(cost_usd)"
                " FROM usage WHERE run_id = ? GROUP BY 1, 2, 3, 4, 5, 6",
                (width, run_id),
            ).fetchall()
        )
        return [
            UsageCell(
                step_id=s, tier=tier, model=model, mode=mode, day=day, slot=int(slot),
                first_id=int(first_id), first=parse_timestamp(first),
                last=parse_timestamp(last), responses=int(n),
                reading=int(rd), writing=int(wr), usage=token_usage(tokens), cost=Decimal(cost),
            )
            for s, tier, model, mode, day, slot, first_id, first, last, n, rd, wr, *tokens, cost
            in rows
        ]  # fmt: skip
