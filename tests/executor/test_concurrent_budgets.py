"""Many processes share one run store and one budget: the bill stays within every limit.

Real processes end to end, as in ``test_kill_resume.py``: one ``llmflow emulator``
serves on loopback with injected faults (429, 529, 500), and N ``llmflow run
--backend anthropic`` processes, each its own run id, all on one store (a SQLite
directory, or a PostgreSQL URL with the processes started from two working
directories, half each), run one pipeline under a policy whose budget is drawn at
random so that the processes together want 1.5x-5x what the budget allows.

The processes are forked from one launcher that imported llmflow first (imports take
1-4 s of CPU per process on this machine: 64 fresh interpreters spent two minutes
starting), and wait at a gate (a file) that opens once all of them are ready, so
their runs really start at once. Each is a process of its own, with its own store
connection, working directory, log and exit code.

The emulator's billing ledger is the ground truth. After every process has exited:

(a) what the ledger billed is within every limit of the policy (each period limit
    against the whole ledger; the per-run limit against what each run recorded plus
    its unrecorded money), and the spend/limit ratio shows the budget was used;
(b) tracker == ledger: every ``usage`` row names a billed response with the same
    tokens and the same cost, no response is recorded twice, and the billed
    responses no row records are covered by the runs' ``unrecorded_usd``; the budget
    counters agree with the rows (spent = recorded, unrecorded = the runs', nothing
    left reserved);
(c) every process exited 0 (succeeded), 1 (some items failed) or 3 (budget stop).

:func:`run_trial` does one trial and returns what it found; the tests here run one
trial on SQLite (8 processes) and one on PostgreSQL (16); ``bench/concurrency_trials.py``
runs many, larger, with the same functions. The budget's seed is printed; set
``LLMFLOW_CONCURRENCY_SEED`` to replay one.

The last test is what the PostgreSQL trials hit at random (a process opening the
store deadlocks with the processes writing it, and exits 2), made deterministic;
it is marked as an expected failure until llmflow no longer takes those locks.
"""

from __future__ import annotations

import contextlib
import json
import os
import random
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import time
import urllib.request
from collections import Counter
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import ROUND_DOWN, Decimal
from pathlib import Path
from typing import Any, Protocol

import pytest
from ruamel.yaml import YAML

from llmflow.catalog import TokenUsage, format_usd, load_catalog
from llmflow.emulator.ledger import entry_cost, entry_usage

ROOT = Path(__file__).resolve().parents[2]
FIXTURES = ROOT / "tests" / "fixtures" / "concurrency"
PIPELINE = FIXTURES / "pipeline.yaml"
POLICY_TEMPLATE = FIXTURES / "policy.yaml"
DATA = FIXTURES / "data"
PIPELINE_NAME = "concurrent-budgets"  # `name` of the fixture pipeline
TAG = ("team", "concurrency")  # `tags` of the fixture policy
API_KEY = "test"
FAULTS = "rate_limit=0.05,overloaded=0.03,server_error=0.02"
LATENCY_MS = 20.0
ALLOWED_EXITS = frozenset({0, 1, 3})  # succeeded, some items failed, stopped by the budget
SEED_ENV = "LLMFLOW_CONCURRENCY_SEED"

Process = subprocess.Popen[bytes]

# Import what `llmflow run` will import, say so (the ready file), wait for the gate,
# then run the CLI: `python -c RUNNER READY GATE run ...`.
_RUNNER = """\
import os, sys, time
from llmflow.cli import main
import anthropic, psycopg, llmflow.executor.run, llmflow.planner, llmflow.tracker.store
ready, gate = sys.argv.pop(1), sys.argv.pop(1)
open(ready, "w").close()
while not os.path.exists(gate):
    time.sleep(0.02)
sys.argv[0] = "llmflow"
main()
"""
_LLMFLOW = "import sys; from llmflow.cli import main; sys.argv[0] = 'llmflow'; main()"

