"""The tracker: the store's budget + pricing + progress, the one object the executor talks to.

Lifecycle of a sync request::

    [res], _ = await tracker.dispatch_many(step, [(key, i, upper)], model=..., mode="sync")
    ...send...  → await tracker.record_async([Completed(...)])
               or await tracker.record_failure_async(step, key, i, error=..., reservation=res)

A reservation is one atomic check-and-reserve in the run store, across every limit
that applies (run, day, month, tag) and every process sharing the store
(:mod:`llmflow.tracker.store_budget`); a refusal is :class:`~llmflow.errors.BudgetExceeded`
naming the limit. The ``*_async`` methods are group-committed: every store operation
queued during one event-loop tick is written in one transaction, which commits before
any of their callers goes on (nothing is sent before its reservation is durable, and a
response's usage is durable before the slot it used is given to the next request).
The plain methods commit at once (scripts and tests).

A batch: ``reserve_batch`` makes the intent durable before the POST,
``batch_submitted`` names the created batch (``release`` the reservations if no batch
can exist), ``record_batch`` for each page of results, ``batch_ended`` at the end. On
resume, ``resume_reservations`` takes over what the open batches still hold.

Every response is priced by :func:`~llmflow.tracker.billing.response_cost`.
"""

from __future__ import annotations

import asyncio
import itertools
import secrets
import threading
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any, Literal

import structlog

from llmflow.catalog import ModelInfo, TokenUsage, format_usd
from llmflow.errors import BudgetExceeded, RunStoreError
from llmflow.tracker.billing import Completed, Failed, open_cost, response_cost
from llmflow.tracker.budget import BudgetAlert, Reservation, SessionLedger, period_start
from llmflow.tracker.progress import Progress, StepProgress
from llmflow.tracker.records import FinalStatus, JsonValue, Mode, RunInfo, RunRecord
from llmflow.tracker.store import RunStore
from llmflow.tracker.store_budget import Refusal, StoreLimit
from llmflow.tracker.store_ops import (
    BatchIntentOp,
    Dispatch,
    Failure,
    Recorded,
    RecordOp,
    Reserved,
    ReserveOp,
    StoreOp,
)
from llmflow.tracker.summary import RunSummary, build_summary, write_summary

__all__ = ["Completed", "Failed", "LimitSpec", "Tracker"]

_log = structlog.get_logger("llmflow.tracker")

Entry = tuple[str, int, Decimal]  # (key, item_index, upper bound)

#: At most one group commit per this many seconds while a run is busy: what the ops
#: queued meanwhile wait, at most (1 ms: ~0.5% of a 200 ms API call).
FLUSH_SECONDS = 0.001

#: Recordings nothing waits to send wait this long for the next reservation's group
#: commit to ride in (their reservations, at least what they cost, hold the budget).
RECORD_SECONDS = 0.02


@dataclass(frozen=True, slots=True)
class LimitSpec:
    """A budget limit as the policy states it.

    ``period`` ``run`` limits this run (across its resumes and workers); ``day``/``month``
    limit the spend of every run of the pipeline in the UTC calendar period, or, with
    ``tag`` (key, value), of every run carrying that tag label. ``key`` names what sets
    it, for messages (``budget.per_day_usd``, ``--budget``).
    """

    amount: Decimal
    period: Literal["run", "day", "month"] = "run"
    tag: tuple[str, str] | None = None
    key: str | None = None

    @property
    def name(self) -> str:
        return self.period if self.tag is None else f"{self.period}[{self.tag[0]}={self.tag[1]}]"

    def store_limit(self) -> StoreLimit:
        default = {"run": "budget.per_run_usd", "day": "budget.per_day_usd"}
        key = self.key or default.get(self.period, "budget.per_month_usd")
        return StoreLimit(self.name, key, self.amount, self.period, self.tag)


def new_intent_id() -> str:
    """A fresh id for a batch intent, until the API names the batch."""
    return f"intent_{secrets.token_hex(8)}"


def resets_at(period: str, moment: datetime) -> datetime | None:
    """When a day or month limit starts afresh after ``moment`` (None for a run's)."""
    if period == "day":
        return period_start("day", moment) + timedelta(days=1)
    if period == "month":
        start = period_start("month", moment)
        return (start + timedelta(days=32)).replace(day=1)
    return None


