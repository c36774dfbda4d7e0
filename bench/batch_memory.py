"""Peak memory of ``llmflow run`` on a big batch step (target: <= 250 MB RSS at 1M items).

For each size N (10,000 and 100,000 first, then ``--items``, default 1,000,000) it writes
a JSONL dataset of N short items (~60 bytes each), a one-step batch pipeline
(classification-like prompt, ``max_tokens: 8``) and a policy (one tier,
``claude-haiku-4-5``; route ``mode: batch``; ``limits.batch_chunk_requests`` = ``--chunk``;
a large ``per_run_usd``; polling every ``--batch-seconds``). A fresh ``llmflow emulator``
subprocess on loopback (``--batch-seconds``: how long each batch takes) serves the run;
``llmflow run --backend anthropic`` runs as the real CLI subprocess
(``ANTHROPIC_API_KEY``, ``ANTHROPIC_BASE_URL``).

Measured: the run's peak RSS (``os.wait4`` → ``ru_maxrss``, cross-checked with
``/proc/<pid>/status`` VmHWM polled while it runs; VmHWM alone when the bench process is
the bigger, whose high-water mark a child's ru_maxrss starts from), its wall time, and
the emulator's peak RSS separately (the emulator keeps every batch in memory: that is
not llmflow's).
Each run must exit 0 and leave N succeeded requests in the store.

Time is bounded: 1M runs only when the linear extrapolation from the two smaller
points fits ``--max-minutes`` (default 15; ``--force`` runs it anyway); otherwise the
extrapolation is printed. A run is killed after ``--timeout`` (default 2 h) and an
in-process one interrupted; a run that did not complete shows no verdict.

``--tracemalloc N`` also runs N items in-process under ``tracemalloc``: a thread keeps
the snapshot taken at the highest traced total and prints its top allocation sites
(by line, and by traceback for the biggest ones) in ``llmflow/``.

``--postgres`` repeats the ladder on a ``postgresql://`` store from a throwaway
``pgserver`` (as ``tests/postgres.py`` does).

    .venv/bin/python bench/batch_memory.py [--items N] [--chunk C] [--batch-seconds S]
        [--max-minutes M] [--force] [--sizes N ...] [--tracemalloc N] [--postgres]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import linecache
import os
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
import tracemalloc
from dataclasses import dataclass
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from run_overhead import API_KEY, cpu_seconds, stop
from run_overhead import start_emulator as start_overhead_emulator

MODEL = "claude-haiku-4-5"
TARGET_MB = 250.0
_LLMFLOW = "import sys; from llmflow.cli import main; sys.argv[0] = 'llmflow'; main()"
PROMPT = (
    "Classify support ticket {{ item.id }} as billing, bug, account or other.\n"
    "{{ item.body }}\nAnswer with the label only."
)
WORDS = ["invoice", "login", "outage", "refund", "latency", "export", "billing", "api"]


# -- emulator -------------------------------------------------------------------------


def start_emulator(batch_seconds: float) -> tuple[subprocess.Popen[bytes], str]:
    """``llmflow emulator`` on a free loopback port, batches taking ``batch_seconds``."""
    return start_overhead_emulator(0.0, "--batch-seconds", str(batch_seconds))


# -- files ----------------------------------------------------------------------------


def write_dataset(path: Path, items: int) -> None:
    """``items`` lines of ~60 bytes: ``{"id": i, "body": "..."}``."""
    with path.open("w") as out:
        for i in range(items):
            body = f"Issue with {WORDS[i % len(WORDS)]} on acct {i % 9973:04d}, pls help"
            out.write(json.dumps({"id": i, "body": body}) + "\n")


def write_files(root: Path, items: int, chunk: int, poll: float) -> tuple[Path, Path]:
    """The dataset, a one-batch-step pipeline and its policy, under ``root``."""
    root.mkdir(parents=True, exist_ok=True)
    write_dataset(root / "items.jsonl", items)
    pipeline = root / "batch.yaml"
    pipeline.write_text(
        "name: bench-batch-memory\n"
        "inputs:\n  tickets: {type: jsonl, path: items.jsonl}\n"
        "steps:\n  label:\n    task: classification\n    for_each: inputs.tickets\n"
        f"    prompt: {json.dumps(PROMPT)}\n    max_tokens: 8\n"
    )
    policy = root / "policy.yaml"
    policy.write_text(
        "name: bench-batch-memory\n"
        f"tiers:\n  haiku: {{model: {MODEL}}}\n"
        "routes:\n  classification: {tier: haiku, mode: batch, max_tokens: 8}\n"
        "default_route: {tier: haiku, mode: batch, max_tokens: 8}\n"
        "baseline_tier: haiku\n"
        "cache: {enabled: false}\n"
        "budget: {per_run_usd: 100000, per_day_usd: 1000000, per_month_usd: 10000000}\n"
        f"limits: {{batch_chunk_requests: {chunk}, batch_poll_seconds: {poll},"
        f" batch_poll_max_seconds: {max(poll, 2.0)}, max_attempts: 4}}\n"
    )
    return pipeline, policy


# -- measuring ------------------------------------------------------------------------


def proc_status(pid: int) -> dict[str, int]:
    """The ``Vm*``/``Rss*`` fields of a live process's /proc status, in KB (empty once
    it is gone)."""
    out: dict[str, int] = {}
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            name, _, value = line.partition(":")
            if name.startswith(("Vm", "Rss")):
                out[name] = int(value.split()[0])
    except (OSError, ValueError, IndexError):
        pass
    return out


def proc_status_kb(pid: int, field: str) -> int:
    """``VmHWM``/``VmRSS`` of a live process in KB (0 once it is gone)."""
    return proc_status(pid).get(field, 0)


@dataclass
class Measured:
    items: int
    store: str
    exit_code: int
    wall: float
    maxrss_mb: float  # ru_maxrss from wait4 (VmHWM when it is this process's own)
    hwm_mb: float  # last VmHWM seen while polling
    emulator_mb: float  # the emulator's VmHWM after the run
    cpu: float  # the run's user + system CPU seconds
    emulator_cpu: float  # the emulator's, during the run
    succeeded: int
    log_tail: str
    timeline: list[tuple[float, int, int, int]]  # (s, VmRSS, RssAnon, RssFile) KB
    log_path: str
    started: float  # epoch seconds at the start of the run (for the log's timestamps)


def run_cli(
    pipeline: Path,
    policy: Path,
    url: str,
    store: str,
    log: Path,
    emulator_pid: int,
    timeout: float,
    log_format: str = "json",
) -> tuple[int, float, float, float, float, float, float, list[tuple[float, int, int, int]], float]:
    """(exit code, wall s, ru_maxrss MB, VmHWM MB, emulator VmHWM MB, CPU s, emulator
    CPU s, RSS timeline, epoch start) of one CLI run."""
    env = {**os.environ, "ANTHROPIC_API_KEY": API_KEY, "ANTHROPIC_BASE_URL": url}
    env.pop("LLMFLOW_STORE", None)
    args = [sys.executable, "-c", _LLMFLOW, "run", str(pipeline), "--policy", str(policy)]
    args += ["--backend", "anthropic", "--store", store, "--run-id", "mem"]
    args += ["--log-format", log_format]
    served = cpu_seconds(emulator_pid)
    # A child's ru_maxrss starts at its parent's high-water mark (Linux carries the old
    # mm's into it at exec): when this process is the bigger, only VmHWM tells.
    own = proc_status_kb(os.getpid(), "VmHWM")
    with log.open("wb") as out:
        start = time.perf_counter()
        started = time.time()
        proc = subprocess.Popen(args, env=env, stdout=out, stderr=subprocess.STDOUT)
        hwm = 0
        timeline: list[tuple[float, int, int, int]] = []
        deadline = time.monotonic() + timeout
        while True:
            pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
            if pid:
                break
            now = proc_status(proc.pid)
            hwm = max(hwm, now.get("VmHWM", 0))
            if now:
                timeline.append((time.perf_counter() - start, now.get("VmRSS", 0),
                                 now.get("RssAnon", 0), now.get("RssFile", 0)))  # fmt: skip
            if time.monotonic() > deadline:
                proc.kill()
                pid, status, usage = os.wait4(proc.pid, 0)
                break
            time.sleep(0.1)
        wall = time.perf_counter() - start
    proc.returncode = os.waitstatus_to_exitcode(status)
    emulator = proc_status_kb(emulator_pid, "VmHWM")
    served = cpu_seconds(emulator_pid) - served
    cpu = usage.ru_utime + usage.ru_stime
    maxrss = usage.ru_maxrss if usage.ru_maxrss > own else hwm
    return (proc.returncode, wall, maxrss / 1024, hwm / 1024, emulator / 1024,
            cpu, served, timeline, started)  # fmt: skip


def log_tail(path: Path, size: int = 1500) -> str:
    """The last ``size`` bytes of a run's log (read whole, a million items' log would
    make this process, and so the next run's ru_maxrss, hundreds of MB)."""
    with path.open("rb") as log:
        log.seek(max(0, log.seek(0, os.SEEK_END) - size))
        return log.read().decode(errors="replace")


