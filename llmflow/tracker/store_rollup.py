"""The usage roll-ups: the ledger summed as it is written, so a report reads a run's
totals in time that grows with its steps, never with its requests.

Tables (schema version 5, :data:`llmflow.tracker.schema.ROLLUP_DDL`)
    usage_totals   per (run, step, tier, model, mode): billed responses, how many of them
                   were successes (the request's status became ``succeeded`` in the same
                   transaction), how many read from / wrote to the prompt cache, the six
                   token sums, and the exact cost. ``id`` orders the groups by first use.
    usage_seconds  per (run, UTC second of ``recorded_at``): the cost recorded in that
                   second and the latest ``recorded_at``: the spend series sums these.

Every usage row is added to both by :func:`add_billed`, in the transaction that inserts
it (:class:`~llmflow.tracker.store_ops.RecordOp`, the only writer of the ledger).
:func:`rebuild` sums them from the ledger instead: the upgrade to version 5, and stores
whose ledger rows were inserted directly (benchmarks, tests).

Money stays exact the way the budget counters keep it: the affected rows are read,
added to in Python with ``Decimal`` and written back (TEXT decimal strings on SQLite,
``NUMERIC`` on PostgreSQL). Integer picodollars would be exact only up to 12 decimals,
and a policy's price overrides can carry more; SQLite's ``+`` on text is a float. The
cost is one read of the touched groups and one write per touched group and second per
commit, not per response. Writers of one run never race: every commit that records
usage has locked the run's ``run/<id>`` budget counter first (``FOR UPDATE`` on
PostgreSQL; SQLite has one writer at a time).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

from llmflow.catalog import ZERO, format_usd
from llmflow.tracker.db import Cursor
from llmflow.tracker.records import Response

#: The summed columns of ``usage_totals``, in :class:`Sums` order.
SUM_COLS = (
    "responses, succeeded, reading, writing, input_tokens, cache_write_5m, cache_write_1h,"
    " cache_read, output_tokens, thinking_tokens, cost_usd"
)
#: The key columns of ``usage_totals`` after ``run_id``.
KEY_COLS = "step_id, tier, model, mode"

GroupKey = tuple[str, str, str, str]  # step_id, tier ('' for none), model, mode


@dataclass(slots=True)
class Sums:
    """What one roll-up group holds: counts, the six token sums, the exact cost."""

    counts: list[int] = field(default_factory=lambda: [0] * 4)  # responses .. writing
    tokens: list[int] = field(default_factory=lambda: [0] * 6)  # USAGE_COLS order
    cost: Decimal = ZERO

    @classmethod
    def of_row(cls, values: Sequence[Any]) -> Sums:
        """From the :data:`SUM_COLS` values of a row."""
        return cls(
            [int(v) for v in values[:4]], [int(v) for v in values[4:10]], Decimal(values[10])
        )

    def add_response(self, r: Response, *, success: bool) -> None:
        u = r.usage
        self.counts[0] += 1
        self.counts[1] += success
        self.counts[2] += u.cache_read > 0
        self.counts[3] += u.cache_write_5m + u.cache_write_1h > 0
        for i, n in enumerate(
            (u.input, u.cache_write_5m, u.cache_write_1h, u.cache_read, u.output, u.thinking)
        ):
            self.tokens[i] += n
        self.cost += r.cost

    def merge(self, other: Sums) -> None:
        for i, n in enumerate(other.counts):
            self.counts[i] += n
        for i, n in enumerate(other.tokens):
            self.tokens[i] += n
        self.cost += other.cost

    def values(self) -> tuple[Any, ...]:
        """The :data:`SUM_COLS` values to write."""
        return (*self.counts, *self.tokens, format_usd(self.cost))


def group_key(r: Response) -> GroupKey:
    return (r.step_id, r.tier or "", r.model, r.mode)


def second_of(moment: str) -> str:
    """The UTC second a fixed-width ``recorded_at`` falls in, in the same format."""
    return f"{moment[:19]}.000000{moment[26:]}"


def add_billed(c: Cursor, run_id: str, billed: Iterable[tuple[Response, bool]], now: str) -> None:
    """Add the usage rows of ``billed`` (a response, and whether it is a success rather
    than a billed failure), all recorded at ``now``, to the run's roll-ups."""
    groups: dict[GroupKey, Sums] = {}
    for response, success in billed:
        groups.setdefault(group_key(response), Sums()).add_response(response, success=success)
    if not groups:
        return
    steps = sorted({key[0] for key in groups})
    marks = ", ".join("?" for _ in steps)
    found = {
        (s, tier, model, mode): Sums.of_row(values)
        for s, tier, model, mode, *values in c.execute(
            f"SELECT {KEY_COLS}, {SUM_COLS} FROM usage_totals"
            f" WHERE run_id = ? AND step_id IN ({marks})",
            (run_id, *steps),
        ).fetchall()
    }
    new = [(run_id, *key, *sums.values()) for key, sums in groups.items() if key not in found]
    for key, sums in groups.items():
        if key in found:
            found[key].merge(sums)
    _write_groups(c, [(run_id, *key, *found[key].values()) for key in groups if key in found], new)
    cost = sum((sums.cost for sums in groups.values()), ZERO)
    _add_second(c, run_id, second_of(now), now, cost)


