"""The tracker layer: usage recording, the budget, and the run store (SQLite or PostgreSQL).

The executor builds a :class:`Tracker` with :meth:`Tracker.open` and calls
``dispatch``/``record_response``/``record_failure`` (sync) or
``reserve_batch``/``batch_submitted``/``record_batch``/``batch_ended`` (batches),
then ``finish``. This package imports only the catalog and the errors of llmflow.

Names are imported from their modules on first use (PEP 562): ``llmflow report`` reads
the store without loading the recording side.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from llmflow.lazy import exports

if TYPE_CHECKING:
    from llmflow.tracker.billing import Completed, Failed, response_cost
    from llmflow.tracker.budget import (
        BudgetAlert,
        Limit,
        Reservation,
        SessionLedger,
        period_start,
    )
    from llmflow.tracker.progress import StepProgress
    from llmflow.tracker.records import (
        BatchRecord,
        OutputRecord,
        Response,
        RunInfo,
        RunRecord,
        StepPlan,
        StepTotals,
        new_run_id,
        request_key,
    )
    from llmflow.tracker.store import RunStore
    from llmflow.tracker.summary import RunSummary, build_summary, write_summary
    from llmflow.tracker.tracker import LimitSpec, Tracker

#: Submodule → the names it exports (as imported above).
_EXPORTS = {
    "billing": ("Completed", "Failed", "response_cost"),
    "budget": ("BudgetAlert", "Limit", "Reservation", "SessionLedger", "period_start"),
    "progress": ("StepProgress",),
    "records": (
        "BatchRecord",
        "OutputRecord",
        "Response",
        "RunInfo",
        "RunRecord",
        "StepPlan",
        "StepTotals",
        "new_run_id",
        "request_key",
    ),
    "store": ("RunStore",),
    "summary": ("RunSummary", "build_summary", "write_summary"),
    "tracker": ("LimitSpec", "Tracker"),
}

__getattr__ = exports(__name__, _EXPORTS)


__all__ = [
    "BatchRecord",
    "BudgetAlert",
    "Completed",
    "Failed",
    "Limit",
    "LimitSpec",
    "OutputRecord",
    "Reservation",
    "Response",
    "RunInfo",
    "RunRecord",
    "RunStore",
    "RunSummary",
    "SessionLedger",
    "StepPlan",
    "StepProgress",
    "StepTotals",
    "Tracker",
    "build_summary",
    "new_run_id",
    "period_start",
    "request_key",
    "response_cost",
    "write_summary",
]
