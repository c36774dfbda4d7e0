"""llmflow's own CPU per sync request, apart from the network (target: <= 0.25 ms).

Both sides talk to the same in-memory transport (``httpx2.MockTransport``): every
request is answered, one event-loop tick later, with the same Messages API response
and rate-limit headers the emulator sends. The plain side is an ``AsyncAnthropic`` loop
bounded by an ``asyncio.Semaphore`` of 32; llmflow's side is ``llmflow run`` in-process
(``bench/run_overhead.py``'s ``llmflow_inprocess``: load, plan, tracker, a SQLite run
store in a temporary directory, budget, summary) on the same bodies. The sides
alternate, ``--repeat`` times each, at two sizes (``--small``, default 100, and
``--requests``, default 2,000), and the least CPU time of each side and size is kept.

Printed: the SDK's CPU per request (the plain side), llmflow's CPU per request, and
what llmflow adds per request at the margin::

    ((llmflow - plain) at N  -  (llmflow - plain) at small) / (N - small)

which leaves out the fixed cost (loading, planning, opening the store, the summary;
printed apart). CPU time is this process's ``time.process_time()``: the SQLite
checkpoint thread counts, the disk's waits do not. ``--profile`` also prints
llmflow's own functions' share, by module, of one profiled run.

    .venv/bin/python bench/llmflow_cpu.py [--requests N] [--small N] [--repeat R]
        [--latency-ms MS] [--profile]
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import itertools
import pstats
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable, Coroutine
from functools import partial
from pathlib import Path
from typing import Any

import anthropic
import httpx2

sys.path.insert(0, str(Path(__file__).resolve().parent))
from run_overhead import (
    RATE_LIMITS,
    llmflow_inprocess,
    overhead_bodies,
    raw_loop,
    write_overhead_files,
)

from llmflow.cli._logging import LogFormat, configure_logging

BASE_URL = "http://memory.local"
CONCURRENCY = 32
TARGET_MS = 0.25

#: What the emulator answers a short ``claude-haiku-4-5`` request (``max_tokens: 8``).
RESPONSE = (
    b'{"id":"msg_011Cj5ft3tDW000000000002","type":"message","role":"assistant",'
    b'"model":"claude-haiku-4-5","content":[{"type":"text","text":"His as of node good",'
    b'"citations":null}],"stop_reason":"max_tokens","stop_sequence":null,'
    b'"stop_details":null,"container":null,"usage":{"input_tokens":19,'
    b'"cache_creation_input_tokens":0,"cache_read_input_tokens":0,"cache_creation":'
    b'{"ephemeral_5m_input_tokens":0,"ephemeral_1h_input_tokens":0},"output_tokens":8,'
    b'"output_tokens_details":null,"server_tool_use":null,"inference_geo":"global",'
    b'"service_tier":"standard","speed":"standard"},"diagnostics":null}'
)


def rate_limit_headers() -> dict[str, str]:
    """The emulator's rate-limit headers under ``RATE_LIMITS``, full buckets."""
    limits = dict(part.split("=") for part in RATE_LIMITS.split(","))
    headers = {"content-type": "application/json"}
    for kind, name in (("requests", "rpm"), ("input-tokens", "itpm"), ("output-tokens", "otpm")):
        headers[f"anthropic-ratelimit-{kind}-limit"] = limits[name]
        headers[f"anthropic-ratelimit-{kind}-remaining"] = limits[name]
        headers[f"anthropic-ratelimit-{kind}-reset"] = "2026-11-30T13:33:50Z"
    return headers


def memory_client(latency: float = 0.0) -> anthropic.AsyncAnthropic:
    """An AsyncAnthropic whose every request is answered in memory, a tick (or
    ``latency`` seconds) later."""
    headers = rate_limit_headers()
    ids = itertools.count()

    async def answer(request: httpx2.Request) -> httpx2.Response:
        await asyncio.sleep(latency)
        return httpx2.Response(200, headers={**headers, "request-id": f"req_{next(ids)}"},
                               content=RESPONSE)  # fmt: skip

    http = httpx2.AsyncClient(transport=httpx2.MockTransport(answer), base_url=BASE_URL)
    return anthropic.AsyncAnthropic(
        api_key="bench", base_url=BASE_URL, http_client=http, max_retries=0
    )


def cpu_of(factory: Callable[[], Coroutine[Any, Any, None]]) -> float:
    """CPU seconds of running one coroutine in a fresh event loop."""
    start = time.process_time()
    asyncio.run(factory())
    return time.process_time() - start


