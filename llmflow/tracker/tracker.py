"""The tracker: budget + run store + pricing, the one object the executor talks to.

Lifecycle of a sync request::

    res = tracker.dispatch(step, key, i, model=..., tier=..., mode="sync", upper_bound=ub)
    ...send...  → tracker.record_response(step, key, i, model_info, ..., reservation=res)
               or tracker.record_failure(step, key, i, error=..., reservation=res)

``dispatch`` raises :class:`~llmflow.errors.BudgetExceeded` (nothing reserved,
nothing marked) when the request could cross a limit; the executor then stops
dispatching (``on_exceed: stop``: let in-flight work settle, ``finish("budget_stopped")``,
exit 3) or re-prices the remaining work on the cheaper tier (``downgrade``).

A batch: ``reserve_batch`` before the POST, ``batch_submitted`` once the API returned
its id (``release`` the reservations if the POST failed), ``record_batch`` for each
page of results, ``batch_ended`` at the end. On resume, ``resume_reservations``
re-reserves what the open batches of the run still owe.

Every response is priced by :func:`~llmflow.tracker.billing.response_cost` (band of
its own prompt, fast mode, data residency and batch as the API reported them).
"""

from __future__ import annotations

import threading
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Literal

import structlog

from llmflow.catalog import ModelInfo, TokenUsage, format_usd
from llmflow.errors import RunStoreError
from llmflow.tracker.billing import Completed, Failed, response_cost
from llmflow.tracker.budget import Budget, BudgetAlert, Limit, Reservation, period_start
from llmflow.tracker.progress import Progress, StepProgress
from llmflow.tracker.records import FinalStatus, JsonValue, Mode, Response, RunInfo, RunRecord
from llmflow.tracker.store import RunStore
from llmflow.tracker.summary import RunSummary, build_summary, write_summary

__all__ = ["Completed", "Failed", "LimitSpec", "Tracker"]

_log = structlog.get_logger("llmflow.tracker")


@dataclass(frozen=True, slots=True)
class LimitSpec:
    """A budget limit as the policy states it; the tracker turns it into a :class:`Limit`.

    ``period`` ``run`` limits this run (across its resumes); ``day``/``month`` limit
    the spend of every run of the pipeline in the UTC calendar period, or, with
    ``tag`` (key, value), of every run carrying that tag label.
    """

    amount: Decimal
    period: Literal["run", "day", "month"] = "run"
    tag: tuple[str, str] | None = None

    @property
    def name(self) -> str:
        return self.period if self.tag is None else f"{self.period}[{self.tag[0]}={self.tag[1]}]"


