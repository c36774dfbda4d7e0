"""What a run keeps in memory does not grow with a step's items (bench/batch_memory.py
measures it at a million): outputs are loaded only for the steps that read them, a
batch step keeps per-chunk state only, and a request sent again is rendered again from
its dataset item."""

from __future__ import annotations

from collections.abc import Callable
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from llmflow.emulator.config import EmulatorConfig
from llmflow.emulator.engine import Engine
from llmflow.emulator.errors import ApiError
from llmflow.executor.batch_step import BatchStep
from llmflow.executor.context import RunContext
from llmflow.tracker import request_key

from .conftest import (  # type: ignore[import-not-found]
    FIXTURES,
    Emulated,
    Runner,
    ledger_cost,
    ledger_usage,
    summary_usage,
)


async def test_only_the_outputs_a_later_step_reads_are_loaded(
    emulated: Callable[[EmulatorConfig], Emulated],
    run_pipeline: Runner,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    loaded: list[str] = []
    original = RunContext.set_outputs

    def set_outputs(ctx: RunContext, step_id: str, values: list[Any]) -> None:
        loaded.append(step_id)
        original(ctx, step_id, values)

    monkeypatch.setattr(RunContext, "set_outputs", set_outputs)
    outcome = await run_pipeline(emulated(EmulatorConfig()), "chain.yaml")
    assert outcome.status == "succeeded", outcome
    # digest reads classify and extract, per_label iterates classify; nothing reads
    # digest or per_label (their outputs are only written to outputs/*.jsonl)
    assert sorted(loaded) == ["classify", "extract"]
    outputs = outcome.summary_path.parent / "outputs"
    assert len((outputs / "per_label.jsonl").read_text().splitlines()) == 30


async def test_a_batch_step_shares_system_texts_within_a_chunk_only(
    emulated: Callable[[EmulatorConfig], Emulated],
    run_pipeline: Runner,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
) -> None:
    pipeline = tmp_path / "per_item_system.yaml"
    pipeline.write_text(
        "name: per-item-system\n"
        f"inputs:\n  tickets: {{type: jsonl, path: {FIXTURES / 'data' / 'tickets.jsonl'}}}\n"
        "steps:\n  classify:\n    task: classification\n    for_each: inputs.tickets\n"
        '    system: ["Label tickets.", "This one is ticket {{ item.id }}."]\n'
        '    prompt: "Label {{ item.body }}"\n    max_tokens: 8\n'
    )
    policy = tmp_path / "policy.yaml"
    policy.write_text(
        (FIXTURES / "policy.yaml")
        .read_text()
        .replace("limits: {", "limits: {batch_chunk_requests: 4, ")
    )
    seen: list[int] = []
    original = BatchStep._submit_chunk

    async def submit_chunk(step: BatchStep, entries: Any) -> Any:
        seen.append(len(step._texts))
        return await original(step, entries)

    monkeypatch.setattr(BatchStep, "_submit_chunk", submit_chunk)
    outcome = await run_pipeline(emulated(EmulatorConfig()), pipeline, policy)
    assert outcome.status == "succeeded", outcome
    assert len(seen) == 8  # 30 items in chunks of 4
    # the shared text, one per item of the chunk, and the next chunk's first item
    assert max(seen) <= 1 + 4 + 1, seen


async def test_retryable_batch_results_are_sent_again_rendered_from_the_dataset(
    emulated: Callable[[EmulatorConfig], Emulated],
    run_pipeline: Runner,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
) -> None:
    policy = tmp_path / "policy.yaml"
    policy.write_text(
        (FIXTURES / "policy.yaml")
        .read_text()
        .replace("limits: {", "limits: {batch_chunk_requests: 4, ")
    )
    flaky = {request_key("classify", i) for i in (2, 13, 29)}
    bodies: dict[str, list[Any]] = {}
    complete = Engine.complete

    def overloaded_once(engine: Engine, request: Any, **kw: Any) -> dict[str, Any]:
        key = kw.get("custom_id")
        if key is not None:
            bodies.setdefault(key, []).append(request.body)
            if key in flaky and len(bodies[key]) == 1:
                raise ApiError("overloaded_error", "Overloaded")
        return complete(engine, request, **kw)

    monkeypatch.setattr(Engine, "complete", overloaded_once)
    seen: list[list[str]] = []
    submit_chunk = BatchStep._submit_chunk

    async def record_chunk(step: BatchStep, entries: Any) -> Any:
        seen.append([key for key, _, _ in entries])
        return await submit_chunk(step, entries)

    monkeypatch.setattr(BatchStep, "_submit_chunk", record_chunk)
    emu = emulated(EmulatorConfig())
    outcome = await run_pipeline(emu, "chain.yaml", policy)
    assert outcome.status == "succeeded", outcome
    classify = [chunk for chunk in seen if chunk[0].startswith("classify")]
    assert classify[-1] == sorted(flaky, key=lambda k: int(k.rsplit("-", 1)[1]))
    assert all(len(bodies[key]) == 2 and bodies[key][0] == bodies[key][1] for key in flaky)
    ledger = await emu.ledger()
    billed = [e["custom_id"] for e in ledger["requests"] if e.get("custom_id")]
    assert len(billed) == len(set(billed)) == 30  # every item billed once
    assert summary_usage(outcome) == ledger_usage(ledger)
    assert Decimal(outcome.summary.total.cost) == ledger_cost(ledger)