# Import what `llmflow run` will import once, then fork one child per run: each goes to
# its working directory, writes to its log, says it is ready, waits for the gate and
# runs the CLI; the launcher writes each child's pid and then its exit code:
# `python -c LAUNCHER SPEC.json`.
_LAUNCHER = """\
import json, os, signal, sys, time
from llmflow.cli import main
import anthropic, psycopg, llmflow.executor.run, llmflow.planner, llmflow.tracker.store
spec = json.load(open(sys.argv[1]))
children = {}
for run in spec["runs"]:
    pid = os.fork()
    if pid == 0:
        code = 70
        try:
            os.chdir(run["cwd"])
            log = os.open(run["log"], os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
            os.dup2(log, 1)
            os.dup2(log, 2)
            open(run["ready"], "w").close()
            while not os.path.exists(spec["gate"]):
                time.sleep(0.02)
            sys.argv = ["llmflow", *run["args"]]
            try:
                main()
                code = 0
            except SystemExit as exit:
                code = exit.code if isinstance(exit.code, int) else 1
        finally:
            sys.stdout.flush()
            sys.stderr.flush()
            os._exit(code)
    children[pid] = run
    with open(run["pid"], "w") as out:
        out.write(str(pid))
def stop(signum, frame):
    for pid in children:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
signal.signal(signal.SIGTERM, stop)
while children:
    pid, status = os.wait()
    run = children.pop(pid, None)
    if run is not None:
        with open(run["exit"] + ".tmp", "w") as out:
            out.write(str(os.waitstatus_to_exitcode(status)))
        os.replace(run["exit"] + ".tmp", run["exit"])
"""


class TrialError(RuntimeError):
    """A trial could not be carried out (a process never came up, a store unreadable)."""


# -- the emulator --------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def child_env(pycache: Path | None = None, **extra: str) -> dict[str, str]:
    """The environment of a child process: loopback unproxied and, with ``pycache``,
    bytecode cached there (as an installed llmflow has it) even where
    ``PYTHONDONTWRITEBYTECODE`` is set."""
    env = {**os.environ, "NO_PROXY": "127.0.0.1,localhost", **extra}
    if pycache is not None:
        env.pop("PYTHONDONTWRITEBYTECODE", None)
        env["PYTHONPYCACHEPREFIX"] = str(pycache)
    return env


@dataclass
class Emulator:
    """A running ``llmflow emulator`` subprocess."""

    url: str
    proc: Process

    def call(self, path: str, method: str = "GET") -> Any:
        req = urllib.request.Request(self.url + path, method=method, headers={"x-api-key": API_KEY})
        with urllib.request.urlopen(req, timeout=30) as response:
            return json.loads(response.read())

    def ledger(self) -> list[dict[str, Any]]:
        entries: list[dict[str, Any]] = self.call("/_emulator/ledger")["requests"]
        return entries

    def reset(self) -> None:
        """Empty the ledger and restart the fault sequence from the seed."""
        self.call("/_emulator/reset", "POST")

    def stop(self) -> None:
        stop(self.proc)


def stop(proc: Process) -> None:
    """Terminate ``proc`` (then kill it) if it still runs."""
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)


def start_emulator(
    log: Path,
    *,
    seed: int,
    faults: str = FAULTS,
    latency_ms: float = LATENCY_MS,
    env: Mapping[str, str] | None = None,
    timeout: float = 60.0,
) -> Emulator:
    """Start ``llmflow emulator`` on a free loopback port and wait until it answers (in
    the log's directory: llmflow comes from the environment, not the current one)."""
    port = free_port()
    args = ["emulator", "--host", "127.0.0.1", "--port", str(port), "--latency-ms",
            str(latency_ms), "--faults", faults, "--seed", str(seed)]  # fmt: skip
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-c", _LLMFLOW, *args],
            cwd=log.parent, env=dict(env or child_env()), stdout=out, stderr=subprocess.STDOUT,
        )  # fmt: skip
    emulator = Emulator(f"http://127.0.0.1:{port}", proc)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise TrialError(f"the emulator exited with {proc.returncode}: {log.read_text()}")
        with contextlib.suppress(OSError):
            emulator.call("/_emulator/ledger")
            return emulator
        time.sleep(0.05)
    stop(proc)
    raise TrialError(f"the emulator did not answer within {timeout:.0f} s")


