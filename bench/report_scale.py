"""``llmflow report`` on a large run: does its cost grow with steps, or with requests?

Builds a SQLite run store in a temporary directory with one run of ``--requests``
requests (default 200,000) over ``--steps`` steps (default 4: batch and sync, haiku
and sonnet, most requests reading a cached prefix, a few stopped at max_tokens or
failed), recorded over an hour; batch results arrive in bursts, sync ones one by one.
A few small earlier runs of the same pipeline share the store. Rows go in directly
(``executemany`` into ``runs``, ``steps``, ``requests``, ``usage``, ``budget_counters``),
then the usage roll-ups are summed from them (a store of schema 5 or later), as
``llmflow run`` would have left them.

The runs name the repository's ``policies/default.yaml`` and
``pipelines/support-triage.yaml``, so the report loads its policy as it would.

Then times ``llmflow report <run> --format table|json|html|csv`` as a CLI subprocess
(start-up and imports included), best of ``--repeat``, with the child's CPU time from
``os.wait4`` (on a shared machine it moves less than the wall time; the load average is
printed) and its peak RSS: ``VmHWM``, which the child writes as it exits, on Linux
(``ru_maxrss`` would count pages the bench itself had when it started the child). The children
cache their bytecode in a temporary ``PYTHONPYCACHEPREFIX`` (warmed by one run first),
as an installed llmflow would have it, even where ``PYTHONDONTWRITEBYTECODE`` is set
(``--cold-bytecode`` keeps the environment as it is: every start then compiles every
module, ~1 s more).
``--code DIR`` runs the CLI from another source tree (``PYTHONPATH``), such as
``git archive HEAD llmflow | tar -x -C DIR``, to compare with an older version (the
store is then created by that version, with its schema).

Targets on the large run: <= 0.5 s and <= 80 MB for every format. The same is
measured on a run of ``--small`` requests (default 20,000) and on a tiny run
(``--tiny``, default 200: the fixed cost of start-up and imports), and on a run of
``--small`` requests over ``--many-steps`` steps (default 40); printed are the time
and memory added per 1,000 requests and per step: a report whose queries are
aggregates adds little per request (SQL scans in C), one that loads rows into Python
objects adds a lot. The JSON report's
total is checked against the exact sum of the inserted costs.

Bounded: four store builds (about 15 s for 200,000 requests) and 4 x R report runs
for each, every one killed after 120 s; a few minutes in all. Run::

    .venv/bin/python bench/report_scale.py [--requests N] [--small N] [--tiny N]
        [--steps N] [--many-steps N] [--repeat R] [--code DIR] [--cold-bytecode]
"""

from __future__ import annotations

import argparse
import json
import os
import random
import sqlite3
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path

from llmflow.catalog import ModelInfo, TokenUsage, cost, format_usd, load_catalog
from llmflow.tracker import request_key
from llmflow.tracker.schema import timestamp
from llmflow.tracker.store import DB_NAME, RunStore
from llmflow.tracker.store_rollup import rebuild

#: The CLI, which writes its own peak RSS (``VmHWM``) to stderr as it exits, on Linux:
#: ``ru_maxrss`` counts the bench's own memory too, the pages the child had before exec.
_LLMFLOW = (
    "import atexit, sys; atexit.register(lambda: sys.stderr.write(next((line for line in"
    " open('/proc/self/status') if line.startswith('VmHWM:')), '')) if sys.platform =="
    " 'linux' else None); from llmflow.cli import main; sys.argv[0] = 'llmflow'; main()"
)
_CREATE = "import sys; from llmflow.tracker import RunStore; RunStore.open(sys.argv[1]).close()"
FORMATS = ("table", "json", "html", "csv")
TARGET_S = 0.5
TARGET_MB = 80.0
PIPELINE = "support-triage"
RUN_ID = "20261130T100000Z-bench"
TIMEOUT = 120.0  # seconds: upper bound on one report
CHUNK = 10_000  # rows per executemany
ROOT = Path(__file__).resolve().parents[1]
POLICY = ROOT / "policies" / "default.yaml"
PIPELINE_PATH = ROOT / "pipelines" / "support-triage.yaml"


