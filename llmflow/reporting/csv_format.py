"""``llmflow report --format csv``: a header row, then one row per step.

``thinking`` is the part of ``output`` spent thinking (already billed within it); it is
the last column, so the positions of the earlier columns did not change when it came.
"""

from __future__ import annotations

import csv
import io

from llmflow.reporting.model import ReportData

CSV_COLUMNS = (
    "id", "tier", "model", "mode", "requests", "succeeded", "failed", "skipped",
    "input", "cache_write_5m", "cache_write_1h", "cache_read", "output",
    "cost", "plan_cost_expected", "cache_hit_ratio", "thinking",
)  # fmt: skip


def render_csv(report: ReportData) -> str:
    """Money and ratios are the summary JSON's own strings (decimal, never float)."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(CSV_COLUMNS)
    contract = report.summary.model_dump(mode="json")["steps"]
    for s, j in zip(report.steps, contract, strict=True):
        u = j["usage"]
        writer.writerow(
            [
                s.id, s.tier, s.model, s.mode, j["requests"], j["succeeded"], j["failed"],
                j["skipped"], u["input"], u["cache_write_5m"], u["cache_write_1h"],
                u["cache_read"], u["output"], j["cost"], j["plan_cost_expected"] or "",
                j["cache_hit_ratio"], u["thinking"],
            ]
        )  # fmt: skip
    return out.getvalue()