# -- budgets ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Budget:
    """The policy's ``budget``: period limits (one at least) and maybe a per-run limit."""

    per_day_usd: Decimal | None = None
    per_month_usd: Decimal | None = None
    per_run_usd: Decimal | None = None
    scope_tag: str | None = None

    def section(self) -> dict[str, Any]:
        """The policy's ``budget:`` mapping."""
        out: dict[str, Any] = {"on_exceed": "stop", "alert_at": 0.8}
        for key in ("per_run_usd", "per_day_usd", "per_month_usd"):
            amount = getattr(self, key)
            if amount is not None:
                out[key] = format_usd(amount)
        if self.scope_tag is not None:
            out["scope_tag"] = self.scope_tag
        return out

    def period_limits(self) -> list[tuple[str, Decimal]]:
        """``(name, amount)`` of each period limit: each bounds every process's spend."""
        limits = [("day", self.per_day_usd), ("month", self.per_month_usd)]
        return [(name, amount) for name, amount in limits if amount is not None]

    def scope(self, period: str, day: str) -> str:
        """The ``budget_counters`` scope a period limit checks on UTC day ``day``."""
        when = day if period == "day" else day[:7]
        who = f"tag/{TAG[0]}={TAG[1]}" if self.scope_tag else f"pipeline/{PIPELINE_NAME}"
        return f"{period}/{when}/{who}"

    def describe(self) -> str:
        parts = [f"{name} ${format_usd(amount)}" for name, amount in self.period_limits()]
        if self.scope_tag:
            parts[-1] += f" (tag {self.scope_tag})"
        if self.per_run_usd is not None:
            parts.append(f"run ${format_usd(self.per_run_usd)}")
        return ", ".join(parts)


def _usd(amount: Decimal) -> Decimal:
    return amount.quantize(Decimal("0.000001"), rounding=ROUND_DOWN)


def draw_budget(rng: random.Random, processes: int, run_demand: Decimal) -> Budget:
    """A random budget that binds: the processes together want 1.5x-5x its tightest limit.

    The shape is a day limit of the pipeline, a month limit of the team tag
    (``scope_tag``), or both (either the tighter); a third of the budgets also have a
    per-run limit of 0.5x-1.5x what one run wants (which then caps each run's demand).
    Day and month limits are both scoped to the pipeline when there is no tag.
    ``run_demand`` is what one run costs when it completes (the plan's expected cost).
    """
    per_run = None
    if rng.random() < 1 / 3:
        per_run = _usd(run_demand * Decimal(str(round(rng.uniform(0.5, 1.5), 3))))
    demand = processes * (run_demand if per_run is None else min(run_demand, per_run))
    tight = _usd(demand / Decimal(str(round(rng.uniform(1.5, 5.0), 3))))
    shape = rng.choice(("day", "month_tag", "both"))
    if shape == "day":
        return Budget(per_day_usd=tight, per_run_usd=per_run)
    if shape == "month_tag":
        return Budget(per_month_usd=tight, per_run_usd=per_run, scope_tag=TAG[0])
    loose = _usd(tight * Decimal(str(round(rng.uniform(1.0, 1.5), 3))))
    day, month = (tight, loose) if rng.random() < 0.5 else (loose, tight)
    return Budget(per_day_usd=day, per_month_usd=month, per_run_usd=per_run, scope_tag=TAG[0])


def run_demand() -> Decimal:
    """The plan's expected cost of one run of the fixture pipeline (built offline)."""
    import asyncio

    from llmflow.planner import build_plan_async
    from llmflow.spec.loader import load_pair

    pipeline, policy = load_pair(PIPELINE, POLICY_TEMPLATE, inputs={})
    assert policy is not None
    result = asyncio.run(build_plan_async(pipeline, policy, inputs={}, catalog=load_catalog()))
    return Decimal(result.plan.total.cost_expected)


def write_policy(path: Path, budget: Budget) -> None:
    """The fixture policy with ``budget`` instead of its own."""
    yaml = YAML()
    policy = yaml.load(POLICY_TEMPLATE.read_text())
    policy["budget"] = budget.section()
    with path.open("w") as out:
        yaml.dump(policy, out)


def prepare_workdirs(root: Path, budget: Budget, count: int) -> list[Path]:
    """``count`` working directories, each with its own copy of the pipeline, its data
    and the policy (the processes name them by relative paths)."""
    dirs = []
    for k in range(count):
        wd = root / f"wd{k}"
        wd.mkdir(parents=True)
        shutil.copy(PIPELINE, wd / "pipeline.yaml")
        shutil.copytree(DATA, wd / "data")
        write_policy(wd / "policy.yaml", budget)
        dirs.append(wd)
    return dirs


# -- the run store ---------------------------------------------------------------------


