"""What ``llmflow run`` costs on top of the raw SDK, and what cache-warm fan-out saves.

One ``llmflow emulator`` subprocess on loopback (``--latency-ms``, default 200: the
delay before each response begins; real Claude calls take longer) serves the main
phases; the load comes from this process. The emulator enforces rate limits no phase
comes near: the plain loop ignores rate-limit headers and llmflow paces by them.

1. Overhead: N sync requests (default 2,000; short prompt, no cache) through
   ``llmflow run --backend anthropic`` vs a plain ``AsyncAnthropic`` loop bounded by an
   ``asyncio.Semaphore`` of the same concurrency (default 32), same request bodies.
   llmflow runs in-process through the executor API (load, plan, tracker, SQLite run
   store, budget and summary included), and once more as the real CLI subprocess,
   whose wall time includes a fixed cost (start-up, imports: timed on a 1-item run).
   The sides alternate, best of ``--repeat``. Wall-time ratio targets: <= 1.02 at
   200 ms, <= 1.10 at 0 ms. This process's CPU time per request is printed too; it
   includes what llmflow's requests cost the HTTP stack (a connection waiting idle
   while a response is recorded costs httpcore a check on every later request), and
   varies with the machine's load: ``bench/llmflow_cpu.py`` measures llmflow's own
   CPU per request apart from the network.
   ``--extra-latency-ms`` (default 0) repeats the comparison on other emulators; at
   0 ms client and server saturate the CPU, so that ratio shows llmflow's CPU cost
   per request, not what a user waits for.
2. Cache bill: 100 requests sharing a ~5,000-token static system block on
   claude-sonnet-4-6 (minimum cacheable prefix 2,048): ``llmflow run`` (policy cache
   on: one request warms the prefix, then the fan-out) vs a naive ``asyncio.gather`` of
   the same 100 bodies with the same ``cache_control``. Cache writes come from the
   emulator's ledger (reset between phases), priced with ``llmflow.catalog.cost``.
   Its own emulator has ``--cache-latency-ms`` (default 1000, about the time to first
   token of a 5,000-token prompt): the naive side pays a write for every request sent
   before the first response began, so its count depends on that latency.

Bounded in requests and time; stops by itself.

    .venv/bin/python bench/run_overhead.py [--requests N] [--concurrency C]
        [--latency-ms MS] [--extra-latency-ms MS ...] [--cache-latency-ms MS]
        [--repeat R] [--no-cli] [--profile]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import cProfile
import json
import os
import pstats
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from decimal import Decimal
from pathlib import Path
from typing import Any

import anthropic

from llmflow.backends import open_client
from llmflow.catalog import format_usd, load_catalog
from llmflow.cli._logging import LogFormat, configure_logging
from llmflow.emulator.ledger import entry_cost, entry_usage
from llmflow.emulator.tokenizer import count_tokens
from llmflow.executor.run import RunOutcome, RunRequest, execute
from llmflow.planner import build_plan_async, inputs_namespace
from llmflow.spec.loader import load_pair
from llmflow.tracker import RunStore

API_KEY = "bench"
SYNC_MODEL = "claude-haiku-4-5"
CACHE_MODEL = "claude-sonnet-4-6"
RATE_LIMITS = "rpm=10000000,itpm=10000000000,otpm=10000000000"
TIMEOUT = 300.0  # seconds: upper bound on any one phase
_LLMFLOW = "import sys; from llmflow.cli import main; sys.argv[0] = 'llmflow'; main()"

PROMPT = "Ticket {{ item.id }}: {{ item.body }}\nReply with one label."


# -- emulator -------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def start_emulator(latency_ms: float, *extra: str) -> tuple[subprocess.Popen[bytes], str]:
    """``llmflow emulator`` on a free loopback port (``extra``: more of its options)."""
    port = free_port()
    args = ["emulator", "--host", "127.0.0.1", "--port", str(port), "--latency-ms", str(latency_ms)]
    args += extra
    # Limits no phase comes near: the plain loop ignores rate-limit headers, llmflow paces
    # by them, and the default reported window (4,000 requests a minute) would pace it.
    args += ["--rate-limits", RATE_LIMITS]
    proc = subprocess.Popen(
        [sys.executable, "-c", _LLMFLOW, *args],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"the emulator exited with {proc.returncode}")
        with contextlib.suppress(OSError):
            emulator_call(url, "/_emulator/ledger")
            return proc, url
        time.sleep(0.05)
    proc.kill()
    raise RuntimeError("the emulator did not answer within 30 s")


def stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)


def emulator_call(url: str, path: str, method: str = "GET") -> Any:
    req = urllib.request.Request(url + path, method=method, headers={"x-api-key": API_KEY})
    with urllib.request.urlopen(req, timeout=30) as response:
        return json.loads(response.read())


def reset(url: str) -> None:
    emulator_call(url, "/_emulator/reset", "POST")


# -- files ----------------------------------------------------------------------------


def write_overhead_files(root: Path, requests: int, concurrency: int) -> tuple[Path, Path]:
    """A ``requests``-item JSONL, a one-sync-step pipeline and a policy without budget."""
    words = ["invoice", "login", "outage", "refund", "latency", "export", "billing", "api"]
    with (root / "items.jsonl").open("w") as out:
        for i in range(requests):
            body = f"Problem with {words[i % len(words)]} ({i}), please advise."
            out.write(json.dumps({"id": f"t{i:05d}", "body": body}) + "\n")
    pipeline = root / "overhead.yaml"
    pipeline.write_text(
        "name: bench-overhead\n"
        "inputs:\n  items: {type: jsonl, path: items.jsonl}\n"
        "steps:\n  label:\n    task: labelling\n    for_each: inputs.items\n"
        f"    prompt: {json.dumps(PROMPT)}\n    max_tokens: 8\n"
    )
    policy = root / "overhead-policy.yaml"
    policy.write_text(
        "name: bench-overhead\n"
        f"tiers:\n  haiku: {{model: {SYNC_MODEL}}}\n  sonnet: {{model: {CACHE_MODEL}}}\n"
        "routes:\n  labelling: {tier: haiku, mode: sync, max_tokens: 8}\n"
        "default_route: {tier: haiku, mode: sync, max_tokens: 8}\n"
        "cache: {enabled: false}\n"
        "budget: {per_run_usd: 100, per_day_usd: 1000, per_month_usd: 10000}\n"
        f"limits: {{max_concurrency: {concurrency}, max_attempts: 1}}\n"
    )
    return pipeline, policy


def shared_prefix(tokens: int) -> str:
    """Static guide text of about ``tokens`` emulator tokens."""
    sentence = (
        "Section {n}. When a customer reports a billing problem, first confirm the plan and "
        "the invoice period, then check whether a refund or credit applies under policy. "
    )
    parts: list[str] = []
    n = 0
    while count_tokens("".join(parts)) < tokens:
        n += 1
        parts.append(sentence.format(n=n))
    return "".join(parts)


def write_cache_files(root: Path, items: int, prefix_tokens: int) -> tuple[Path, Path]:
    """A pipeline whose step shares a big static system block, and a cache-on policy."""
    (root / "guide.md").write_text(shared_prefix(prefix_tokens))
    with (root / "questions.jsonl").open("w") as out:
        for i in range(items):
            out.write(
                json.dumps({"id": i, "q": f"Customer {i} asks about invoice {i * 7}."}) + "\n"
            )
    pipeline = root / "cache.yaml"
    pipeline.write_text(
        "name: bench-cache\n"
        "inputs:\n  qs: {type: jsonl, path: questions.jsonl}\n"
        "  guide: {type: text, path: guide.md}\n"
        "steps:\n  answer:\n    task: answering\n    for_each: inputs.qs\n"
        '    system: ["You answer billing questions for Acme.", "{{ inputs.guide }}"]\n'
        '    prompt: "Question {{ item.id }}: {{ item.q }}"\n    max_tokens: 16\n'
    )
    policy = root / "cache-policy.yaml"
    policy.write_text(
        "name: bench-cache\n"
        f"tiers:\n  sonnet: {{model: {CACHE_MODEL}}}\n"
        "routes:\n  answering: {tier: sonnet, mode: sync, max_tokens: 16}\n"
        "default_route: {tier: sonnet, mode: sync, max_tokens: 16}\n"
        "cache: {enabled: true, ttl: 5m}\n"
        "limits: {max_concurrency: 32, max_attempts: 1}\n"
    )
    return pipeline, policy


# -- llmflow --------------------------------------------------------------------------


async def llmflow_inprocess(
    pipeline: Path,
    policy: Path,
    url: str,
    state: Path,
    run_id: str,
    client: anthropic.AsyncAnthropic | None = None,
) -> RunOutcome:
    """What ``llmflow run --backend anthropic`` does, minus argument parsing and display
    (on ``client`` when given, else on the API at ``url``)."""
    catalog = load_catalog()
    pipeline_file, policy_file = load_pair(
        pipeline, policy, is_known_model=lambda m: catalog.get(m) is not None,
        model_ids=catalog.ids(),
    )  # fmt: skip
    assert policy_file is not None
    if client is None:
        os.environ["ANTHROPIC_API_KEY"] = API_KEY
        os.environ["ANTHROPIC_BASE_URL"] = url
        client = open_client("anthropic")
    store = RunStore.open(state)
    try:
        plan = await build_plan_async(pipeline_file, policy_file, inputs={}, catalog=catalog)
        request = RunRequest(pipeline_file, policy_file, plan, catalog, client, store, run_id, {})
        outcome = await execute(request)
    finally:
        await client.close()
        store.close()
    if outcome.exit_code != 0:
        raise RuntimeError(f"llmflow run ended {outcome.status} (exit {outcome.exit_code})")
    return outcome


def llmflow_cli(pipeline: Path, policy: Path, url: str, state: Path) -> float:
    """Wall seconds of ``llmflow run`` as a subprocess (start-up and imports included)."""
    env = {**os.environ, "ANTHROPIC_API_KEY": API_KEY, "ANTHROPIC_BASE_URL": url}
    args = [sys.executable, "-c", _LLMFLOW, "run", str(pipeline), "--policy", str(policy)]
    args += ["--backend", "anthropic", "--state-dir", str(state)]
    start = time.perf_counter()
    done = subprocess.run(args, env=env, capture_output=True, timeout=TIMEOUT, check=False)
    elapsed = time.perf_counter() - start
    if done.returncode != 0:
        raise RuntimeError(f"llmflow run exited {done.returncode}: {done.stderr.decode()[-2000:]}")
    return elapsed


def one_item_pipeline(pipeline: Path) -> Path:
    """The same pipeline limited to its first item: timing it gives the CLI's fixed cost
    (interpreter start-up, imports, loading, planning, one request, the summary)."""
    one = pipeline.with_name("overhead-one.yaml")
    text = pipeline.read_text().replace("path: items.jsonl}", "path: items.jsonl, limit: 1}")
    one.write_text(text)
    return one


# -- raw SDK --------------------------------------------------------------------------


def overhead_bodies(pipeline: Path) -> list[dict[str, Any]]:
    """The same request bodies llmflow sends, built the way a plain script would."""
    bodies = []
    with (pipeline.parent / "items.jsonl").open() as lines:
        for line in lines:
            item = json.loads(line)
            text = f"Ticket {item['id']}: {item['body']}\nReply with one label."
            bodies.append(
                {
                    "model": SYNC_MODEL,
                    "max_tokens": 8,
                    "messages": [{"role": "user", "content": [{"type": "text", "text": text}]}],
                }
            )
    return bodies


async def raw_loop(
    url: str,
    bodies: list[dict[str, Any]],
    concurrency: int,
    client: anthropic.AsyncAnthropic | None = None,
) -> None:
    """AsyncAnthropic + Semaphore: the plain loop llmflow is compared with."""
    if client is None:
        client = anthropic.AsyncAnthropic(api_key=API_KEY, base_url=url, max_retries=0)
    gate = asyncio.Semaphore(concurrency)

    async def one(body: dict[str, Any]) -> None:
        async with gate:
            await client.messages.create(**body)

    try:
        await asyncio.gather(*(one(b) for b in bodies))
    finally:
        await client.close()


# -- phases ---------------------------------------------------------------------------


def timed(coro_factory: Any) -> float:
    """Wall seconds of running one coroutine in a fresh event loop."""
    return measured(coro_factory)[0]


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of a process (Linux /proc; 0 elsewhere)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def measured(coro_factory: Any, server: int | None = None) -> tuple[float, float, float]:
    """(wall, this process's CPU, the server's CPU) seconds of running one coroutine."""
    served = cpu_seconds(server) if server is not None else 0.0
    wall, cpu = time.perf_counter(), time.process_time()
    asyncio.run(asyncio.wait_for(coro_factory(), TIMEOUT))
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    served = cpu_seconds(server) - served if server is not None else 0.0
    return wall, cpu, served


def overhead_phase(
    root: Path, url: str, server: int, args: argparse.Namespace, label: str, *, cli: bool
) -> None:
    pipeline, policy = write_overhead_files(root, args.requests, args.concurrency)
    bodies = overhead_bodies(pipeline)
    n, c = args.requests, args.concurrency
    # Warm-up: imports, connection set-up and the emulator's first requests.
    timed(lambda: raw_loop(url, bodies[: 2 * c], c))
    raw_runs: list[tuple[float, float, float]] = []
    our_runs: list[tuple[float, float, float]] = []
    for rep in range(args.repeat):
        reset(url)
        raw_runs.append(measured(lambda: raw_loop(url, bodies, c), server))
        reset(url)
        # A fresh store per measurement: the same run id in a used store would resume
        # (and rightly send nothing).
        state = Path(tempfile.mkdtemp(prefix="state-", dir=root))

        def run(state: Path = state, rep: int = rep) -> Any:
            return llmflow_inprocess(pipeline, policy, url, state, f"bench-{rep}")

        if args.profile and rep == args.repeat - 1:
            profiler = cProfile.Profile()
            profiler.enable()
            our_runs.append(measured(run, server))
            profiler.disable()
            print(f"\n-- cProfile of llmflow run in-process ({label}) --")
            stats = pstats.Stats(profiler)
            stats.sort_stats("cumulative").print_stats("llmflow/", 25)
            stats.sort_stats("tottime").print_stats(20)
        else:
            our_runs.append(measured(run, server))
        billed = emulator_call(url, "/_emulator/ledger")["totals"]["requests"]
        if billed != n:
            raise RuntimeError(f"the emulator billed {billed} requests, expected {n}")
    raw, ours = min(raw_runs), min(our_runs)
    raw_cpu, our_cpu = min(t[1] for t in raw_runs), min(t[1] for t in our_runs)
    print(f"\n== overhead, {label}: {n} sync requests, concurrency {c} (best of {args.repeat}) ==")
    for name, best, runs in (("plain AsyncAnthropic + Semaphore", raw, raw_runs),
                             ("llmflow run (in-process)", ours, our_runs)):  # fmt: skip
        busy = (best[1] + best[2]) / best[0] / (os.cpu_count() or 1)
        print(f"{name:<33}: {best[0]:6.2f} s  ({n / best[0]:4.0f} req/s)"
              f"  runs {', '.join(f'{w:.2f}' for w, *_ in runs)} s;"
              f" client CPU {1000 * min(u for _, u, _ in runs) / n:.2f} ms/request;"
              f" CPUs {busy:.0%} busy (client+emulator)")  # fmt: skip
    target = 1.10 if label == "latency 0 ms" else 1.02
    print(f"{'ratio llmflow / plain':<33}: {ours[0] / raw[0]:6.3f}  (target <= {target});"
          f" llmflow adds {1000 * (our_cpu - raw_cpu) / n:.2f} ms CPU/request")  # fmt: skip
    if cli:
        reset(url)
        start_up = llmflow_cli(one_item_pipeline(pipeline), policy, url, root / "state-one")
        wall = llmflow_cli(pipeline, policy, url, root / f"state-{label}-cli")
        print(f"{'llmflow run (CLI subprocess)':<33}: {wall:6.2f} s  one run, of which"
              f" ~{start_up:.2f} s fixed (a 1-item run); ratio {wall / raw[0]:.3f},"
              f" {(wall - start_up) / raw[0]:.3f} without the fixed cost")  # fmt: skip


def cache_writes(url: str) -> tuple[int, int, int, Decimal]:
    """(requests, writes, reads, cost) billed since the last reset."""
    ledger = emulator_call(url, "/_emulator/ledger")["requests"]
    writes = sum(entry_usage(e).cache_write > 0 for e in ledger)
    reads = sum(entry_usage(e).cache_read > 0 for e in ledger)
    return len(ledger), writes, reads, sum((entry_cost(e) for e in ledger), Decimal(0))


async def naive_gather(url: str, bodies: list[dict[str, Any]]) -> None:
    """Every request at once, no warm-up: each first request pays the cache write."""
    client = anthropic.AsyncAnthropic(api_key=API_KEY, base_url=url, max_retries=0)
    try:
        await asyncio.gather(*(client.messages.create(**b) for b in bodies))
    finally:
        await client.close()


def cache_phase(root: Path, url: str, items: int, prefix_tokens: int, latency: float) -> None:
    pipeline, policy = write_cache_files(root, items, prefix_tokens)
    reset(url)
    outcome = asyncio.run(
        asyncio.wait_for(
            llmflow_inprocess(pipeline, policy, url, root / "state-cache", "c"), TIMEOUT
        )
    )
    ours = cache_writes(url)
    # The same bodies llmflow sent (same blocks, same cache_control), all at once.
    catalog = load_catalog()
    pipeline_file, policy_file = load_pair(pipeline, policy, model_ids=catalog.ids())
    assert policy_file is not None
    plan = asyncio.run(build_plan_async(pipeline_file, policy_file, catalog=catalog))
    template = plan.templates["answer"]
    ns = inputs_namespace(pipeline_file, {})
    bodies = []
    with (root / "questions.jsonl").open() as lines:
        for line in lines:
            bodies.append(template.params({"inputs": ns, "steps": {}, "item": json.loads(line)}))
    marked = sum(1 for b in bodies[0]["system"] if b.get("cache_control"))
    reset(url)
    asyncio.run(asyncio.wait_for(naive_gather(url, bodies), TIMEOUT))
    naive = cache_writes(url)
    prefix = count_tokens("".join(b["text"] for b in bodies[0]["system"]))
    print(f"\n== cache bill: {items} requests, shared system prefix ~{prefix} tokens, "
          f"{CACHE_MODEL}, {marked} breakpoint(s), latency {latency:g} ms ==")  # fmt: skip
    for name, (n, writes, reads, usd) in (("llmflow run (warm, fan-out)", ours),
                                          ("naive asyncio.gather", naive)):  # fmt: skip
        print(f"{name:<28}: {n} requests, {writes:3d} cache writes, {reads:3d} cache reads,"
              f" cost ${format_usd(usd)}")  # fmt: skip
    print(f"llmflow recorded cost       : ${format_usd(outcome.summary.total.cost)}"
          f"  (target: 1 write instead of {items})")  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=2000)
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--latency-ms", type=float, default=200.0)
    parser.add_argument("--repeat", type=int, default=3, help="Best of R runs per side.")
    parser.add_argument(
        "--extra-latency-ms",
        type=float,
        nargs="*",
        default=[0.0],
        help="Also compare at these latencies (default: 0, the CPU-bound case).",
    )
    parser.add_argument("--no-cli", action="store_true", help="Skip the CLI subprocess run.")
    parser.add_argument("--profile", action="store_true", help="cProfile the last llmflow run.")
    parser.add_argument("--cache-items", type=int, default=100)
    parser.add_argument("--cache-latency-ms", type=float, default=1000.0)
    parser.add_argument("--prefix-tokens", type=int, default=5000)
    args = parser.parse_args()
    if not 0 < args.requests <= 20_000 or not 0 < args.cache_items <= 1000:
        parser.error("--requests must be within 1..20000 and --cache-items within 1..1000")
    configure_logging(LogFormat.console)  # as the CLI: warnings only, on stderr
    print(f"python {sys.version.split()[0]}, anthropic {anthropic.__version__}, "
          f"{os.cpu_count()} CPUs; emulator subprocess on loopback")  # fmt: skip
    with tempfile.TemporaryDirectory(prefix="llmflow-bench-") as tmp:
        root = Path(tmp)
        proc, url = start_emulator(args.latency_ms)
        try:
            label = f"latency {args.latency_ms:g} ms"
            overhead_phase(root, url, proc.pid, args, label, cli=not args.no_cli)
        finally:
            stop(proc)
        proc, url = start_emulator(args.cache_latency_ms)
        try:
            cache_phase(root, url, args.cache_items, args.prefix_tokens, args.cache_latency_ms)
        finally:
            stop(proc)
        for latency in args.extra_latency_ms:
            proc, url = start_emulator(latency)
            try:
                overhead_phase(root, url, proc.pid, args, f"latency {latency:g} ms", cli=False)
            finally:
                stop(proc)


if __name__ == "__main__":
    main()