def refusal_error(refusal: Refusal, now: datetime) -> BudgetExceeded:
    """The error a refused reservation raises: the limit, its key, the money, the remedy."""
    lim = refusal.limit
    return BudgetExceeded(
        _tidy(lim.amount), _tidy(refusal.spent + refusal.unrecorded), _tidy(refusal.reserved),
        _tidy(refusal.needed), limit_name=lim.name, key=lim.key,
        resets_at=resets_at(lim.period, now),
    )  # fmt: skip


def _tidy(amount: Decimal) -> Decimal:
    return Decimal(format_usd(amount))


class Tracker:
    """Records every response, reserves through the store, keeps per-step counters.

    ``budget`` is this process's view: its open reservations and what it settled; the
    limits themselves are checked in the store.
    """

    def __init__(
        self,
        store: RunStore,
        run: RunRecord,
        limits: Sequence[LimitSpec] = (),
        *,
        alert_at: Decimal | None = None,
        baseline: ModelInfo | None = None,
        resumed: bool = False,
        worker_id: str | None = None,
    ) -> None:
        self.store = store
        self.run = run
        self.limits = [spec.store_limit() for spec in limits]
        self.alert_at = alert_at
        self.baseline = baseline
        self.resumed = resumed
        self.worker_id = worker_id
        self.scopes = store.scopes_of(run.run_id)
        self.budget = SessionLedger()
        self._ids = itertools.count(1)
        self.progress = Progress(store.step_totals(run.run_id))
        self._alerted = frozenset(a.limit_name for a in store.alerts(run.run_id))
        self._earlier = store.keys_with_status(run.run_id, ("failed", "skipped"))
        self._lock = threading.Lock()
        self._queue: list[tuple[StoreOp, asyncio.Future[Any]]] = []
        self._intents: dict[str, str] = {}
        self._last_flush = float("-inf")
        self._flush_at = float("inf")
        self._flush_timer: asyncio.TimerHandle | None = None

    @property
    def run_id(self) -> str:
        return self.run.run_id

    @classmethod
    def open(
        cls,
        store: RunStore,
        run_id: str,
        info: RunInfo,
        *,
        limits: Sequence[LimitSpec] = (),
        alert_at: Decimal | None = None,
        baseline: ModelInfo | None = None,
        worker_id: str | None = None,
    ) -> Tracker:
        """Start or resume ``run_id``; its limits are checked in the store on every
        reservation (what other runs and processes spent and hold counts at once)."""
        run, resumed = store.open_run(run_id, info)
        return cls(
            store, run, limits, alert_at=alert_at, baseline=baseline, resumed=resumed,
            worker_id=worker_id,
        )  # fmt: skip

    # -- the store, now or group-committed ---------------------------------------

    def _commit(self, op: StoreOp) -> Any:
        return self.store.commit([op])[0]

    def _submit(self, op: StoreOp, *, urgent: bool = True) -> asyncio.Future[Any]:
        """Queue ``op`` for the next group commit. An ``urgent`` one (a request waits for
        it to be sent) commits at the end of this event-loop tick, or :data:`FLUSH_SECONDS`
        after the last commit when that was so recent (a busy run writes a few
        transactions per interval, not one per response); others wait up to
        :data:`RECORD_SECONDS` for an urgent one to commit with."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future[Any] = loop.create_future()
        self._queue.append((op, future))
        now = loop.time()
        at = max(now, self._last_flush + FLUSH_SECONDS) if urgent else now + RECORD_SECONDS
        if at < self._flush_at:
            if self._flush_timer is not None:
                self._flush_timer.cancel()
            self._flush_at = at
            self._flush_timer = loop.call_at(at, self._flush)
        return future

    def _flush(self) -> None:
        if self._flush_timer is not None:  # called early: the timer has nothing to do
            self._flush_timer.cancel()
        self._flush_timer, self._flush_at = None, float("inf")
        queue, self._queue = self._queue, []
        if not queue:
            return
        self._last_flush = time.monotonic()  # the event loop's clock
        records = [op for op, _ in queue if isinstance(op, RecordOp)]
        merged = _merged(records) if len(records) > 1 else None
        ops = [op for op, _ in queue if merged is None or not isinstance(op, RecordOp)]
        try:
            results = self.store.commit([*ops, merged] if merged is not None else ops)
        except Exception as exc:
            for _, future in queue:
                if not future.done():
                    future.set_exception(exc)
            return
        if merged is not None:  # every recording of the tick shares one result
            shared, others = results[-1], iter(results[:-1])
            first = True
            for op, future in queue:
                if isinstance(op, RecordOp):
                    mine = shared if first else Recorded(shared.recorded)
                    first = False
                else:
                    mine = next(others)
                if not future.done():
                    future.set_result(mine)
            return
        for (_, future), result in zip(queue, results, strict=True):
            if not future.done():
                future.set_result(result)

    # -- dispatch ----------------------------------------------------------------

    def _reserve_op(
        self, step_id: str, entries: Sequence[Entry], model: str, tier: str | None, mode: Mode,
        *, all_or_none: bool = False, batch_id: str | None = None,
    ) -> ReserveOp:  # fmt: skip
        return ReserveOp(
            self.run_id, self.scopes, self.limits,
            [Dispatch(step_id, key, index, upper) for key, index, upper in entries],
            model, tier, mode, self.worker_id, all_or_none=all_or_none, batch_id=batch_id,
        )  # fmt: skip

    def _reserved(
        self, entries: Sequence[Entry], result: Reserved, label: str
    ) -> tuple[list[Reservation], BudgetExceeded | None]:
        taken = entries[: result.accepted]
        made = [
            self.budget.hold(Reservation(next(self._ids), upper, label, result.day))
            for _, _, upper in taken
        ]
        if result.refusal is None:
            return made, None
        error = refusal_error(result.refusal, self.store.now())
        _log.info(
            "budget.refused", run_id=self.run_id, limit_name=error.limit_name, key=error.key,
            limit=format_usd(error.limit), spent=format_usd(error.spent),
            reserved=format_usd(error.reserved), needed=format_usd(error.needed), label=label,
        )  # fmt: skip
        return made, error

    def dispatch(
        self,
        step_id: str,
        key: str,
        item_index: int,
        *,
        model: str,
        tier: str | None,
        mode: Mode,
        upper_bound: Decimal,
    ) -> Reservation:
        """Reserve a sync request's upper bound and mark it in flight (committed now).

        Raises BudgetExceeded (nothing reserved) or RunStoreError (the key already
        succeeded).
        """
        entries = [(key, item_index, upper_bound)]
        result = self._commit(self._reserve_op(step_id, entries, model, tier, mode))
        made, refused = self._reserved(entries, result, f"{step_id}/{item_index}")
        if refused is not None:
            raise refused
        return made[0]

    async def dispatch_many(
        self,
        step_id: str,
        entries: Sequence[Entry],
        *,
        model: str,
        tier: str | None,
        mode: Mode,
    ) -> tuple[list[Reservation], BudgetExceeded | None]:
        """Reserve the leading ``entries`` that fit, in one group-committed transaction:
        their reservations, and the refusal of the first that did not fit (if any)."""
        op = self._reserve_op(step_id, entries, model, tier, mode)
        result: Reserved = await self._submit(op)
        return self._reserved(entries, result, step_id)

    def headroom(self) -> Decimal | None:
        """The most a reservation could take now (every limit's scope read from the
        store, without locking); None without limits."""
        if not self.limits:
            return None
        day = self.store.day()
        counters = self.store.counters(self.scopes.keys(day))
        return max(
            Decimal(0),
            min(lim.amount - counters.get(lim.scope(self.scopes, day)).used for lim in self.limits),
        )

    def refusal(self, amount: Decimal) -> BudgetExceeded | None:
        """The refusal a reservation of ``amount`` would meet now (read, not locked)."""
        day = self.store.day()
        counters = self.store.counters(self.scopes.keys(day))
        _, refused = counters.fitting(self.scopes, self.limits, day, [amount], all_or_none=True)
        return None if refused is None else refusal_error(refused, self.store.now())

    def unhold(self, reservations: Iterable[Reservation]) -> None:
        """Stop counting reservations in this process's view (the store still holds
        them: a submitted batch's, until its results are collected)."""
        for r in reservations:
            self.budget.release(r)

    def reserve_batch(
        self,
        step_id: str,
        requests: Sequence[Entry],
        *,
        model: str = "",
        tier: str | None = None,
        intent_id: str | None = None,
    ) -> dict[str, Reservation]:
        """Reserve every request ``(key, item_index, upper_bound)`` of a batch chunk, or
        none (BudgetExceeded), and make the intent to create it durable (``intent_id``)."""
        intent_id = intent_id or new_intent_id()
        self._intents[step_id] = intent_id
        op = self._reserve_op(
            step_id, requests, model, tier, "batch", all_or_none=True, batch_id=intent_id
        )
        result = self._commit(BatchIntentOp(op, step_id))
        made, refused = self._reserved(requests, result, f"{step_id}/batch")
        if refused is not None:
            raise refused
        return {key: r for (key, _, _), r in zip(requests, made, strict=True)}

    def batch_submitted(
        self,
        step_id: str,
        batch_id: str,
        requests: Sequence[Entry],
        *,
        model: str,
        tier: str | None,
        intent_id: str | None = None,
    ) -> None:
        """The API created the batch of the intent (by default the step's last one)."""
        intent = intent_id or self._intents.pop(step_id, None)
        if intent is not None:
            self.store.batch_created(self.run_id, intent, batch_id)
        else:
            self.store.record_batch_submitted(
                self.run_id, step_id, batch_id, requests, model=model, tier=tier
            )
        _log.info("batch.submitted", step=step_id, batch_id=batch_id, requests=len(requests))

    def resume_reservations(self, batch_ids: Iterable[str] | None = None) -> dict[str, Reservation]:
        """Take over what open batches of the run still hold in the store (their money is
        committed), so that their results settle it.

        ``batch_ids`` limits it to those batches (the caller settles what it takes: a
        step resuming its own batches must not take another step's).
        """
        wanted = None if batch_ids is None else set(batch_ids)
        out: dict[str, Reservation] = {}
        for batch in self.store.open_batches(self.run_id):
            if wanted is not None and batch.batch_id not in wanted:
                continue
            held = self.store.batch_reservations(self.run_id, batch.batch_id)
            for key, (_, amount, day) in held.items():
                out[key] = self.budget.hold(
                    Reservation(next(self._ids), amount, f"{batch.step_id}/batch", day)
                )
        return out

    def release(self, reservations: Iterable[Reservation]) -> None:
        """Give reservations back (e.g. no batch was created; nothing was sent)."""
        held = list(reservations)
        if held:
            self._commit(RecordOp(self.run_id, self.scopes, releases=held))
            for r in held:
                self.budget.release(r)

    def unsend(self, unsent: Sequence[tuple[str, Reservation]]) -> None:
        """Give back the reservations of sync requests reserved ahead and never sent
        (the run stopped first): they are pending again, for a resume."""
        if unsent:
            self._commit(RecordOp(self.run_id, self.scopes, unsent=unsent))
            for _, r in unsent:
                self.budget.release(r)

    def batch_ended(
        self, batch_id: str, reservations: Mapping[str, Reservation], status: str = "ended"
    ) -> list[str]:
        """Close a batch; requests without a result fail and their reservations go back."""
        missing = self.store.mark_batch_ended(self.run_id, batch_id, status)
        self.release(r for key in missing if (r := reservations.get(key)) is not None)
        if missing:
            _log.warning("batch.missing_results", batch_id=batch_id, missing=len(missing))
        return missing

    # -- recording ---------------------------------------------------------------

    def record_response(
        self,
        step_id: str,
        key: str,
        item_index: int,
        model: ModelInfo,
        tier: str | None,
        mode: Mode,
        usage: TokenUsage,
        request_id: str | None,
        output: JsonValue,
        stop_reason: str | None,
        reservation: Reservation | None,
        *,
        service_tier: str | None = None,
        speed: str | None = None,
        inference_geo: str | None = None,
    ) -> Decimal:
        """Price, settle and commit one succeeded response; returns its exact cost."""
        done = Completed(
            step_id, key, item_index, model, tier, mode, usage, reservation,
            request_id, output, stop_reason, service_tier, speed, inference_geo,
        )  # fmt: skip
        return self.record_batch([done], [])[0]

    def _record_op(
        self,
        completed: Sequence[Completed] = (),
        failures: Sequence[Failure] = (),
        possibly_billed: Sequence[Reservation] = (),
    ) -> tuple[RecordOp, list[Decimal]]:
        costs = [response_cost(c) for c in completed]
        op = RecordOp(
            self.run_id, self.scopes,
            [(c.response(cost, open_usd=open_cost(c)), c.reservation)
             for c, cost in zip(completed, costs, strict=True)],
            failures, possibly_billed, alert_limits=self.limits, alert_at=self.alert_at,
            alerted=self._alerted,
        )  # fmt: skip
        return op, costs

    def record_batch(
        self, completed: Sequence[Completed], failed: Sequence[Failed] = ()
    ) -> list[Decimal]:
        """Commit many results in one transaction, then settle them; returns each cost.

        A result for a key that already succeeded (delivered again after a resume) is
        not recorded or charged twice: its reservation is released, its returned cost
        is 0, and it is logged as ``request.duplicate_result``.
        """
        op, costs = self._record_op(completed, [_failure(f) for f in failed])
        return self._recorded(op, self._commit(op), completed, failed, costs)

    async def record_async(
        self, completed: Sequence[Completed], failed: Sequence[Failed] = ()
    ) -> list[Decimal]:
        """:meth:`record_batch`, group-committed."""
        op, costs = self._record_op(completed, [_failure(f) for f in failed])
        return self._recorded(op, await self._submit(op, urgent=False), completed, failed, costs)

    def _recorded(
        self,
        op: RecordOp,
        result: Recorded,
        completed: Sequence[Completed],
        failed: Sequence[Failed],
        costs: list[Decimal],
    ) -> list[Decimal]:
        out: list[Decimal] = []
        for c, amount in zip(completed, costs, strict=True):
            duplicate = c.key not in result.recorded
            held = Decimal(0) if duplicate else amount + open_cost(c)
            if c.reservation is not None:
                self.budget.settle(c.reservation, held)
            elif not duplicate:
                self.budget.charge(held)
            if duplicate:
                _log.warning("request.duplicate_result", step=c.step_id, item=c.item_index)
                out.append(Decimal(0))
                continue
            out.append(amount)
            self.progress.add(
                c.step_id, usage=c.usage, cost=amount, succeeded=1, replaces=self._replaced(c.key)
            )
            _log.info(
                "request.completed",
                run_id=self.run_id, step=c.step_id, item=c.item_index, model=c.model.id,
                tier=c.tier, mode=c.mode, service_tier=c.service_tier, request_id=c.request_id,
                stop_reason=c.stop_reason, input=c.usage.input,
                cache_write_5m=c.usage.cache_write_5m, cache_write_1h=c.usage.cache_write_1h,
                cache_read=c.usage.cache_read, output=c.usage.output, thinking=c.usage.thinking,
                speed=c.speed, inference_geo=c.inference_geo, cost=format_usd(amount),
            )  # fmt: skip
        for f in failed:
            if f.reservation is not None:
                self.budget.release(f.reservation)
            self._count_failure(f.step_id, f.key, f.item_index, f.error, "failed")
        self._alerts_fired(result.alerts)
        return out

    def _alerts_fired(self, alerts: Sequence[BudgetAlert]) -> None:
        if not alerts:
            return
        self._alerted = self._alerted | {a.limit_name for a in alerts}
        for alert in alerts:
            _log.warning(
                "budget.alert", run_id=self.run_id, limit_name=alert.limit_name,
                limit=format_usd(alert.limit), threshold=format_usd(alert.threshold),
                spent=format_usd(alert.spent),
            )  # fmt: skip

    def _failure_op(
        self, step_id: str, key: str, item_index: int, error: str,
        reservation: Reservation | None, billed: Completed | None,
    ) -> tuple[RecordOp, Decimal]:  # fmt: skip
        amount = response_cost(billed) if billed is not None else Decimal(0)
        response = None
        if billed is not None:
            response = billed.response(amount, with_output=False, open_usd=open_cost(billed))
        failure = Failure(step_id, key, item_index, error, reservation, "failed", response)
        op, _ = self._record_op(failures=[failure])
        return op, amount

    def _failed(
        self, result: Recorded, step_id: str, key: str, item_index: int, error: str,
        reservation: Reservation | None, billed: Completed | None, amount: Decimal,
    ) -> Decimal:  # fmt: skip
        held = amount + open_cost(billed) if billed is not None else amount
        if reservation is not None:
            self.budget.settle(reservation, held)
        elif billed is not None:
            self.budget.charge(held)
        if billed is not None:
            self.progress.add(step_id, usage=billed.usage, cost=amount)
        self._alerts_fired(result.alerts)
        self._count_failure(step_id, key, item_index, error, "failed")
        return amount

    def record_failure(
        self,
        step_id: str,
        key: str,
        item_index: int,
        *,
        error: str,
        reservation: Reservation | None,
        billed: Completed | None = None,
    ) -> Decimal:
        """Commit a request that failed for good; release its reservation.

        ``billed`` is for a failure that was nonetheless paid for (e.g. a response
        that could not be used): its usage is priced, settled and recorded.
        Returns what the failure cost (usually 0).
        """
        op, amount = self._failure_op(step_id, key, item_index, error, reservation, billed)
        result = self._commit(op)
        return self._failed(result, step_id, key, item_index, error, reservation, billed, amount)

    async def record_failure_async(
        self,
        step_id: str,
        key: str,
        item_index: int,
        *,
        error: str,
        reservation: Reservation | None,
        billed: Completed | None = None,
    ) -> Decimal:
        """:meth:`record_failure`, group-committed."""
        op, amount = self._failure_op(step_id, key, item_index, error, reservation, billed)
        result = await self._submit(op, urgent=False)
        return self._failed(result, step_id, key, item_index, error, reservation, billed, amount)

    def record_possibly_billed(
        self, step_id: str, key: str, item_index: int, reservation: Reservation, *, error: str
    ) -> None:
        """An attempt failed in a way that may still have been billed (a timeout or a
        dropped connection after the request was sent): its whole upper bound moves from
        reserved to unrecorded (counted as spent by every limit), so the budget can never
        be passed by money the API took without answering. The request stays in flight."""
        op, _ = self._record_op(possibly_billed=[reservation])
        self._alerts_fired(self._commit(op).alerts)
        self.budget.settle(reservation, reservation.amount)
        _log.warning(
            "request.possibly_billed", run_id=self.run_id, step=step_id, item=item_index,
            upper_bound=format_usd(reservation.amount), error=error,
        )  # fmt: skip

    def record_skipped(self, step_id: str, key: str, item_index: int, *, reason: str) -> None:
        """Commit a request that will not be sent in this session (e.g. upstream failed)."""
        self.store.record_failure(
            self.run_id, step_id, key, item_index, error=reason, status="skipped"
        )
        self._count_failure(step_id, key, item_index, reason, "skipped")

    def _count_failure(
        self, step_id: str, key: str, item_index: int, error: str, status: str
    ) -> None:
        replaces = self._replaced(key)
        if status == "failed":
            self.progress.add(step_id, failed=1, replaces=replaces)
        else:
            self.progress.add(step_id, skipped=1, replaces=replaces)
        with self._lock:
            self._earlier[key] = "failed" if status == "failed" else "skipped"
        _log.warning(
            f"request.{status}", run_id=self.run_id, step=step_id, item=item_index, error=error
        )

    def _replaced(self, key: str) -> Literal["failed", "skipped"] | None:
        with self._lock:
            prev = self._earlier.pop(key, None)
        return "failed" if prev == "failed" else "skipped" if prev == "skipped" else None

    # -- progress and the end ----------------------------------------------------

    def set_step_total(self, step_id: str, total: int) -> None:
        self.progress.set_total(step_id, total)

    def step_progress(self, step_id: str) -> StepProgress:
        """done/total, spend and cache hit ratio of a step (this and earlier sessions)."""
        return self.progress.get(step_id)

    def summary(self) -> RunSummary:
        return build_summary(self.store, self.run_id, baseline=self.baseline)

    def finish(self, status: FinalStatus, *, write: bool = True) -> tuple[RunSummary, Path]:
        """Close the run: final status, outputs JSONL, ``summary.json``.

        Call it once in-flight work has settled; open reservations left at this
        point are logged as the error event ``budget.unsettled_at_finish``. A worker
        that is not the one closing a shared run passes ``write=False``: it reads the
        summary the store holds.
        """
        if self._queue:  # an interrupted run: what was received is still recorded
            self._flush()
        left = self.budget.open_reservations
        if left:
            _log.error("budget.unsettled_at_finish", run_id=self.run_id, reservations=left)
        try:
            if write:
                self.run = self.store.finish_run(self.run_id, status)
            else:
                self.run = self.store.get_run(self.run_id)
        except RunStoreError:
            _log.error("run.finish_failed", run_id=self.run_id, status=status)
            raise
        summary = build_summary(self.store, self.run_id, baseline=self.baseline)
        path = write_summary(self.store, self.run_id, baseline=self.baseline, summary=summary)
        _log.info(
            "run.summary",
            run_id=self.run_id,
            status=summary.status,
            cost=format_usd(summary.total.cost),
            path=str(path),
        )
        return summary, path


def _merged(ops: Sequence[RecordOp]) -> RecordOp:
    """One recording for many of the same run: the same rows, written by one statement
    of each kind instead of one per response."""
    head = ops[0]
    return RecordOp(
        head.run_id, head.scopes,
        [r for op in ops for r in op.responses], [f for op in ops for f in op.failures],
        [r for op in ops for r in op.possibly_billed], [r for op in ops for r in op.releases],
        alert_limits=head.alert_limits, alert_at=head.alert_at, alerted=head.alerted,
    )  # fmt: skip


def _failure(f: Failed) -> Failure:
    return Failure(f.step_id, f.key, f.item_index, f.error, f.reservation)