@dataclass(frozen=True)
class StepShape:
    """How one step of the synthetic run looks."""

    step_id: str
    share: int  # weight of the step in the run's requests
    model: str
    tier: str
    mode: str  # sync | batch
    prefix: int  # cached system prefix (tokens); 0: no cache
    hit_rate: float  # share of requests reading the prefix (the others write it)
    input: int
    output: int
    thinking: int


SHAPES = (
    StepShape("classify", 50, "claude-haiku-4-5", "haiku", "batch", 5000, 0.6, 400, 8, 0),
    StepShape("extract", 25, "claude-haiku-4-5", "haiku", "sync", 3000, 0.95, 900, 120, 0),
    StepShape("summarize", 20, "claude-sonnet-4-6", "sonnet", "sync", 4000, 0.9, 1500, 400, 200),
    StepShape("digest", 5, "claude-sonnet-4-6", "sonnet", "batch", 0, 0.0, 3000, 800, 300),
)


def shapes(steps: int) -> list[StepShape]:
    """``steps`` steps cycling through :data:`SHAPES` (ids made unique)."""
    out = []
    for i in range(steps):
        base = SHAPES[i % len(SHAPES)]
        step_id = base.step_id if i < len(SHAPES) else f"{base.step_id}{i}"
        out.append(replace(base, step_id=step_id))
    return out