def _write_groups(c: Cursor, changed: list[tuple[Any, ...]], new: list[tuple[Any, ...]]) -> None:
    """Write groups back (``changed``) and insert the ``new`` ones, in first-use order;
    rows are ``(run_id, step_id, tier, model, mode, *SUM_COLS values)``."""
    if changed:
        sets = ", ".join(f"{col} = ?" for col in SUM_COLS.split(", "))
        c.executemany(
            f"UPDATE usage_totals SET {sets} WHERE run_id = ? AND step_id = ? AND tier = ?"
            " AND model = ? AND mode = ?",
            [(*row[5:], *row[:5]) for row in changed],
        )
    if new:
        marks = ", ".join("?" for _ in new[0])
        c.executemany(
            f"INSERT INTO usage_totals (run_id, {KEY_COLS}, {SUM_COLS}) VALUES ({marks})", new
        )


def _add_second(c: Cursor, run_id: str, second: str, last_at: str, cost: Decimal) -> None:
    row = c.execute(
        "SELECT last_at, cost_usd FROM usage_seconds WHERE run_id = ? AND second = ?",
        (run_id, second),
    ).fetchone()
    if row is None:
        c.execute(
            "INSERT INTO usage_seconds (run_id, second, last_at, cost_usd) VALUES (?, ?, ?, ?)",
            (run_id, second, last_at, format_usd(cost)),
        )
        return
    c.execute(
        "UPDATE usage_seconds SET last_at = ?, cost_usd = ? WHERE run_id = ? AND second = ?",
        (max(row[0], last_at), format_usd(Decimal(row[1]) + cost), run_id, second),
    )


def rebuild(c: Cursor, run_ids: Sequence[str] | None = None) -> None:
    """(Re)build the roll-ups of ``run_ids`` (None: every run) from the usage ledger and
    the requests that succeeded, exactly (``dsum``); groups keep their first-use order."""
    where, args = "", tuple(run_ids or ())
    if run_ids is not None:
        where = f" AND run_id IN ({', '.join('?' for _ in args)})" if args else " AND 0 = 1"
    c.execute("DELETE FROM usage_totals WHERE 1 = 1" + where, args)
    c.execute("DELETE FROM usage_seconds WHERE 1 = 1" + where, args)
    groups: dict[tuple[str, GroupKey], Sums] = {}
    for run_id, s, tier, model, mode, _, *values in c.execute(
        "SELECT run_id, step_id, coalesce(tier, ''), model, mode, min(id), count(*), 0,"
        " sum(CASE WHEN cache_read > 0 THEN 1 ELSE 0 END),"
        " sum(CASE WHEN cache_write_5m + cache_write_1h > 0 THEN 1 ELSE 0 END),"
        " sum(input_tokens), sum(cache_write_5m), sum(cache_write_1h), sum(cache_read),"
        " sum(output_tokens), sum(thinking_tokens), dsum(cost_usd) FROM usage"
        f" WHERE 1 = 1{where} GROUP BY run_id, step_id, coalesce(tier, ''), model, mode"
        " ORDER BY min(id)",
        args,
    ).fetchall():
        groups[(run_id, (s, tier, model, mode))] = Sums.of_row(values)
    for run_id, s, tier, model, mode, n in c.execute(
        "SELECT run_id, step_id, coalesce(tier, ''), coalesce(model, ''), coalesce(mode, ''),"
        f" count(*) FROM requests WHERE status = 'succeeded'{where}"
        " GROUP BY run_id, step_id, coalesce(tier, ''), coalesce(model, ''), coalesce(mode, '')",
        args,
    ).fetchall():
        groups.setdefault((run_id, (s, tier, model, mode)), Sums()).counts[1] += int(n)
    _write_groups(c, [], [(run_id, *key, *sums.values()) for (run_id, key), sums in groups.items()])
    c.executemany(
        "INSERT INTO usage_seconds (run_id, second, last_at, cost_usd) VALUES (?, ?, ?, ?)",
        [
            (run_id, second_of(last), last, format_usd(Decimal(cost)))
            for run_id, _, last, cost in c.execute(
                "SELECT run_id, substr(recorded_at, 1, 19), max(recorded_at), dsum(cost_usd)"
                f" FROM usage WHERE 1 = 1{where} GROUP BY run_id, substr(recorded_at, 1, 19)",
                args,
            ).fetchall()
        ],
    )