def count_succeeded(store: str) -> int:
    sql = "SELECT count(*) FROM requests WHERE status = 'succeeded'"
    if store.startswith("postgresql://"):
        import psycopg

        with psycopg.connect(store) as conn:
            row = conn.execute(sql).fetchone()
    else:
        with contextlib.closing(sqlite3.connect(Path(store) / "llmflow.db")) as conn:
            row = conn.execute(sql).fetchone()
    return int(row[0]) if row else 0


def measure(
    root: Path, items: int, args: argparse.Namespace, store_url: str | None = None
) -> Measured:
    """One size: fresh files, fresh emulator, fresh store; the CLI run measured."""
    tag = "pg" if store_url else "sqlite"
    work = root / f"{tag}-{items}"
    n = 1
    while work.exists():
        n += 1
        work = root / f"{tag}-{items}-{n}"
    pipeline, policy = write_files(work, items, args.chunk, args.batch_seconds)
    store = store_url or str(work / "store")
    proc, url = start_emulator(args.batch_seconds)
    try:
        code, wall, maxrss, hwm, emu, cpu, emu_cpu, timeline, started = run_cli(
            pipeline,
            policy,
            url,
            store,
            work / "run.log",
            proc.pid,
            args.timeout,
            args.log_format,
        )
    finally:
        stop(proc)
    succeeded = count_succeeded(store) if store_url or (Path(store) / "llmflow.db").exists() else 0
    tail = log_tail(work / "run.log")
    return Measured(
        items,
        tag,
        code,
        wall,
        maxrss,
        hwm,
        emu,
        cpu,
        emu_cpu,
        succeeded,
        tail,
        timeline,
        str(work / "run.log"),
        started,
    )


