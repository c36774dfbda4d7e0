"""Failures after which the API may have billed (or created) something are never
retried as if nothing happened: the budget counts them, and batches are not duplicated."""

from __future__ import annotations

import json
from collections.abc import Callable
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx2

from llmflow.emulator.config import EmulatorConfig
from llmflow.planner import request_max_cost
from llmflow.tracker import RunStore

from .conftest import CATALOG, Emulated, ledger_cost  # type: ignore[import-not-found]
from .test_review_findings import Asgi, Faulty, Receive, Scope, Send, _run  # type: ignore[import-not-found]


class SentThenTimedOut:
    """Forwards chosen ``POST /v1/messages`` calls to the API (which bills them), then
    drops the answer and raises a read timeout, as a network failure after sending would."""

    def __init__(self, app: Asgi, drop: Callable[[int], bool]) -> None:
        self.app, self.drop, self.calls = app, drop, 0

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and (scope["method"], scope["path"]) == ("POST", "/v1/messages"):
            self.calls += 1
            if self.drop(self.calls):

                async def discard(message: dict[str, Any]) -> None:
                    return None

                await self.app(scope, receive, discard)
                raise httpx2.ReadTimeout("injected: the answer never arrived")
        await self.app(scope, receive, send)


def _upper_bound() -> Decimal:
    model = CATALOG.get("claude-sonnet-4-6")
    assert model is not None
    params = {
        "model": model.id,
        "max_tokens": 60,
        "messages": [
            {
                "role": "user",
                "content": [
                    {
                        "type": "text",
                        "text": "Summarise the benefits of unit tests in one sentence.",
                    }
                ],
            }
        ],
    }
    return request_max_cost(params, model, batch=False)


async def test_a_timeout_after_sending_counts_as_possibly_billed_and_the_retry_is_reserved_anew(
    emulated: Callable[[EmulatorConfig], Emulated], tmp_path: Path
) -> None:
    emu = emulated(EmulatorConfig())
    emu.app = SentThenTimedOut(emu.app, lambda n: n == 1)  # type: ignore[assignment]
    outcome = await _run(emu, "single.yaml", tmp_path / "s")
    assert outcome.status == "succeeded"
    ledger = await emu.ledger()
    assert len(ledger["requests"]) == 2  # the API billed the lost answer too
    with RunStore.open(tmp_path / "s") as store:
        unrecorded = store.get_run("r1").unrecorded_usd
    assert unrecorded == _upper_bound()  # the lost attempt counts at its upper bound
    assert unrecorded >= ledger_cost(ledger) - Decimal(outcome.summary.total.cost)


async def test_a_possibly_billed_attempt_can_exhaust_the_budget_without_overspending(
    emulated: Callable[[EmulatorConfig], Emulated], tmp_path: Path
) -> None:
    emu = emulated(EmulatorConfig())
    emu.app = SentThenTimedOut(emu.app, lambda n: n == 1)  # type: ignore[assignment]
    budget = _upper_bound() * Decimal("1.5")  # room for one attempt, not for a second
    outcome = await _run(emu, "single.yaml", tmp_path / "s", budget=budget)
    assert outcome.status == "budget_stopped" and outcome.exit_code == 3
    ledger = await emu.ledger()
    assert len(ledger["requests"]) == 1  # no second attempt was sent
    assert ledger_cost(ledger) <= budget


async def test_a_transient_error_creating_a_batch_is_retried_once_nothing_was_created(
    emulated: Callable[[EmulatorConfig], Emulated], tmp_path: Path
) -> None:
    emu = emulated(EmulatorConfig())
    faulty = Faulty(
        emu.app,  # type: ignore[arg-type]
        lambda n: (529, "overloaded_error", True) if n <= 2 else None,
        matches=lambda method, path: (method, path) == ("POST", "/v1/messages/batches"),
    )
    emu.app = faulty  # type: ignore[assignment]
    outcome = await _run(emu, "batch.yaml", tmp_path / "s")
    assert outcome.status == "succeeded", outcome
    assert faulty.calls == 3
    ledger = await emu.ledger()
    assert {e["service_tier"] for e in ledger["requests"]} == {"batch"}
    assert Decimal(outcome.summary.total.cost) == ledger_cost(ledger)


async def test_a_transient_error_reading_batch_results_is_retried(
    emulated: Callable[[EmulatorConfig], Emulated], tmp_path: Path
) -> None:
    emu = emulated(EmulatorConfig())
    faulty = Faulty(
        emu.app,  # type: ignore[arg-type]
        lambda n: (500, "api_error", True) if n == 1 else None,
        matches=lambda method, path: method == "GET" and path.endswith("/results"),
    )
    emu.app = faulty  # type: ignore[assignment]
    outcome = await _run(emu, "batch.yaml", tmp_path / "s")
    assert outcome.status == "succeeded", outcome
    assert faulty.calls == 2
    summary = json.loads(outcome.summary_path.read_text())
    assert all(s["failed"] == 0 for s in summary["steps"])
    assert Decimal(outcome.summary.total.cost) == ledger_cost(await emu.ledger())