def is_url(store: str) -> bool:
    return store.startswith(("postgresql://", "postgres://"))


def query(store: str, sql: str) -> list[tuple[Any, ...]]:
    """Rows of ``sql`` (no parameters) from the store: a directory or a URL."""
    if is_url(store):
        import psycopg

        with psycopg.connect(store, autocommit=True) as conn:
            return [tuple(row) for row in conn.execute(sql).fetchall()]
    from llmflow.tracker.store import DB_NAME

    db = sqlite3.connect(f"file:{Path(store) / DB_NAME}?mode=ro", uri=True, timeout=30)
    try:
        return db.execute(sql).fetchall()
    finally:
        db.close()


@dataclass(frozen=True)
class UsageRow:
    run_id: str
    request_id: str | None
    model: str
    usage: TokenUsage
    cost: Decimal


def usage_rows(store: str) -> list[UsageRow]:
    rows = query(
        store,
        "SELECT run_id, request_id, model, input_tokens, cache_write_5m, cache_write_1h,"
        " cache_read, output_tokens, thinking_tokens, cost_usd FROM usage",
    )
    return [
        UsageRow(run, rid, model, TokenUsage(input=i, cache_write_5m=w5, cache_write_1h=w1,
                                             cache_read=r, output=o, thinking=t), Decimal(str(c)))
        for run, rid, model, i, w5, w1, r, o, t, c in rows
    ]  # fmt: skip


def _money(value: Any) -> Decimal:
    return Decimal(str(value))


# -- one trial -------------------------------------------------------------------------