def completed(m: Measured) -> bool:
    return m.exit_code == 0 and m.succeeded == m.items


def show(m: Measured) -> None:
    ok = "ok" if completed(m) else "FAILED"
    mark = "<=" if m.maxrss_mb <= TARGET_MB else "> "
    print(
        f"{m.items:>9,} {m.store:<6} {m.maxrss_mb:8.1f} MB {mark} {TARGET_MB:.0f}"
        f"   (VmHWM {m.hwm_mb:6.1f})  {m.wall:8.1f} s  {m.items / m.wall:7.0f} items/s"
        f"  CPU {m.cpu:6.1f} s; emulator {m.emulator_mb:7.1f} MB, CPU {m.emulator_cpu:6.1f} s;"
        f"  exit {m.exit_code}, succeeded"
        f" {m.succeeded:,}/{m.items:,} {ok}",
        flush=True,
    )
    if m.timeline:
        top = max(m.timeline, key=lambda p: p[1])
        every = m.timeline[:: max(1, len(m.timeline) // 16)]
        print(f"{'':>16} peak VmRSS seen at {top[0]:.1f} s of {m.wall:.1f} s:"
              f" anon {top[2] / 1024:.1f} MB, file {top[3] / 1024:.1f} MB; RSS MB over time: "
              + ", ".join(f"{t:.0f}s {r / 1024:.0f}" for t, r, _, _ in every),
              flush=True)  # fmt: skip
    phases = log_phases(m)
    if phases:
        print(f"{'':>16} phases (from the JSON log; RSS then): " + "; ".join(phases), flush=True)
    if ok != "ok":
        print("   run log tail:\n" + "\n".join("   | " + s for s in m.log_tail.splitlines()))


def log_phases(m: Measured) -> list[str]:
    """When the run's JSON log says submitting and collecting began and ended, with the
    RSS the timeline had then (phases: where the memory goes)."""
    from datetime import datetime

    log = Path(m.log_path)
    if not log.exists() or not m.timeline:
        return []
    marks: dict[str, float] = {}
    with log.open(errors="replace") as lines:
        for line in lines:
            if not line.startswith("{"):
                continue
            with contextlib.suppress(ValueError, KeyError):
                event = json.loads(line)
                at = datetime.fromisoformat(event["timestamp"].replace("Z", "+00:00"))
                t = at.timestamp() - m.started
                name = event["event"]
                if name == "batch.submitted":
                    marks.setdefault("first batch submitted", t)
                    marks["last batch submitted"] = t
                elif name in ("batch.polled", "batch.ended", "run.finished", "run.summary"):
                    marks.setdefault(name, t)
    out = []
    for name, t in sorted(marks.items(), key=lambda kv: kv[1]):
        rss = min(m.timeline, key=lambda p: abs(p[0] - t))[1]
        out.append(f"{name} {t:.1f}s {rss / 1024:.0f} MB")
    return out


def extrapolate(points: list[Measured], items: int) -> float:
    """Wall seconds at ``items`` from the line through the last two points."""
    a, b = points[-2], points[-1]
    slope = (b.wall - a.wall) / (b.items - a.items)
    return b.wall + slope * (items - b.items)


# -- tracemalloc ----------------------------------------------------------------------


class PeakSnapshots(threading.Thread):
    """Keeps the tracemalloc snapshot taken at the highest traced total (a thread, so a
    long synchronous stretch of the event loop is sampled too)."""

    def __init__(self, every: float) -> None:
        super().__init__(daemon=True)
        self.every = every
        self.best: tracemalloc.Snapshot | None = None
        self.best_size = 0
        self.best_at = 0.0
        self.samples: list[tuple[float, int]] = []
        self.done = threading.Event()
        self.start_t = time.perf_counter()

    def run(self) -> None:
        while not self.done.wait(self.every):
            self.sample()

    def sample(self) -> None:
        current, _ = tracemalloc.get_traced_memory()
        t = time.perf_counter() - self.start_t
        self.samples.append((t, current))
        if current > self.best_size * 1.05:
            self.best = tracemalloc.take_snapshot()
            self.best_size = tracemalloc.get_traced_memory()[0]
            self.best_at = t


def in_process(pipeline: Path, policy: Path, url: str, state: Path, timeout: float) -> Any:
    """``execute`` in this process; interrupted (resumable) after ``timeout`` seconds."""
    from llmflow.backends import open_client
    from llmflow.catalog import load_catalog
    from llmflow.executor.run import RunRequest, execute
    from llmflow.planner import build_plan_async
    from llmflow.spec.loader import load_pair
    from llmflow.tracker import RunStore

    async def go() -> Any:
        catalog = load_catalog()
        pipeline_file, policy_file = load_pair(
            pipeline, policy, is_known_model=lambda m: catalog.get(m) is not None,
            model_ids=catalog.ids(),
        )  # fmt: skip
        assert policy_file is not None
        os.environ["ANTHROPIC_API_KEY"] = API_KEY
        os.environ["ANTHROPIC_BASE_URL"] = url
        client = open_client("anthropic")
        store = RunStore.open(state)
        try:
            plan = await build_plan_async(pipeline_file, policy_file, inputs={}, catalog=catalog)
            request = RunRequest(pipeline_file, policy_file, plan, catalog, client, store, "tm", {})
            interrupt = asyncio.Event()
            asyncio.get_running_loop().call_later(timeout, interrupt.set)
            return await execute(request, interrupt=interrupt)
        finally:
            await client.close()
            store.close()

    return asyncio.run(go())


def where(frame: tracemalloc.Frame) -> str:
    name = frame.filename
    for marker in ("/llmflow/", "/site-packages/", "/lib/python"):
        if marker in name:
            name = name.split(marker, 1)[1]
            name = ("llmflow/" if marker == "/llmflow/" else "") + name
            break
    return f"{name}:{frame.lineno}"


class Probe:
    """Hooks (in this process only) on the run store and tracker that say how many
    batches' collection state is loaded at once, and the RSS then.

    A batch's collection begins when ``RunStore.batch_reservations`` is first read for
    it (``BatchStep._collect``: ``held``, then ``Tracker.resume_reservations``) and ends
    at ``Tracker.batch_ended``. ``RunStore.step_output_records`` (the end of the step,
    and ``finish_run`` → ``write_outputs``) is timed too. With ``snapshots``, a
    tracemalloc snapshot is taken at each new maximum of loaded batches (at most every
    ``every`` seconds) and right after each ``step_output_records``.
    """

    def __init__(self, *, snapshots: bool, every: float = 5.0) -> None:
        self.snapshots = snapshots
        self.every = every
        self.start = time.perf_counter()
        self.active: set[str] = set()
        self.max_active = 0
        self.max_at = (0.0, 0)  # (s, VmRSS KB) when max_active was reached
        self.collected = 0
        self.outputs: list[tuple[float, int, int, int]] = []  # (s, rows, RSS before, after)
        self.best: tuple[tracemalloc.Snapshot, str, int] | None = None
        self.last_snap = -1e9
        self.originals: list[tuple[Any, str, Any]] = []

    def now(self) -> tuple[float, int]:
        return time.perf_counter() - self.start, proc_status_kb(os.getpid(), "VmRSS")

    def snap(self, label: str, force: bool = False) -> None:
        t = time.perf_counter()
        if not self.snapshots or (not force and t - self.last_snap < self.every):
            return
        size = tracemalloc.get_traced_memory()[0]
        if self.best is None or size > self.best[2]:
            self.best = (tracemalloc.take_snapshot(), label, size)
            self.last_snap = t

    def install(self) -> None:
        from llmflow.tracker import RunStore, Tracker

        probe = self
        reservations, ended, records = (
            RunStore.batch_reservations, Tracker.batch_ended, RunStore.step_output_records,
        )  # fmt: skip

        def batch_reservations(store: Any, run_id: str, batch_id: str) -> Any:
            out = reservations(store, run_id, batch_id)
            if batch_id not in probe.active:
                probe.active.add(batch_id)
                if len(probe.active) > probe.max_active:
                    probe.max_active = len(probe.active)
                    probe.max_at = probe.now()
                    probe.snap(f"{probe.max_active} batches loaded at once")
            return out

        def batch_ended(tracker: Any, batch_id: str, *a: Any, **kw: Any) -> Any:
            probe.active.discard(batch_id)
            probe.collected += 1
            return ended(tracker, batch_id, *a, **kw)

        def step_output_records(store: Any, run_id: str, step_id: str) -> Any:
            before = probe.now()
            out = records(store, run_id, step_id)
            after = probe.now()
            probe.outputs.append((before[0], len(out), before[1], after[1]))
            probe.snap(f"step_output_records #{len(probe.outputs)} returned", force=True)
            return out

        for cls, name, fn in ((RunStore, "batch_reservations", batch_reservations),
                              (Tracker, "batch_ended", batch_ended),
                              (RunStore, "step_output_records", step_output_records)):  # fmt: skip
            self.originals.append((cls, name, cls.__dict__.get(name)))
            setattr(cls, name, fn)

    def uninstall(self) -> None:
        for cls, name, original in self.originals:
            if original is None:
                delattr(cls, name)
            else:
                setattr(cls, name, original)

    def report(self) -> None:
        t, rss = self.max_at
        print(f"batches collected {self.collected}; at most {self.max_active} batches' collection"
              f" state loaded at once (t={t:.1f} s, VmRSS then {rss / 1024:.1f} MB)")  # fmt: skip
        for t, rows, before, after in self.outputs:
            print(f"step_output_records at t={t:.1f} s: {rows:,} rows, VmRSS"
                  f" {before / 1024:.1f} -> {after / 1024:.1f} MB")  # fmt: skip


def in_process_run(root: Path, items: int, args: argparse.Namespace, *, trace: bool) -> None:
    """One in-process run with the :class:`Probe` hooks; under tracemalloc with ``trace``
    (the top allocation sites at the biggest snapshot are printed)."""
    from llmflow.cli._logging import LogFormat, configure_logging

    configure_logging(LogFormat.console)
    work = root / f"{'tracemalloc' if trace else 'probe'}-{items}"
    pipeline, policy = write_files(work, items, args.chunk, args.batch_seconds)
    proc, url = start_emulator(args.batch_seconds)
    probe = Probe(snapshots=trace, every=args.sample_seconds)
    probe.install()
    sampler = PeakSnapshots(args.sample_seconds)
    if trace:
        tracemalloc.start(args.frames)
        sampler.start()
    base = proc_status_kb(os.getpid(), "VmRSS")
    try:
        wall = time.perf_counter()
        outcome = in_process(pipeline, policy, url, work / "store", args.timeout)
        wall = time.perf_counter() - wall
    finally:
        probe.uninstall()
        if trace:
            sampler.done.set()
            sampler.join()
            sampler.sample()
        stop(proc)
    how = "under tracemalloc" if trace else "no tracing"
    print(f"\n== in-process run of {items:,} items (chunk {args.chunk:,}, {how}):"
          f" {outcome.status}, {wall:.1f} s; VmRSS before {base / 1024:.1f} MB, VmHWM"
          f" {proc_status_kb(os.getpid(), 'VmHWM') / 1024:.1f} MB ==")  # fmt: skip
    probe.report()
    if not trace:
        return
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    print(f"traced peak {peak / 2**20:.1f} MB")
    timeline = sampler.samples[:: max(1, len(sampler.samples) // 24)]
    print("traced MB over time: " + ", ".join(f"{t:.0f}s {s / 2**20:.0f}" for t, s in timeline))
    candidates = [
        (sampler.best, f"periodic sample at t={sampler.best_at:.0f} s", sampler.best_size)
    ]
    if probe.best is not None:
        candidates.append(probe.best)
    for snap, label, size in candidates:
        if snap is not None:
            print_sites(snap, f"{label} ({size / 2**20:.1f} MB traced)", args.top)


def print_sites(snap: tracemalloc.Snapshot, label: str, top: int) -> None:
    snap = snap.filter_traces([tracemalloc.Filter(False, tracemalloc.__file__)])

    def in_llmflow(tb: tracemalloc.Traceback) -> tracemalloc.Frame | None:
        # innermost llmflow frame of a traceback (tracebacks are most recent last)
        for frame in reversed(tb):
            if "/llmflow/" in frame.filename:
                return frame
        return None

    by_site: dict[str, int] = {}
    counts: dict[str, int] = {}
    for stat in snap.statistics("traceback"):
        frame = in_llmflow(stat.traceback)
        key = where(frame) if frame else "(no llmflow frame) " + where(stat.traceback[-1])
        by_site[key] = by_site.get(key, 0) + stat.size
        counts[key] = counts.get(key, 0) + stat.count
    print(f"\ntop allocation sites, snapshot: {label}; by innermost llmflow/ frame:")
    for key, size in sorted(by_site.items(), key=lambda kv: -kv[1])[:top]:
        text = ""
        if not key.startswith("("):
            path, _, line = key.rpartition(":")
            full = str(Path(__file__).resolve().parent.parent / path)
            text = linecache.getline(full, int(line)).strip()
        print(f"  {size / 2**20:8.1f} MB {counts[key]:>9,} blocks  {key}  {text[:72]}")


# -- main -----------------------------------------------------------------------------


def pg_url() -> str:
    os.environ.setdefault("XDG_RUNTIME_DIR", tempfile.gettempdir())
    import pgserver  # type: ignore[import-untyped]

    server = pgserver.get_server(tempfile.mkdtemp(prefix="llmflow-pg-"), cleanup_mode="stop")
    return str(server.get_uri())


def ladder(
    root: Path, args: argparse.Namespace, sizes: list[int], store_url: str | None = None
) -> list[Measured]:
    done: list[Measured] = []
    for n in sizes:
        if len(done) >= 2 and n == args.items and not args.force:
            estimate = extrapolate(done, n)
            if estimate > args.max_minutes * 60:
                print(
                    f"{n:>9,} skipped: extrapolated wall time {estimate / 60:.1f} min >"
                    f" --max-minutes {args.max_minutes:g} (--force runs it)",
                    flush=True,
                )
                continue
            print(f"   ({n:,} items: extrapolated {estimate / 60:.1f} min; running it)",
                  flush=True)  # fmt: skip
        store = None
        if store_url:
            store = f"{store_url}{'&' if '?' in store_url else '?'}options=-csearch_path%3Dn{n}"
            import psycopg

            with psycopg.connect(store_url, autocommit=True) as conn:
                conn.execute(f"CREATE SCHEMA IF NOT EXISTS n{n}")
        for _ in range(args.repeat):
            m = measure(root, n, args, store)
            show(m)
        done.append(m)
    return done


def source_version() -> str:
    """The commit measured (others may be editing ``llmflow/``: a dirty tree says so)."""
    repo = Path(__file__).resolve().parent.parent
    try:
        head = subprocess.run(
            ["git", "-C", str(repo), "rev-parse", "--short", "HEAD"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "-C", str(repo), "status", "--porcelain", "llmflow"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown commit"
    return head + (" + uncommitted changes in llmflow/" if dirty else "")  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--items", type=int, default=1_000_000)
    parser.add_argument("--chunk", type=int, default=10_000, help="batch_chunk_requests")
    parser.add_argument("--batch-seconds", type=float, default=0.5)
    parser.add_argument(
        "--sizes",
        type=int,
        nargs="*",
        default=[10_000, 100_000],
        help="Smaller sizes measured first (default 10000 100000).",
    )
    parser.add_argument(
        "--max-minutes",
        type=float,
        default=15.0,
        help="Run --items only if its extrapolated wall time fits.",
    )
    parser.add_argument("--force", action="store_true", help="Run --items whatever it takes.")
    parser.add_argument("--timeout", type=float, default=7200.0, help="Per run, seconds.")
    parser.add_argument(
        "--postgres",
        action="store_true",
        help="Also run the ladder on a pgserver postgresql:// store.",
    )
    parser.add_argument("--postgres-max-items", type=int, default=100_000)
    parser.add_argument(
        "--tracemalloc",
        type=int,
        metavar="N",
        default=0,
        help="Also an in-process run of N items under tracemalloc.",
    )
    parser.add_argument(
        "--probe",
        type=int,
        metavar="N",
        default=0,
        help="Also an in-process run of N items with store/tracker hooks"
        " (no tracing): batches loaded at once, RSS at the end.",
    )
    parser.add_argument("--sample-seconds", type=float, default=2.0)
    parser.add_argument("--frames", type=int, default=8, help="tracemalloc traceback depth")
    parser.add_argument("--top", type=int, default=15)
    parser.add_argument("--skip-ladder", action="store_true")
    parser.add_argument(
        "--log-format",
        choices=["json", "console"],
        default="json",
        help="The run's --log-format (json: phases are shown).",
    )
    parser.add_argument("--repeat", type=int, default=1, help="Runs per size.")
    parser.add_argument("--workdir", type=Path, help="Keep the files here (default: a temp dir).")
    args = parser.parse_args()  # fmt: skip
    sizes = sorted({n for n in args.sizes if n < args.items} | {args.items})
    import anthropic

    print(f"llmflow at {source_version()}; python {sys.version.split()[0]},"
          f" anthropic {anthropic.__version__}, {os.cpu_count()} CPUs; chunk {args.chunk:,},"
          f" emulator batch {args.batch_seconds:g} s;"
          f" target peak RSS <= {TARGET_MB:.0f} MB")  # fmt: skip
    with contextlib.ExitStack() as stack:
        if args.workdir is not None:
            args.workdir.mkdir(parents=True, exist_ok=True)
            root = args.workdir
        else:
            root = Path(
                stack.enter_context(tempfile.TemporaryDirectory(prefix="llmflow-batchmem-"))
            )
        if not args.skip_ladder:
            print(f"\n{'items':>9} {'store':<6} {'peak RSS':>11}          (poll)"
                  f"        wall")  # fmt: skip
            done = ladder(root, args, sizes)
            big = [m for m in done if m.items == args.items]
            if big:
                m = big[0]
                verdict = "MET" if m.maxrss_mb <= TARGET_MB else "NOT MET"
                if not completed(m):  # a run cut short proves nothing about its peak
                    verdict = "not shown (the run did not complete)"
                print(f"\n{args.items:,} items: peak RSS {m.maxrss_mb:.1f} MB -> target {verdict}")
            elif len(done) >= 2:
                a, b = done[-2], done[-1]
                per = (b.maxrss_mb - a.maxrss_mb) / (b.items - a.items)
                rss = b.maxrss_mb + per * (args.items - b.items)
                print(f"\n{args.items:,} items (extrapolated, linear): peak RSS ~{rss:.0f} MB,"
                      f" wall ~{extrapolate(done, args.items) / 60:.1f} min;"
                      f" growth {per * 1e6 / 1024:.2f} GB per million items")  # fmt: skip
            if args.postgres:
                url = pg_url()
                print("\npostgresql:// store (pgserver):")
                ladder(root, args, [n for n in sizes if n <= args.postgres_max_items], url)
        if args.probe:
            in_process_run(root, args.probe, args, trace=False)
        if args.tracemalloc:
            in_process_run(root, args.tracemalloc, args, trace=True)


if __name__ == "__main__":
    main()