async def plain(bodies: list[dict[str, Any]], latency: float) -> None:
    await raw_loop(BASE_URL, bodies, CONCURRENCY, client=memory_client(latency))


async def ours(pipeline: Path, policy: Path, work: Path, rep: int, latency: float) -> None:
    state, run_id = work / f"state-{rep}", f"cpu-{rep}"
    client = memory_client(latency)
    await llmflow_inprocess(pipeline, policy, BASE_URL, state, run_id, client=client)


def measure(root: Path, size: int, repeat: int, latency: float) -> tuple[float, float]:
    """Least CPU seconds of (plain, llmflow) over ``repeat`` alternations at ``size``."""
    work = root / f"n{size}"
    work.mkdir()
    pipeline, policy = write_overhead_files(work, size, CONCURRENCY)
    bodies = overhead_bodies(pipeline)
    cpu_of(lambda: plain(bodies[: 2 * CONCURRENCY], 0.0))  # warm-up: imports, first calls
    ours_runs: list[float] = []
    plain_runs: list[float] = []
    for rep in range(repeat):
        plain_runs.append(cpu_of(lambda: plain(bodies, latency)))
        ours_runs.append(cpu_of(partial(ours, pipeline, policy, work, rep, latency)))
    print(f"  {size:>6} requests: plain {', '.join(f'{c:.3f}' for c in plain_runs)} s;"
          f" llmflow {', '.join(f'{c:.3f}' for c in ours_runs)} s")  # fmt: skip
    return min(plain_runs), min(ours_runs)


def profile(root: Path, size: int, latency: float) -> None:
    """llmflow's own functions' share of one profiled run, by module."""
    work = root / "profile"
    work.mkdir()
    pipeline, policy = write_overhead_files(work, size, CONCURRENCY)
    profiler = cProfile.Profile()
    profiler.enable()
    asyncio.run(ours(pipeline, policy, work, 0, latency))
    profiler.disable()
    stats: dict[Any, Any] = pstats.Stats(profiler).stats  # type: ignore[attr-defined]
    total = sum(row[2] for row in stats.values())
    modules: Counter[str] = Counter()
    for (path, _, _), row in stats.items():
        if "/llmflow/" in path:
            modules[path.split("/llmflow/", 1)[1]] += row[2]
    print(f"\n-- profiled run: llmflow's own code is {sum(modules.values()) / total:.1%}"
          " of the time (the rest: SDK, HTTP, SQLite, asyncio) --")  # fmt: skip
    for module, seconds in modules.most_common(12):
        print(f"  {seconds / total:6.1%}  {module}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=2000)
    parser.add_argument("--small", type=int, default=100)
    parser.add_argument("--repeat", type=int, default=5, help="Least CPU of R runs per side.")
    parser.add_argument("--profile", action="store_true")
    parser.add_argument(
        "--latency-ms", type=float, default=0.0, help="Answer each request this much later."
    )
    args = parser.parse_args()
    if not 0 < args.small < args.requests <= 50_000:
        parser.error("need 0 < --small < --requests <= 50000")
    configure_logging(LogFormat.console)  # as the CLI: warnings only, on stderr
    print(f"python {sys.version.split()[0]}, anthropic {anthropic.__version__};"
          f" in-memory transport, concurrency {CONCURRENCY}, best of {args.repeat}")  # fmt: skip
    with tempfile.TemporaryDirectory(prefix="llmflow-cpu-") as tmp:
        root = Path(tmp)
        latency = args.latency_ms / 1000
        small_plain, small_ours = measure(root, args.small, args.repeat, latency)
        plain_cpu, ours_cpu = measure(root, args.requests, args.repeat, latency)
        n = args.requests
        marginal = ((ours_cpu - plain_cpu) - (small_ours - small_plain)) / (n - args.small)
        fixed = (small_ours - small_plain) - marginal * args.small
        print(f"\nSDK alone (plain loop)        : {1000 * plain_cpu / n:.3f} ms CPU/request")
        print(f"llmflow run                   : {1000 * ours_cpu / n:.3f} ms CPU/request")
        print(f"llmflow adds, per request     : {1000 * marginal:.3f} ms"
              f"  (target <= {TARGET_MS}); fixed cost {fixed:.3f} s")  # fmt: skip
        if args.profile:
            profile(root, n, latency)


if __name__ == "__main__":
    main()