@dataclass
class Trial:
    """What one trial did and found; ``problems`` empty means it passed."""

    label: str
    store_kind: str
    processes: int
    budget: Budget
    exits: dict[str, int | None] = field(default_factory=dict)
    billed: int = 0  # responses the emulator billed
    billed_usd: Decimal = Decimal(0)
    recorded: int = 0  # usage rows
    unrecorded_entries: int = 0  # billed responses no usage row records
    unrecorded_entries_usd: Decimal = Decimal(0)
    unrecorded_usd: Decimal = Decimal(0)  # sum of runs.unrecorded_usd
    ratios: dict[str, Decimal] = field(default_factory=dict)  # limit -> billed / limit
    startup_s: float = 0.0  # from the first spawn until every process is at the gate
    run_s: float = 0.0  # from the gate until every process has exited
    ended_s: dict[str, float] = field(default_factory=dict)  # run id -> exit, from the gate
    problems: list[str] = field(default_factory=list)

    @property
    def passed(self) -> bool:
        return not self.problems

    @property
    def ratio(self) -> Decimal:
        """Billed over the tightest period limit."""
        periods = [v for k, v in self.ratios.items() if k in ("day", "month")]
        return max(periods, default=Decimal(0))

    @property
    def median_exit_s(self) -> float:
        ends = sorted(self.ended_s.values())
        return ends[len(ends) // 2] if ends else 0.0

    def exit_counts(self) -> str:
        counts = Counter(self.exits.values())
        return " ".join(f"{code}:{n}" for code, n in sorted(counts.items(), key=str))

    def report(self) -> str:
        """Several lines: the figures, then each problem."""
        lines = [
            f"{self.label}: {self.store_kind}, {self.processes} processes, budget"
            f" {self.budget.describe()}",
            f"  billed {self.billed} responses ${format_usd(self.billed_usd)};"
            f" recorded {self.recorded}; unrecorded {self.unrecorded_entries}"
            f" (${format_usd(self.unrecorded_entries_usd)} <= runs' unrecorded"
            f" ${format_usd(self.unrecorded_usd)}); exits {self.exit_counts()}",
            "  spent/limit " + ", ".join(f"{k} {float(v):.3f}" for k, v in self.ratios.items())
            + f"; start {self.startup_s:.1f} s, run {self.run_s:.1f} s"
            + f" (median exit {self.median_exit_s:.1f} s)",
        ]  # fmt: skip
        lines += [f"  PROBLEM: {p}" for p in self.problems]
        return "\n".join(lines)


class ForkedRun:
    """One run forked by the launcher: its pid and, once it has ended, its exit code."""

    def __init__(self, pid_file: Path, exit_file: Path) -> None:
        self._pid_file = pid_file
        self._exit_file = exit_file
        self.returncode: int | None = None

    def poll(self) -> int | None:
        if self.returncode is None and self._exit_file.exists():
            self.returncode = int(self._exit_file.read_text())
        return self.returncode

    def kill(self) -> None:
        if self.poll() is None and self._pid_file.exists():
            with contextlib.suppress(ProcessLookupError, ValueError):
                os.kill(int(self._pid_file.read_text()), signal.SIGKILL)


@dataclass
class Launcher:
    """A process that imported llmflow once and forked one child per run."""

    proc: Process
    runs: dict[str, ForkedRun]

    @classmethod
    def start(
        cls, runs: Mapping[str, tuple[Path, list[str]]], root: Path, gate: Path,
        env: Mapping[str, str],
    ) -> Launcher:  # fmt: skip
        """Fork ``run_id -> (working directory, CLI arguments)`` behind ``gate``; each
        child says it is ready in ``root/gates/<run_id>`` and logs to ``root/logs``."""
        state = root / "launcher"
        state.mkdir()
        spec: dict[str, Any] = {"gate": str(gate), "runs": []}
        forked: dict[str, ForkedRun] = {}
        for run_id, (cwd, args) in runs.items():
            pid, exit_file = state / f"{run_id}.pid", state / f"{run_id}.exit"
            spec["runs"].append({
                "cwd": str(cwd), "args": args, "log": str(root / "logs" / f"{run_id}.log"),
                "ready": str(root / "gates" / run_id), "pid": str(pid), "exit": str(exit_file),
            })  # fmt: skip
            forked[run_id] = ForkedRun(pid, exit_file)
        (state / "spec.json").write_text(json.dumps(spec))
        with (state / "launcher.log").open("wb") as out:
            proc = subprocess.Popen(
                [sys.executable, "-c", _LAUNCHER, str(state / "spec.json")],
                env=dict(env), stdout=out, stderr=subprocess.STDOUT,
            )  # fmt: skip
        return cls(proc, forked)

    def stop(self) -> None:
        """Kill every child still running, then the launcher once it has their codes."""
        for run in self.runs.values():
            run.kill()
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.proc.wait(10)
        stop(self.proc)
        for run in self.runs.values():
            run.poll()


class RunProcess(Protocol):
    """What a trial reads of a run's process (a Popen or a :class:`ForkedRun`)."""

    @property
    def returncode(self) -> int | None: ...
    def poll(self) -> int | None: ...


def _wait_for(
    procs: Mapping[str, RunProcess], done: Any, timeout: float, what: str, logs: Path
) -> None:
    deadline = time.monotonic() + timeout
    while not done():
        dead = {r: p.returncode for r, p in procs.items() if p.poll() is not None}
        if what == "ready" and dead:
            run_id, code = next(iter(dead.items()))
            tail = (logs / f"{run_id}.log").read_text()[-2000:]
            raise TrialError(f"{run_id} exited {code} before the gate opened:\n{tail}")
        if time.monotonic() > deadline:
            raise TrialError(f"not all processes were {what} within {timeout:.0f} s")
        time.sleep(0.05)


def run_trial(
    *,
    label: str,
    emulator: Emulator,
    store: str,
    processes: int,
    budget: Budget,
    root: Path,
    workdirs: int = 2,
    pycache: Path | None = None,
    extra_env: Mapping[str, str] | None = None,
    startup_timeout: float | None = None,
    run_timeout: float = 300.0,
) -> Trial:
    """Reset the emulator, start ``processes`` runs at once on ``store`` (from
    ``workdirs`` working directories in turn), wait for all, then check the trial.

    Every process still alive at a timeout is killed and the trial fails.
    """
    root.mkdir(parents=True, exist_ok=True)
    dirs = prepare_workdirs(root, budget, workdirs)
    logs = root / "logs"
    gates = root / "gates"
    logs.mkdir()
    gates.mkdir()
    gate = gates / "open"
    env = child_env(
        pycache, ANTHROPIC_API_KEY=API_KEY, ANTHROPIC_BASE_URL=emulator.url, **(extra_env or {})
    )
    trial = Trial(label, "postgres" if is_url(store) else "sqlite", processes, budget)
    emulator.reset()
    cli = ["run", "pipeline.yaml", "--policy", "policy.yaml", "--backend", "anthropic"]
    cli += ["--store", store, "--log-format", "json"]
    runs = {
        f"{label}-{i:03d}": (dirs[i % len(dirs)], [*cli, "--run-id", f"{label}-{i:03d}"])
        for i in range(processes)
    }
    started = time.monotonic()
    launcher = Launcher.start(runs, root, gate, env)
    procs = launcher.runs
    try:
        patience = startup_timeout or 120.0 + 2.0 * processes

        def all_ready() -> bool:
            if launcher.proc.poll() is not None:
                tail = (root / "launcher" / "launcher.log").read_text()[-2000:]
                raise TrialError(f"the launcher exited {launcher.proc.returncode}:\n{tail}")
            return all((gates / r).exists() for r in procs)

        _wait_for(procs, all_ready, patience, "ready", logs)
        first_day = datetime.now(UTC).strftime("%Y-%m-%d")
        gate.touch()
        opened = time.monotonic()
        trial.startup_s = opened - started
        try:

            def all_done() -> bool:
                for run_id, proc in procs.items():
                    if run_id not in trial.ended_s and proc.poll() is not None:
                        trial.ended_s[run_id] = time.monotonic() - opened
                return len(trial.ended_s) == len(procs)

            _wait_for(procs, all_done, run_timeout, "done", logs)
        except TrialError as exc:
            trial.problems.append(str(exc))
        trial.run_s = time.monotonic() - opened
        last_day = datetime.now(UTC).strftime("%Y-%m-%d")
    finally:
        launcher.stop()
    trial.exits = {r: p.returncode for r, p in procs.items()}
    check_trial(trial, emulator.ledger(), store, first_day, last_day, logs)
    return trial


def check_trial(
    trial: Trial,
    ledger: list[dict[str, Any]],
    store: str,
    first_day: str,
    last_day: str,
    logs: Path,
) -> None:
    """Checks (a), (b) and (c) of the module docstring; adds to ``trial.problems``."""
    problems = trial.problems
    budget = trial.budget

    # (c) exits
    for run_id, code in sorted(trial.exits.items()):
        if code not in ALLOWED_EXITS:
            tail = (logs / f"{run_id}.log").read_text()[-1500:]
            problems.append(f"{run_id} exited {code}:\n{tail}")

    # (a) the ledger within every limit
    billed = {e["request_id"]: e for e in ledger}
    if len(billed) != len(ledger):
        problems.append("the emulator billed one request id twice")
    costs = {rid: entry_cost(e) for rid, e in billed.items()}
    trial.billed = len(ledger)
    trial.billed_usd = sum(costs.values(), Decimal(0))
    for name, amount in budget.period_limits():
        width = 10 if name == "day" else 7  # 2026-11-30 or 2026-11
        period_changed = first_day[:width] != last_day[:width]
        bound = amount * 2 if period_changed else amount  # a limit per period, two periods
        trial.ratios[name] = trial.billed_usd / amount
        if trial.billed_usd > bound:
            problems.append(
                f"the ledger billed ${format_usd(trial.billed_usd)}, over the {name} limit"
                f" ${format_usd(amount)}" + (" (over two periods)" if period_changed else "")
            )

    # (b) tracker == ledger
    rows = usage_rows(store)
    trial.recorded = len(rows)
    seen: set[str] = set()
    recorded_by_run: dict[str, Decimal] = {}
    for row in rows:
        recorded_by_run[row.run_id] = recorded_by_run.get(row.run_id, Decimal(0))
        if row.request_id is None:
            problems.append(f"{row.run_id}: a usage row without a request id")
            continue
        if row.request_id in seen:
            problems.append(f"{row.run_id}: {row.request_id} recorded twice")
        seen.add(row.request_id)
        entry = billed.get(row.request_id)
        if entry is None:
            problems.append(f"{row.run_id}: {row.request_id} recorded but never billed")
            continue
        if (row.model, row.usage) != (entry["model"], entry_usage(entry)):
            problems.append(
                f"{row.run_id}: {row.request_id}: store {row.model} {row.usage} !="
                f" ledger {entry['model']} {entry_usage(entry)}"
            )
        if row.cost != costs[row.request_id]:
            problems.append(
                f"{row.run_id}: {row.request_id}: store cost ${format_usd(row.cost)} !="
                f" ledger ${format_usd(costs[row.request_id])}"
            )
        recorded_by_run[row.run_id] += costs[row.request_id]
    lost = billed.keys() - seen
    trial.unrecorded_entries = len(lost)
    trial.unrecorded_entries_usd = sum((costs[rid] for rid in lost), Decimal(0))
    runs = {
        run_id: (_money(unrecorded), None if limit is None else _money(limit))
        for run_id, unrecorded, limit in query(
            store, "SELECT run_id, unrecorded_usd, budget_limit FROM runs"
        )
    }
    trial.unrecorded_usd = sum((u for u, _ in runs.values()), Decimal(0))
    if trial.unrecorded_entries_usd > trial.unrecorded_usd:
        problems.append(
            f"{len(lost)} billed responses (${format_usd(trial.unrecorded_entries_usd)}) are"
            f" not recorded, and the runs' unrecorded_usd is only"
            f" ${format_usd(trial.unrecorded_usd)}"
        )
    missing = set(trial.exits) - runs.keys()
    for run_id in sorted(missing):
        if trial.exits[run_id] in ALLOWED_EXITS:
            problems.append(f"{run_id} exited {trial.exits[run_id]} and left no run row")

    # (a) the per-run limit: what the ledger billed for a run's recorded responses,
    # plus its unrecorded money (an upper bound of its unrecorded responses).
    if budget.per_run_usd is not None:
        worst = Decimal(0)
        for run_id, (unrecorded, limit) in runs.items():
            used = recorded_by_run.get(run_id, Decimal(0)) + unrecorded
            worst = max(worst, used / budget.per_run_usd)
            if limit != budget.per_run_usd:
                problems.append(f"{run_id}: budget_limit {limit} != policy {budget.per_run_usd}")
            if used > budget.per_run_usd:
                problems.append(
                    f"{run_id}: billed ${format_usd(used)} (recorded + unrecorded) over the"
                    f" per-run limit ${format_usd(budget.per_run_usd)}"
                )
        trial.ratios["run(max)"] = worst

    # (b) the budget counters agree with the rows, and nothing stays reserved
    recorded_usd = sum((r.cost for r in rows), Decimal(0))
    counters = {
        scope: (_money(s), _money(r), _money(u))
        for scope, s, r, u in query(
            store, "SELECT scope, spent, reserved, unrecorded FROM budget_counters"
        )
    }
    for scope, (_, reserved, _) in sorted(counters.items()):
        if reserved != 0:
            problems.append(f"counter {scope}: ${format_usd(reserved)} still reserved")
    if first_day == last_day:
        for name, _ in budget.period_limits():
            scope = budget.scope(name, first_day)
            spent, reserved, unrecorded = counters.get(scope, (Decimal(0),) * 3)
            if (spent, unrecorded) != (recorded_usd, trial.unrecorded_usd):
                problems.append(
                    f"counter {scope}: spent ${format_usd(spent)}, unrecorded"
                    f" ${format_usd(unrecorded)}; the rows: recorded ${format_usd(recorded_usd)},"
                    f" unrecorded ${format_usd(trial.unrecorded_usd)}"
                )
    for run_id, (unrecorded, _) in runs.items():
        spent, _, run_unrecorded = counters.get(f"run/{run_id}", (Decimal(0),) * 3)
        mine = sum((r.cost for r in rows if r.run_id == run_id), Decimal(0))
        if (spent, run_unrecorded) != (mine, unrecorded):
            problems.append(
                f"counter run/{run_id}: spent ${format_usd(spent)}, unrecorded"
                f" ${format_usd(run_unrecorded)}; its rows: ${format_usd(mine)},"
                f" unrecorded ${format_usd(unrecorded)}"
            )


# -- the tests -------------------------------------------------------------------------


def trial_seed() -> int:
    """``LLMFLOW_CONCURRENCY_SEED`` if set, else a fresh one (printed by the caller)."""
    given = os.environ.get(SEED_ENV)
    return int(given) if given else random.SystemRandom().randrange(1, 2**31)


@pytest.fixture(scope="module")
def pycache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Bytecode for the module's processes (the first trial compiles, later ones read)."""
    return tmp_path_factory.mktemp("pycache")


@pytest.fixture(scope="module")
def emulator(tmp_path_factory: pytest.TempPathFactory, pycache: Path) -> Iterator[Emulator]:
    """One emulator with faults for the module: 20 ms latency, 10% of requests refused."""
    log = tmp_path_factory.mktemp("emulator") / "emulator.log"
    emu = start_emulator(log, seed=7, env=child_env(pycache))
    try:
        yield emu
    finally:
        emu.stop()


def _trial(
    label: str, emulator: Emulator, store: str, processes: int, root: Path, pycache: Path
) -> Trial:
    seed = trial_seed()
    budget = draw_budget(random.Random(seed), processes, run_demand())
    print(f"{label}: {SEED_ENV}={seed}: budget {budget.describe()}")
    try:
        trial = run_trial(
            label=label, emulator=emulator, store=store, processes=processes,
            budget=budget, root=root, pycache=pycache,
        )  # fmt: skip
    except TrialError as exc:
        pytest.fail(f"{SEED_ENV}={seed}: {exc}")
    print(trial.report())
    assert trial.passed, f"{SEED_ENV}={seed}\n{trial.report()}"
    return trial


def test_eight_processes_on_one_sqlite_store_stay_within_the_budget(
    emulator: Emulator, tmp_path: Path, pycache: Path
) -> None:
    store = tmp_path / "store"
    trial = _trial("sqlite", emulator, str(store), 8, tmp_path / "trial", pycache)
    assert trial.exits.keys() == {f"sqlite-{i:03d}" for i in range(8)}
    assert trial.billed > 0


def test_sixteen_processes_from_two_directories_on_one_postgres_stay_within_the_budget(
    emulator: Emulator, tmp_path: Path, pycache: Path, pg_url: str
) -> None:
    trial = _trial("pg", emulator, pg_url, 16, tmp_path / "trial", pycache)
    assert trial.billed > 0
    # Both working directories ran: each process wrote its run directory in its own.
    for wd in ("wd0", "wd1"):
        assert any((tmp_path / "trial" / wd / ".llmflow" / "runs").iterdir())


def test_opening_a_postgres_store_while_another_process_writes_does_not_deadlock(
    pg_url: str,
) -> None:
    """What the 16- and 64-process trials hit at random, made deterministic: a process
    opens the store while another (a running run) is in a transaction that has written
    ``usage`` and is about to write ``requests``, as recording a response does."""
    import threading

    import psycopg

    from llmflow.tracker import RunStore

    RunStore.open(pg_url).close()  # the first process created the schema
    opened: dict[str, BaseException | None] = {}

    def open_store() -> None:
        try:
            RunStore.open(pg_url).close()
            opened["error"] = None
        except BaseException as exc:
            opened["error"] = exc

    with (
        psycopg.connect(pg_url) as writer,
        psycopg.connect(pg_url, autocommit=True) as monitor,
    ):
        writer.execute(
            "INSERT INTO runs (run_id, pipeline, policy, status, started_at)"
            " VALUES ('r', 'p', 'q', 'running', '2026-11-30T00:00:00.000000+00:00')"
        )
        writer.commit()
        writer.execute(
            "INSERT INTO usage (run_id, step_id, key, item_index, attempt, model, mode,"
            " input_tokens, cache_write_5m, cache_write_1h, cache_read, output_tokens,"
            " cost_usd, recorded_at) VALUES ('r', 's', 'k', 0, 1, 'm', 'sync', 1, 0, 0, 0, 1,"
            " 0.000001, '2026-11-30T00:00:00.000000+00:00')"
        )
        thread = threading.Thread(target=open_store, daemon=True)
        thread.start()
        deadline = time.monotonic() + 20
        while thread.is_alive() and time.monotonic() < deadline:
            (waiting,) = monitor.execute(
                "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock'"
                " AND pid <> %s",
                (writer.info.backend_pid,),
            ).fetchone() or (0,)
            if waiting:
                break  # the opener waits for the writer's transaction
            time.sleep(0.02)
        writer_error: BaseException | None = None
        try:
            writer.execute(
                "INSERT INTO requests (run_id, key, step_id, item_index, status)"
                " VALUES ('r', 'k', 's', 0, 'succeeded')"
            )
            writer.commit()
        except psycopg.Error as exc:
            writer_error = exc
            writer.rollback()
        thread.join(30)
    assert not thread.is_alive(), "the store did not open within 30 s"
    assert opened["error"] is None, f"opening the store failed: {opened['error']}"
    assert writer_error is None, f"the writer's transaction failed: {writer_error}"
