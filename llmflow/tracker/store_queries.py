"""The run store's read side: outputs in item order, spend by run, totals, report aggregates.

Every query for reports reads what grows with a run's steps (and time), never with its
requests: the usage roll-ups (:mod:`llmflow.tracker.store_rollup`: the ledger summed per
step, tier, model and mode, and per UTC second), index seeks for the counts of requests
not succeeded (``requests_claim``) and for the ``max_tokens`` stops
(``requests_truncated``), and the ends of ``usage_spend`` for when a run was billed.
The SQL is the portable kind (:mod:`llmflow.tracker.db`): ``substr``/``CAST`` over the
fixed-width ISO 8601 timestamps for time buckets, and money summed exactly
(:func:`money_rows`, or ``Decimal`` over the few roll-up rows).
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any, get_args

from llmflow.catalog import ZERO, TokenUsage, format_usd
from llmflow.tracker.db import Cursor, Dialect
from llmflow.tracker.records import (
    JsonValue,
    Mode,
    OutputRecord,
    RequestStatus,
    StepTotals,
    check_step_id,
)
from llmflow.tracker.schema import parse_timestamp, to_decimal
from llmflow.tracker.store_base import StoreBase
from llmflow.tracker.store_requests import USAGE_COLS, token_usage
from llmflow.tracker.store_rollup import KEY_COLS, SUM_COLS, Sums

#: Sums of :data:`USAGE_COLS`, for a GROUP BY over ``usage``.
USAGE_SUMS = ", ".join(f"sum({col})" for col in USAGE_COLS.split(", "))

#: Time buckets of a run's spend series (about; a run crossing midnight has a few more).
SERIES_BUCKETS = 200

#: Seconds since midnight (UTC) of ``second`` (``2026-11-30T10:00:00.000000+00:00``).
_SECOND_OF_DAY = (
    "CAST(substr(second, 12, 2) AS INTEGER) * 3600"
    " + CAST(substr(second, 15, 2) AS INTEGER) * 60"
    " + CAST(substr(second, 18, 2) AS INTEGER)"
)
_CHUNK = 500  # run or step ids per IN (...) list

#: The statuses a request has before it succeeds, or instead (counted from ``requests``).
_NOT_SUCCEEDED = tuple(s for s in get_args(RequestStatus) if s != "succeeded")

#: The distinct steps of a run's requests, one index seek each (a loose index scan).
_SEEN_STEPS = (
    "WITH RECURSIVE seen (step_id) AS (SELECT min(step_id) FROM requests WHERE run_id = ?"
    " UNION ALL SELECT (SELECT min(r.step_id) FROM requests r WHERE r.run_id = ?"
    " AND r.step_id > seen.step_id) FROM seen WHERE seen.step_id IS NOT NULL)"
    " SELECT step_id FROM seen WHERE step_id IS NOT NULL"
)

#: The two select items that ``{money}`` stands for in :func:`money_rows`: the sum of
#: ``cost_usd``, then what SQLite's fast sum must check. SQLite stores money as text,
#: and its exact ``dsum`` runs Python for every row; the fast sum adds integer
#: picodollars instead, ``round(amount * 10^12)``, exact for an amount below 100 USD
#: with at most 12 decimals (its double is within 2^-46 of it, a 70th of a picodollar).
#: The check is the most decimals of an amount, plus 100 if one is 100 USD or more.
#: PostgreSQL sums NUMERIC exactly.
_FAST_MONEY: Mapping[Dialect, str] = {
    "sqlite": "sum(CAST(round(cost_usd * 1000000000000) AS INTEGER)),"
    " max(length(cost_usd) - instr(cost_usd, '.') + 100 * (abs(cost_usd) >= 100))",
    "postgresql": "sum(cost_usd), 0",
}
_EXACT_MONEY = "dsum(cost_usd), 0"
_PICO_DECIMALS = 12


def money_rows(c: Cursor, dialect: Dialect, sql: str, args: Sequence[Any]) -> list[tuple[Any, ...]]:
    """The rows of ``sql``, whose last select item is ``{money}`` (the sum of ``cost_usd``),
    with that sum as a Decimal (ZERO over no rows) in place of its two columns.

    SQLite tries the fast integer sum; if an amount is beyond it (too many decimals, too
    large) or the integers overflow, the rows are read again with ``dsum``.
    """
    try:
        rows = c.execute(sql.format(money=_FAST_MONEY[dialect]), args).fetchall()
    except sqlite3.OperationalError as exc:  # "integer overflow": a sum past 9.2M USD
        if "overflow" not in str(exc):
            raise
    else:
        if dialect != "sqlite":
            return [(*row[:-2], ZERO if row[-2] is None else Decimal(row[-2])) for row in rows]
        if all(row[-1] is None or row[-1] <= _PICO_DECIMALS for row in rows):
            return [(*row[:-2], _from_picos(row[-2])) for row in rows]
    rows = c.execute(sql.format(money=_EXACT_MONEY), args).fetchall()
    return [(*row[:-2], ZERO if row[-2] is None else Decimal(row[-2])) for row in rows]


def _from_picos(picos: int | None) -> Decimal:
    # as dsum gives it: the shortest decimal string, read back
    return ZERO if picos is None else Decimal(format_usd(Decimal(picos).scaleb(-_PICO_DECIMALS)))


@dataclass(frozen=True, slots=True)
class UsageCell:
    """Billed responses of one step on one (tier, model, mode): counts, tokens, cost.

    ``first_id`` orders the groups as they were first used (their roll-up row's id);
    ``succeeded`` counts the responses that were successes (the others were billed
    failures); ``reading`` and ``writing`` those that read from / wrote to the prompt
    cache.
    """

    step_id: str
    tier: str | None
    model: str
    mode: Mode
    first_id: int
    responses: int
    succeeded: int
    reading: int
    writing: int
    usage: TokenUsage
    cost: Decimal


@dataclass(frozen=True, slots=True)
class SpendBucket:
    """What a run spent within one time bucket: ``(day, slot)``, the UTC day of
    ``recorded_at`` and its second of the day divided by the bucket width (in seconds),
    so buckets follow each other in time order. ``last`` is the latest ``recorded_at``
    within it."""

    day: str
    slot: int
    last: datetime
    cost: Decimal


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
        """Recorded spend of each of ``run_ids`` (every session), from the roll-ups."""
        ids = list(dict.fromkeys(run_ids))

        def query(c: Cursor) -> dict[str, Decimal]:
            out = dict.fromkeys(ids, ZERO)
            for at in range(0, len(ids), _CHUNK):
                chunk = ids[at : at + _CHUNK]
                marks = ", ".join("?" for _ in chunk)
                for run_id, cost in c.execute(
                    f"SELECT run_id, cost_usd FROM usage_totals WHERE run_id IN ({marks})", chunk
                ).fetchall():
                    out[run_id] += Decimal(cost)
            return out

        return self._read(query)

    def step_totals(
        self, run_id: str, *, usage: Mapping[str, tuple[TokenUsage, Decimal]] | None = None
    ) -> list[StepTotals]:
        """Per step: planned and seen requests, outcome counts, usage and cost.

        ``usage`` is each step's tokens and cost when the caller has them already
        (:func:`step_usage` of :meth:`usage_cells`; ``{}`` when it needs counts only);
        else they are read here. Steps come in plan order, then any others seen (as
        :meth:`step_ids`). Succeeded requests are counted by the roll-ups (a request
        succeeds once, in the transaction that bills it), the others by index seeks.
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
            cells = _cells(c, run_id)
            counts = _status_counts(c, run_id, cells)
            summed = step_usage(cells) if usage is None else usage
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

    def recorded_between(self, run_id: str) -> tuple[datetime, datetime] | None:
        """When the run's first and latest billed responses were recorded (None: nothing
        billed)."""
        row = self._read(
            lambda c: c.execute(
                "SELECT (SELECT min(recorded_at) FROM usage WHERE run_id = ?),"
                " (SELECT max(recorded_at) FROM usage WHERE run_id = ?)",
                (run_id, run_id),
            ).fetchone()
        )
        return (parse_timestamp(row[0]), parse_timestamp(row[1])) if row and row[0] else None

    def usage_cells(self, run_id: str) -> list[UsageCell]:
        """The run's usage ledger summed per step, tier, model and mode (its roll-up), in
        no particular order."""
        return self._read(lambda c: _cells(c, run_id))

    def spend_buckets(self, run_id: str, *, width_ms: int) -> list[SpendBucket]:
        """What the run spent per time bucket of a UTC day (:class:`SpendBucket`), in time
        order; empty buckets are left out. The ledger is summed per second
        (``usage_seconds``), so a bucket is ``width_ms`` rounded up to whole seconds
        (:func:`bucket_width_ms` picks a width)."""
        width = max(1, -(-int(width_ms) // 1000))
        sql = (
            f"SELECT substr(second, 1, 10), ({_SECOND_OF_DAY}) / CAST(? AS INTEGER),"
            " max(last_at), {money} FROM usage_seconds WHERE run_id = ? GROUP BY 1, 2"
        )
        rows = self._read(lambda c: money_rows(c, self._db.dialect, sql, (width, run_id)))
        buckets = [
            SpendBucket(day, int(slot), parse_timestamp(last), cost)
            for day, slot, last, cost in rows
        ]
        return sorted(buckets, key=lambda b: (b.day, b.slot))


def _cells(c: Cursor, run_id: str) -> list[UsageCell]:
    cells = []
    for first_id, s, tier, model, mode, *values in c.execute(
        f"SELECT id, {KEY_COLS}, {SUM_COLS} FROM usage_totals WHERE run_id = ?", (run_id,)
    ).fetchall():
        sums = Sums.of_row(values)
        responses, succeeded, reading, writing = sums.counts
        cells.append(
            UsageCell(
                step_id=s, tier=tier or None, model=model, mode=mode, first_id=int(first_id),
                responses=responses, succeeded=succeeded, reading=reading, writing=writing,
                usage=token_usage(sums.tokens), cost=sums.cost,
            )
        )  # fmt: skip
    return cells


def _status_counts(c: Cursor, run_id: str, cells: Sequence[UsageCell]) -> dict[str, dict[str, int]]:
    """step id → status → requests: succeeded ones from the roll-up ``cells``, the others
    by seeks of ``requests_claim`` (run, step, status) for each step the run's requests
    have."""
    counts: dict[str, dict[str, int]] = {}
    for cell in cells:
        step = counts.setdefault(cell.step_id, {})
        step["succeeded"] = step.get("succeeded", 0) + cell.succeeded
    steps = [s for (s,) in c.execute(_SEEN_STEPS, (run_id, run_id)).fetchall()]
    statuses = ", ".join(f"'{s}'" for s in _NOT_SUCCEEDED)
    for at in range(0, len(steps), _CHUNK):
        chunk = steps[at : at + _CHUNK]
        marks = ", ".join("?" for _ in chunk)
        for s, status, n in c.execute(
            "SELECT step_id, status, count(*) FROM requests WHERE run_id = ?"
            f" AND step_id IN ({marks}) AND status IN ({statuses}) GROUP BY step_id, status",
            (run_id, *chunk),
        ).fetchall():
            counts.setdefault(s, {})[status] = int(n)
    return counts