def _variants(shape: StepShape, model: ModelInfo, rng: random.Random) -> list[tuple]:
    """Some (usage, cost) variants of a step's responses, priced by the catalog."""
    out = []
    for _ in range(64):
        hit = rng.random() < shape.hit_rate
        usage = TokenUsage(
            input=shape.input + rng.randint(0, shape.input // 2),
            cache_read=shape.prefix if hit else 0,
            cache_write_5m=0 if hit else shape.prefix,
            output=shape.output + rng.randint(0, shape.output // 4),
            thinking=shape.thinking,
        )
        price = cost(usage, model, batch=shape.mode == "batch")
        out.append((usage, format_usd(price)))
    return out


def _rows(
    run_id: str, requests: int, steps: list[StepShape], start: datetime, seconds: float, seed: int
) -> Iterator[tuple[tuple, tuple | None, Decimal, str]]:
    """(requests row, usage row or None, cost, UTC day) per request of the run, step by step.

    Sync steps spread their responses evenly over the run; a batch step's results
    arrive in bursts of up to 10,000, all recorded in the same instant.
    """
    catalog = load_catalog()
    rng = random.Random(seed)
    total_share = sum(s.share for s in steps)
    for n, shape in enumerate(steps):
        model = catalog.get(shape.model)
        assert model is not None
        variants = _variants(shape, model, rng)
        count = max(1, requests * shape.share // total_share)
        # the steps overlap: step n runs over [n, n + 2] / (len + 1) of the hour
        lo = seconds * n / (len(steps) + 1)
        hi = seconds * (n + 2) / (len(steps) + 1)
        burst = 10_000 if shape.mode == "batch" else 1
        for i in range(count):
            slot = (i // burst) * burst
            at = start + timedelta(seconds=lo + (hi - lo) * (slot + burst) / (count + burst))
            if shape.mode == "sync":
                at += timedelta(microseconds=rng.randint(0, 999_999))
            when = timestamp(at)
            key = request_key(shape.step_id, i)
            batch_id = f"msgbatch_{n}_{i // burst}" if shape.mode == "batch" else None
            usage, price = rng.choice(variants)
            failed = rng.random() < 0.003
            stop = "max_tokens" if rng.random() < 0.01 else "end_turn"
            tokens = (
                usage.input, usage.cache_write_5m, usage.cache_write_1h, usage.cache_read,
                usage.output, usage.thinking,
            )  # fmt: skip
            request = (
                run_id, key, shape.step_id, i, "failed" if failed else "succeeded", 1,
                shape.model, shape.tier, shape.mode, batch_id, price, f"req_{n}_{i}",
                "batch" if shape.mode == "batch" else "standard",
                *((0, 0, 0, 0, 0, 0) if failed else tokens), "0" if failed else price,
                None if failed else stop, "overloaded_error" if failed else None,
                None if failed else json.dumps({"label": f"L{i % 7}", "item": i}),
                when, when, when[:10],
            )  # fmt: skip
            use = None
            if not failed:
                use = (
                    run_id, shape.step_id, key, i, 1, shape.model, shape.tier, shape.mode,
                    request[12], f"req_{n}_{i}", *tokens, price, when,
                )  # fmt: skip
            yield request, use, Decimal(0) if failed else Decimal(price), when[:10]


REQUEST_SQL = (
    "INSERT INTO requests (run_id, key, step_id, item_index, status, attempts, model, tier,"
    " mode, batch_id, reserved_usd, request_id, service_tier, input_tokens, cache_write_5m,"
    " cache_write_1h, cache_read, output_tokens, thinking_tokens, cost_usd, stop_reason, error,"
    " output_json, dispatched_at, completed_at, reserved_on)"
    " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
)
USAGE_SQL = (
    "INSERT INTO usage (run_id, step_id, key, item_index, attempt, model, tier, mode,"
    " service_tier, request_id, input_tokens, cache_write_5m, cache_write_1h, cache_read,"
    " output_tokens, thinking_tokens, cost_usd, recorded_at)"
    " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
)


def add_run(
    conn: sqlite3.Connection,
    run_id: str,
    requests: int,
    steps: list[StepShape],
    start: datetime,
    counters: dict[str, Decimal],
    *,
    seconds: float = 3600.0,
    seed: int = 1,
) -> tuple[Decimal, int]:
    """Insert one finished run; returns its exact total cost and billed responses."""
    end = start + timedelta(seconds=seconds)
    conn.execute(
        "INSERT INTO runs (run_id, pipeline, pipeline_path, policy, policy_path, plan_hash,"
        " status, started_at, ended_at, budget_limit, plan_cost_expected, plan_cost_max,"
        " plan_cost_baseline) VALUES (?, ?, ?, 'default', ?, 'h', 'succeeded', ?, ?,"
        " '5000', NULL, NULL, NULL)",
        (run_id, PIPELINE, _exists(PIPELINE_PATH), _exists(POLICY), timestamp(start),
         timestamp(end)),
    )  # fmt: skip
    total_share = sum(s.share for s in steps)
    conn.executemany(
        "INSERT INTO steps (run_id, step_id, position, requests, model, tier, mode)"
        " VALUES (?, ?, ?, ?, ?, ?, ?)",
        [
            (run_id, s.step_id, n, max(1, requests * s.share // total_share), s.model, s.tier,
             s.mode)
            for n, s in enumerate(steps)
        ],
    )  # fmt: skip
    total, billed = Decimal(0), 0
    pending_req: list[tuple] = []
    pending_use: list[tuple] = []

    def flush() -> None:
        conn.executemany(REQUEST_SQL, pending_req)
        conn.executemany(USAGE_SQL, pending_use)
        pending_req.clear()
        pending_use.clear()

    for request, use, price, day in _rows(run_id, requests, steps, start, seconds, seed):
        pending_req.append(request)
        if use is not None:
            pending_use.append(use)
            billed += 1
            total += price
            for scope in (f"day/{day}/pipeline/{PIPELINE}", f"month/{day[:7]}/pipeline/{PIPELINE}"):
                counters[scope] = counters.get(scope, Decimal(0)) + price
        if len(pending_req) >= CHUNK:
            flush()
    flush()
    counters[f"run/{run_id}"] = total
    return total, billed


def _exists(path: Path) -> str | None:
    return str(path) if path.is_file() else None


def build_store(
    root: Path, requests: int, steps: int, env: dict[str, str]
) -> tuple[Decimal, int, float]:
    """A store under ``root``: the measured run (ending a minute ago) and three small
    earlier runs of the same pipeline. Returns the run's total, billed responses, and
    the seconds the build took."""
    began = time.perf_counter()
    # the schema, as the llmflow the reports run (``env``) creates it
    subprocess.run([sys.executable, "-c", _CREATE, str(root)], env=env, cwd=root, check=True)
    conn = sqlite3.connect(root / DB_NAME, isolation_level=None)
    conn.execute("PRAGMA journal_mode = WAL")
    conn.execute("BEGIN")
    counters: dict[str, Decimal] = {}
    now = datetime.now(UTC).replace(microsecond=0)
    shape = shapes(steps)
    for k in range(3):
        add_run(conn, f"earlier-{k}", 2_000, shape, now - timedelta(days=k + 1, hours=2),
                counters, seconds=600, seed=10 + k)  # fmt: skip
    total, billed = add_run(conn, RUN_ID, requests, shape, now - timedelta(hours=1, minutes=1),
                            counters)  # fmt: skip
    conn.executemany(
        "INSERT INTO budget_counters (scope, spent) VALUES (?, ?)",
        [(scope, format_usd(amount)) for scope, amount in sorted(counters.items())],
    )
    conn.execute("COMMIT")
    rollups = conn.execute("SELECT 1 FROM sqlite_master WHERE name = 'usage_totals'").fetchone()
    conn.close()
    if rollups:  # what recording sums as it goes (an older llmflow's store has none)
        with RunStore.open(root) as store, store.db.transaction() as c:
            rebuild(c)
    conn = sqlite3.connect(root / DB_NAME, isolation_level=None)
    conn.execute("ANALYZE")
    conn.close()
    return total, billed, time.perf_counter() - began


def child_env(pycache: Path | None, code: Path | None) -> dict[str, str]:
    """The report children's environment: bytecode cached under ``pycache`` (None: as
    inherited), llmflow imported from ``code`` (None: the installed one)."""
    env = {**os.environ, "COLUMNS": "160"}
    if pycache is not None:
        env.pop("PYTHONDONTWRITEBYTECODE", None)
        env["PYTHONPYCACHEPREFIX"] = str(pycache)
    if code is not None:
        env["PYTHONPATH"] = os.pathsep.join([str(code), env.get("PYTHONPATH", "")]).rstrip(
            os.pathsep
        )
    return env


def run_report(state: Path, fmt: str, env: dict[str, str]) -> tuple[float, float, float, bytes]:
    """One ``llmflow report`` subprocess: wall seconds, CPU seconds (user + system),
    peak RSS (MB), its stdout."""
    with tempfile.TemporaryFile() as out:
        began = time.perf_counter()
        proc = subprocess.Popen(
            [sys.executable, "-c", _LLMFLOW, "report", RUN_ID, "--state-dir", str(state),
             "--format", fmt],
            stdout=out, stderr=subprocess.PIPE, env=env, cwd=state,  # not a source tree
        )  # fmt: skip
        deadline = began + TIMEOUT
        while True:
            pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
            if pid:
                break
            if time.perf_counter() > deadline:
                proc.kill()
                raise RuntimeError(f"report --format {fmt} took more than {TIMEOUT} s")
            time.sleep(0.002)
        wall = time.perf_counter() - began
        proc.returncode = os.waitstatus_to_exitcode(status)
        err = proc.stderr.read() if proc.stderr else b""
        if proc.returncode != 0:
            raise RuntimeError(f"report --format {fmt} exited {proc.returncode}: {err[-2000:]!r}")
        out.seek(0)
        rss_kb = usage.ru_maxrss if sys.platform != "darwin" else usage.ru_maxrss / 1024
        peak = [line.split()[1] for line in err.decode().splitlines() if line[:6] == "VmHWM:"]
        rss_kb = float(peak[-1]) if peak else rss_kb
        return wall, usage.ru_utime + usage.ru_stime, rss_kb / 1024, out.read()


@dataclass
class Figures:
    requests: int
    steps: int
    billed: int
    wall: dict[str, float]
    cpu: dict[str, float]
    rss: dict[str, float]

    @property
    def label(self) -> str:
        return f"{self.requests:,} req/{self.steps} st"


def measure(requests: int, steps: int, repeat: int, env: dict[str, str]) -> Figures:
    with tempfile.TemporaryDirectory(prefix="llmflow-report-bench-") as tmp:
        state = Path(tmp)
        total, billed, built = build_store(state, requests, steps, env)
        size = (state / DB_NAME).stat().st_size
        print(
            f"run of {requests:,} requests ({billed:,} billed, {steps} steps):"
            f" store built in {built:.1f} s, {size / 1e6:.0f} MB, total ${format_usd(total)}",
            flush=True,
        )
        wall: dict[str, float] = {}
        cpu: dict[str, float] = {}
        rss: dict[str, float] = {}
        for fmt in FORMATS:
            runs = [run_report(state, fmt, env) for _ in range(repeat)]
            wall[fmt] = min(w for w, _, _, _ in runs)
            cpu[fmt] = min(c for _, c, _, _ in runs)
            rss[fmt] = max(r for _, _, r, _ in runs)
            if fmt == "json":
                reported = Decimal(json.loads(runs[0][3])["total"]["cost"])
                if reported != total:
                    raise AssertionError(f"report total {reported} != inserted {total}")
        return Figures(requests, steps, billed, wall, cpu, rss)


def mark(ok: bool) -> str:
    return "ok" if ok else "OVER"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=200_000, help="the large run")
    parser.add_argument("--small", type=int, default=20_000, help="the comparison run")
    parser.add_argument("--tiny", type=int, default=200, help="fixed cost (start-up)")
    parser.add_argument("--steps", type=int, default=4)
    parser.add_argument(
        "--many-steps", type=int, default=40, help="steps of a --small run, for the cost per step"
    )
    parser.add_argument("--repeat", type=int, default=3, help="best of R per format")
    parser.add_argument("--code", type=Path, help="run the CLI from this source tree")
    parser.add_argument(
        "--cold-bytecode", action="store_true", help="no bytecode cache for the children"
    )
    args = parser.parse_args()
    print(
        f"python {sys.version.split()[0]}, sqlite {sqlite3.sqlite_version}, {os.cpu_count()} CPUs"
    )
    code = args.code.resolve() if args.code else None
    print(f"llmflow from {code or 'the installed package'}")
    cases = [
        (args.tiny, args.steps),
        (args.small, args.steps),
        (args.requests, args.steps),
        (args.small, args.many_steps),
    ]
    with tempfile.TemporaryDirectory(prefix="llmflow-pycache-") as pycache:
        env = child_env(None if args.cold_bytecode else Path(pycache), code)
        with tempfile.TemporaryDirectory(prefix="llmflow-report-warm-") as warm:
            build_store(Path(warm), 10, args.steps, env)
            for fmt in FORMATS:  # compiles (and caches) every module the reports import
                run_report(Path(warm), fmt, env)
        tiny, small, big, wide = (measure(n, st, args.repeat, env) for n, st in cases)
    table = (tiny, small, big, wide)
    print()
    print(
        f"llmflow report, best of {args.repeat} (wall s (CPU s) / peak RSS MB of the CLI"
        f" process; load average {os.getloadavg()[0]:.2f}):"
    )
    header = f"  {'format':<7}" + "".join(f"{f.label:>28}" for f in table)
    print(header + f"   target ({TARGET_S} s, {TARGET_MB:.0f} MB) at {big.label}")
    for fmt in FORMATS:
        cells = "".join(
            f"{f'{f.wall[fmt]:.3f} s ({f.cpu[fmt]:.3f}) / {f.rss[fmt]:.0f} MB':>28}" for f in table
        )
        ok_t, ok_m = big.wall[fmt] <= TARGET_S, big.rss[fmt] <= TARGET_MB
        print(f"  {fmt:<7}{cells}   time {mark(ok_t)}, memory {mark(ok_m)}")
    print()
    added = (big.requests - small.requests) / 1000
    more = wide.steps - small.steps
    print(
        f"scaling: per 1,000 requests ({small.label} -> {big.label}), per step ({small.label}"
        f" -> {wide.label}), and above the fixed cost ({tiny.label}: start-up, imports,"
        " catalog, policy):"
    )
    for fmt in FORMATS:
        per_k = (big.wall[fmt] - small.wall[fmt]) / added
        mem_k = (big.rss[fmt] - small.rss[fmt]) * 1024 / added
        per_step = (wide.wall[fmt] - small.wall[fmt]) / more if more else 0.0
        print(
            f"  {fmt:<7} time x{big.wall[fmt] / small.wall[fmt]:.2f} for x"
            f"{big.requests / small.requests:.0f} requests: {per_k * 1000:+.2f} ms and"
            f" {mem_k:+.1f} KB per 1,000 requests; {per_step * 1000:+.1f} ms per step;"
            f" {big.label} is {(big.wall[fmt] - tiny.wall[fmt]) * 1000:+.0f} ms,"
            f" {big.rss[fmt] - tiny.rss[fmt]:+.0f} MB above {tiny.label}"
        )
    sys.stdout.flush()


if __name__ == "__main__":
    main()