class Tracker:
    """Records every response, enforces the budget, keeps per-step counters."""

    def __init__(
        self,
        store: RunStore,
        run: RunRecord,
        budget: Budget,
        *,
        baseline: ModelInfo | None = None,
        resumed: bool = False,
    ) -> None:
        self.store = store
        self.run = run
        self.budget = budget
        self.baseline = baseline
        self.resumed = resumed
        self.progress = Progress(store.step_totals(run.run_id))
        self._earlier = store.keys_with_status(run.run_id, ("failed", "skipped"))
        self._lock = threading.Lock()

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
        now: datetime | None = None,
    ) -> Tracker:
        """Start or resume ``run_id`` and build its budget from the store.

        A ``run`` limit starts from what the run already spent in earlier sessions
        (plus the upper bounds of requests lost in flight); a ``day``/``month`` limit
        from what every run in its scope spent in the period, plus what other runs
        have in flight now. Alerts fired in earlier sessions do not fire again.
        """
        run, resumed = store.open_run(run_id, info)
        moment = now or datetime.now(UTC)
        built: list[Limit] = []
        for spec in limits:
            if spec.period == "run":
                prior = store.run_spent(run_id) + run.unrecorded_usd
            else:
                since = period_start(spec.period, moment)
                scope_pipeline = info.pipeline if spec.tag is None else None
                prior = store.spend_since(since, pipeline=scope_pipeline, tag=spec.tag)
                prior += store.reserved_since(
                    since, pipeline=scope_pipeline, tag=spec.tag, exclude_run=run_id
                )
            built.append(Limit(spec.name, spec.amount, prior))
        done = {a.limit_name for a in store.alerts(run_id)}
        budget = Budget(built, alert_at=alert_at, already_alerted=done)
        return cls(store, run, budget, baseline=baseline, resumed=resumed)

    # -- dispatch ----------------------------------------------------------------

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
        """Reserve a sync request's upper bound and mark it in flight (committed).

        Raises BudgetExceeded (nothing reserved) or RunStoreError (reservation
        released, e.g. the key already succeeded).
        """
        reservation = self.budget.reserve(upper_bound, label=f"{step_id}/{item_index}")
        try:
            self.store.mark_dispatched(
                self.run_id, step_id, key, item_index,
                model=model, tier=tier, mode=mode, reserved=upper_bound,
            )  # fmt: skip
        except BaseException:
            self.budget.release(reservation)
            raise
        return reservation

    def reserve_batch(
        self, step_id: str, requests: Sequence[tuple[str, int, Decimal]]
    ) -> dict[str, Reservation]:
        """Reserve every request ``(key, item_index, upper_bound)`` of a batch, or none."""
        made = self.budget.reserve_many([ub for _, _, ub in requests], label=f"{step_id}/batch")
        return {key: r for (key, _, _), r in zip(requests, made, strict=True)}

    def batch_submitted(
        self,
        step_id: str,
        batch_id: str,
        requests: Sequence[tuple[str, int, Decimal]],
        *,
        model: str,
        tier: str | None,
    ) -> None:
        """Commit a batch the API accepted; its requests go in flight."""
        self.store.record_batch_submitted(
            self.run_id, step_id, batch_id, requests, model=model, tier=tier
        )
        _log.info("batch.submitted", step=step_id, batch_id=batch_id, requests=len(requests))

    def resume_reservations(self, batch_ids: Iterable[str] | None = None) -> dict[str, Reservation]:
        """Re-reserve (forced: the money is committed) what open batches still owe.

        ``batch_ids`` limits it to those batches (the caller settles what it reserves:
        a step resuming its own batches must not reserve another step's).
        """
        wanted = None if batch_ids is None else set(batch_ids)
        out: dict[str, Reservation] = {}
        for batch in self.store.open_batches(self.run_id):
            if wanted is not None and batch.batch_id not in wanted:
                continue
            pending = self.store.batch_in_flight(self.run_id, batch.batch_id)
            if not pending:
                continue
            keys = list(pending)
            made = self.budget.reserve_many(
                [pending[k][1] for k in keys], label=f"{batch.step_id}/batch", force=True
            )
            out.update(zip(keys, made, strict=True))
        return out

    def release(self, reservations: Iterable[Reservation]) -> None:
        """Give reservations back (e.g. the batch POST failed; nothing was sent)."""
        for r in reservations:
            self.budget.release(r)

    def batch_ended(
        self, batch_id: str, reservations: Mapping[str, Reservation], status: str = "ended"
    ) -> list[str]:
        """Close a batch; requests without a result fail and their reservations go back."""
        missing = self.store.mark_batch_ended(self.run_id, batch_id, status)
        for key in missing:
            res = reservations.get(key)
            if res is not None:
                self.budget.release(res)
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

    def record_batch(
        self, completed: Sequence[Completed], failed: Sequence[Failed] = ()
    ) -> list[Decimal]:
        """Commit many results in one transaction, then settle them; returns each cost.

        The commit comes first: if it fails, the reservations stay open and keep
        counting against the limits (the money is spent; the budget must not forget
        it). A result for a key that already succeeded (delivered again after a
        resume) is not recorded or charged twice: its reservation is released, its
        returned cost is 0, and it is logged as ``request.duplicate_result``.
        """
        responses: list[Response] = []
        costs: list[Decimal] = []
        for c in completed:
            amount = response_cost(c)
            costs.append(amount)
            responses.append(c.response(amount))
        recorded = self.store.record_responses(
            self.run_id,
            responses,
            failed=[(f.step_id, f.item_index, f.key, f.error) for f in failed],
        )
        alerts: list[BudgetAlert] = []
        for c, amount in zip(completed, costs, strict=True):
            if c.key not in recorded:
                if c.reservation is not None:
                    self.budget.release(c.reservation)
                _log.warning("request.duplicate_result", step=c.step_id, item=c.item_index)
            elif c.reservation is not None:
                alerts += self.budget.settle(c.reservation, amount)
            else:
                alerts += self.budget.charge(amount, label=f"{c.step_id}/{c.item_index}")
        for f in failed:
            if f.reservation is not None:
                self.budget.release(f.reservation)
        if alerts:
            self.store.record_alerts(self.run_id, alerts)
        costs = [
            a if c.key in recorded else Decimal(0) for c, a in zip(completed, costs, strict=True)
        ]
        for c, amount in zip(completed, costs, strict=True):
            if c.key not in recorded:
                continue
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
            self._count_failure(f.step_id, f.key, f.item_index, f.error, "failed")
        return costs

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
        amount = Decimal(0)
        response = None
        if billed is not None:
            amount = response_cost(billed)
            response = billed.response(amount, with_output=False)
        self.store.record_failure(
            self.run_id, step_id, key, item_index, error=error, billed=response
        )
        if billed is None:
            if reservation is not None:
                self.budget.release(reservation)
        else:
            if reservation is not None:
                alerts = self.budget.settle(reservation, amount)
            else:
                alerts = self.budget.charge(amount, label=f"{step_id}/{item_index}")
            if alerts:
                self.store.record_alerts(self.run_id, alerts)
        if billed is not None:
            self.progress.add(step_id, usage=billed.usage, cost=amount)
        self._count_failure(step_id, key, item_index, error, "failed")
        return amount

    def record_possibly_billed(
        self, step_id: str, key: str, item_index: int, reservation: Reservation, *, error: str
    ) -> None:
        """An attempt failed in a way that may still have been billed (a timeout or a
        dropped connection after the request was sent): its whole upper bound counts as
        spent, and as the run's unrecorded spend, so the budget can never be passed by
        money the API took without answering. The request stays in flight."""
        self.store.add_unrecorded(self.run_id, reservation.amount)
        alerts = self.budget.settle(reservation, reservation.amount)
        if alerts:
            self.store.record_alerts(self.run_id, alerts)
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

    def finish(self, status: FinalStatus) -> tuple[RunSummary, Path]:
        """Close the run: final status, outputs JSONL, ``summary.json``.

        Call it once in-flight work has settled; open reservations left at this
        point are logged as the error event ``budget.unsettled_at_finish``.
        """
        left = self.budget.open_reservations
        if left:
            _log.error("budget.unsettled_at_finish", run_id=self.run_id, reservations=left)
        try:
            self.run = self.store.finish_run(self.run_id, status)
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
