"""An unreachable API ends the run promptly as a backend failure (exit 4), recorded."""

from __future__ import annotations

import asyncio
import socket
from pathlib import Path

import anthropic

from llmflow.executor.retry import Backoff
from llmflow.executor.run import RunRequest, execute
from llmflow.planner import build_plan_async
from llmflow.spec.loader import load_pair
from llmflow.tracker import RunStore

from .conftest import CATALOG, FIXTURES  # type: ignore[import-not-found]


def _closed_port() -> int:
    with socket.socket() as s:  # bound then closed: nothing listens there
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def test_connection_refused_everywhere_exits_4_without_hanging(tmp_path: Path) -> None:
    pipeline_file, policy_file = load_pair(
        FIXTURES / "fanout.yaml", FIXTURES / "policy.yaml", inputs={}
    )
    assert policy_file is not None
    plan = await build_plan_async(pipeline_file, policy_file, inputs={}, catalog=CATALOG)
    client = anthropic.AsyncAnthropic(
        api_key="k", base_url=f"http://127.0.0.1:{_closed_port()}", max_retries=0
    )
    store = RunStore.open(tmp_path / "state")
    try:
        request = RunRequest(
            pipeline_file, policy_file, plan, CATALOG, client, store, "u", {},
            backoff=Backoff(base_seconds=0.001, max_seconds=0.01),
        )  # fmt: skip
        outcome = await asyncio.wait_for(execute(request), timeout=30)  # a hang guard
    finally:
        await client.close()
        store.close()
    assert outcome.status == "failed" and outcome.exit_code == 4
    assert "cannot reach the API" in str(outcome.error)
    assert sum(s.succeeded for s in outcome.summary.steps) == 0
