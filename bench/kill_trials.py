"""kill -9 at random points, then resume: is any request or batch chunk paid twice?

Three scenarios, each with its own ``llmflow emulator`` subprocess on loopback, run
the kill-and-resume fixture (tests/fixtures/executor: 60 items, claude-haiku-4-5):

* ``sync``: one sync step, 4 requests in flight, 150 ms per response;
* ``batch``: one batch step in 6 chunks (``limits.batch_chunk_requests: 10``), batches
  ending 1.5 s after creation;
* ``slow-create``: 4 chunks of 15 whose ``batches.create`` is answered 1.5 s after
  the batch exists (``--batch-create-delay-ms 1500``), so that kills often land inside
  a create: the intent is durable, the batch may exist, its id is not yet recorded.

Each process imports llmflow, then waits at a gate (a file) that opens at once: kill
times are measured from the gate, so the seconds of imports are not in the window. A
calibration run per scenario and store (unkilled, and checked like a trial) gives the
window: from 0.3 s before its first logged event (opening the store, a resume's
recovery) to 0.3 s after its last (the CLI then takes a while to exit, doing nothing
of interest). Each trial takes a fresh store, starts ``llmflow run --run-id ...
--backend anthropic`` as a CLI process, SIGKILLs it at a uniformly random time in the
window, 1 to ``--max-kills`` times (each resumed process may be killed again; a kill
drawn after the run ended is a miss), then resumes the run id until it ends (a
process still running after ``--run-timeout`` is killed: the trial fails as hung).

Right after each kill the store is read for what that process left (beyond what
earlier kills left): sync requests in flight and their reserved upper bounds, and a
batch intent without its batch id, which means the kill landed inside batch creation
(phase ``create+`` when the API had already created the batch, ``create-`` when not);
otherwise the phase is the last event the process logged (``start``, ``submitted``,
``poll``, ``collect``, ``end``, ...). ``syncN``: N requests were in flight.

Checked against the emulator's ledger (and its list of batches, with their results):

(a) the run's final status is ``succeeded`` (the last exit 0), every item succeeded;
(b) every item is recorded once (one ``usage`` row per key), every row names a billed
    response with the same usage and cost;
(c) what was billed but not recorded (sync: responses in flight at a kill; batch: a
    chunk created twice) costs no more than the run's ``unrecorded_usd``; the run's
    ``unrecorded_usd`` is exactly the reservations of the sync requests in flight at
    the kills, and no more responses were lost than were in flight;
(d) no ``custom_id`` is in two batches the API created (no chunk paid twice: the API
    can always be asked here), and every batch the API created is known to the store;
(e) the ledger's total is within the per-run budget (1.5x the plan's max cost) and the
    run's budget counter has nothing left reserved, spent = the rows, unrecorded = the
    run's.

One row per trial: scenario, store, kills (``time:phase`` each, ``miss`` for a kill
drawn after the run ended), billed responses, recorded (usage rows), lost (billed, not
recorded: a sync request in flight at a kill is paid again when resent), the run's
unrecorded $, dup (items billed in two batches), the API's batches, exit codes (``hung``:
killed after ``--run-timeout``) and the verdict; then a summary per scenario and store.
Exit 1 if any trial failed. A failed trial's directory is kept with the processes'
logs and ``evidence.json``: the kills, exits and problems, the run's store rows (runs,
workers, batches, requests, usage), the budget counters, the API's batches and the
ledger. Run::

    .venv/bin/python bench/kill_trials.py [--trials 20] [--pg-trials 3] [--max-kills 2]
        [--scenarios sync,batch,slow-create] [--seed N] [--pg-url postgresql://...]
        [--pg-lease S] [--run-timeout S] [--max-minutes M] [--keep] [--code DIR]

``--pg-trials 0`` skips PostgreSQL; without ``--pg-url`` a throwaway server starts
(pgserver, as the tests do; ``LLMFLOW_TEST_PG_URL`` is used if set), one schema per
trial. On PostgreSQL a killed worker counts as alive until its lease expires (60 s by
default): the resumed worker takes back its work only then, so each kill costs up to
a minute there; ``--pg-lease S`` sets ``LLMFLOW_WORKER_LEASE_SECONDS`` for every process
(a lease shorter than a process's start-up, ~5-10 s here, has expired before the
resume begins: a different path). ``--max-minutes`` starts no new trial after that
long. ``--code DIR`` runs the emulator and the runs from a pinned copy of llmflow
(``git archive HEAD llmflow | tar -x -C DIR``), since this tree may be edited meanwhile.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import random
import shutil
import signal
import sqlite3
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections import Counter
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from ruamel.yaml import YAML  # noqa: E402

from llmflow.catalog import TokenUsage, format_usd, load_catalog  # noqa: E402
from llmflow.emulator.ledger import entry_cost, entry_usage  # noqa: E402
from tests.executor.test_concurrent_budgets import (  # noqa: E402
    _LLMFLOW,
    _RUNNER,
    API_KEY,
    Emulator,
    Process,
    TrialError,
    child_env,
    free_port,
    query,
    stop,
)

FIXTURES = ROOT / "tests" / "fixtures" / "executor"
ITEMS = len((FIXTURES / "data" / "items.jsonl").read_text().splitlines())
RUN_ID = "kill-trial"
BUDGET_FACTOR = Decimal("1.5")  # the per-run budget, times the plan's max cost
RESUMABLE = frozenset({1, 75, 130})  # partial, pending, interrupted: resume again
MAX_RESUMES = 4
POLL = 0.002
LEAD_S = 0.3  # the kill window: from this long before a calibration run's first event
#                to this long after its last


@dataclass(frozen=True)
class Scenario:
    """A pipeline, the emulator it runs against, and the policy's limits."""

    name: str
    pipeline: str  # a fixture in tests/fixtures/executor
    emulator_args: tuple[str, ...]
    limits: Mapping[str, Any]


SCENARIOS = (
    Scenario("sync", "sync.yaml", ("--latency-ms", "150"), {"max_concurrency": 4}),
    Scenario(
        "batch", "batch.yaml", ("--latency-ms", "20", "--batch-seconds", "1.5"),
        {"batch_chunk_requests": 10},
    ),
    Scenario(
        "slow-create", "batch.yaml",
        ("--latency-ms", "20", "--batch-seconds", "1", "--batch-create-delay-ms", "1500"),
        {"batch_chunk_requests": 15},
    ),
)  # fmt: skip


# -- setting up ----------------------------------------------------------------------


def start_emulator(log: Path, args: Sequence[str], env: Mapping[str, str]) -> Emulator:
    """``llmflow emulator ARGS`` on a free loopback port, once it answers."""
    port = free_port()
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-c", _LLMFLOW, "emulator", "--host", "127.0.0.1", "--port",
             str(port), *args],
            cwd=log.parent, env=dict(env), stdout=out, stderr=subprocess.STDOUT,
        )  # fmt: skip
    emulator = Emulator(f"http://127.0.0.1:{port}", proc)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise TrialError(f"the emulator exited with {proc.returncode}: {log.read_text()}")
        with contextlib.suppress(OSError):
            emulator.call("/_emulator/ledger")
            return emulator
        time.sleep(0.05)
    stop(proc)
    raise TrialError("the emulator did not answer within 120 s")


def prepare_workdir(wd: Path, scenario: Scenario, budget: Decimal | None) -> None:
    """The scenario's pipeline, its data and the fixture policy with its limits and
    (when given) a per-run budget."""
    wd.mkdir(parents=True)
    shutil.copy(FIXTURES / scenario.pipeline, wd / "pipeline.yaml")
    shutil.copytree(FIXTURES / "data", wd / "data")
    yaml = YAML()
    policy = yaml.load((FIXTURES / "policy.yaml").read_text())
    policy["limits"].update(scenario.limits)
    policy["budget"] = {"on_exceed": "stop"}
    if budget is not None:
        policy["budget"]["per_run_usd"] = format_usd(budget)
    with (wd / "policy.yaml").open("w") as out:
        yaml.dump(policy, out)


def plan_max(wd: Path) -> Decimal:
    """The plan's max cost of the pipeline in ``wd`` (built offline)."""
    from llmflow.planner import build_plan_async
    from llmflow.spec.loader import load_pair

    pipeline, policy = load_pair(wd / "pipeline.yaml", wd / "policy.yaml", inputs={})
    assert policy is not None
    result = asyncio.run(build_plan_async(pipeline, policy, inputs={}, catalog=load_catalog()))
    return Decimal(result.plan.total.cost_max)


# -- one process, maybe killed ---------------------------------------------------------


@dataclass
class Kill:
    """A SIGKILL and what the killed process left in the store (beyond what earlier
    processes left there)."""

    at_s: float  # after the process's imports (the gate)
    phase: str = "start"
    in_flight: int = 0  # sync requests it had in flight
    in_flight_usd: Decimal = Decimal(0)  # their reserved upper bounds
    creating: bool = False  # its intent without a batch id: killed inside batches.create

    @property
    def label(self) -> str:
        return f"{self.at_s:.2f}s:{self.phase}"


@dataclass
class Session:
    """Starts the trial's processes, and remembers what the killed ones left."""

    root: Path
    workdir: Path
    store: str
    env: Mapping[str, str]
    emulator: Emulator
    timeout: float
    count: int = 0
    in_flight: dict[tuple[str, str], Decimal] = field(default_factory=dict)  # seen at kills
    intents: set[str] = field(default_factory=set)  # seen at kills

    @property
    def log(self) -> Path:
        return self.root / f"run{self.count}.log"

    def start(self) -> Process:
        """Start ``llmflow run`` and return it once it has imported llmflow (the gate
        opens at once)."""
        self.count += 1
        gates = self.root / "gates"
        gates.mkdir(exist_ok=True)
        ready, gate = gates / f"ready{self.count}", gates / f"open{self.count}"
        args = ["run", "pipeline.yaml", "--policy", "policy.yaml", "--backend", "anthropic",
                "--run-id", RUN_ID, "--store", self.store, "--log-format", "json"]  # fmt: skip
        with self.log.open("wb") as out:
            proc = subprocess.Popen(
                [sys.executable, "-c", _RUNNER, str(ready), str(gate), *args],
                cwd=self.workdir, env=dict(self.env), stdout=out, stderr=subprocess.STDOUT,
            )  # fmt: skip
        deadline = time.monotonic() + self.timeout
        while not ready.exists():
            if proc.poll() is not None or time.monotonic() > deadline:
                stop(proc)
                raise TrialError(f"run {self.count} never came up (exit {proc.returncode})")
            time.sleep(0.02)
        gate.touch()
        return proc

    def finish(self, proc: Process) -> int | None:
        """Wait for ``proc`` to exit: its exit code, None when it hung (then it is
        killed after ``timeout``)."""
        try:
            return proc.wait(self.timeout)
        except subprocess.TimeoutExpired:
            stop(proc)
            return None

    def reconciled(self) -> Counter[str]:
        """How the intents left by kills were settled (``found``, ``none``, ``unknown``)."""
        return Counter(
            str(e.get("outcome"))
            for n in range(1, self.count + 1)
            for e in events(self.root / f"run{n}.log")
            if e.get("event") == "batch.intent_reconciled"
        )

    def hang(self) -> str:
        """What the last process did before it hung: its most frequent events."""
        logged = Counter(str(e.get("event")) for e in events(self.log))
        top = ", ".join(f"{name} x{n}" for name, n in logged.most_common(3))
        return f"run {self.count} did not end within {self.timeout:.0f} s (it logged {top})"

    def kill_at(self, at_s: float) -> tuple[Kill | None, int | None]:
        """Start a process and SIGKILL it ``at_s`` after its imports: the kill, or its
        exit code when it ended first."""
        proc = self.start()
        opened = time.monotonic()
        while time.monotonic() - opened < at_s:
            if proc.poll() is not None:
                return None, proc.returncode
            time.sleep(POLL)
        if proc.poll() is not None:
            return None, proc.returncode
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(10)
        kill = Kill(time.monotonic() - opened)
        self.look(kill)
        return kill, None

    def run(self) -> tuple[int | None, tuple[float, float], float]:
        """Start a process and let it finish: its exit code, when it logged its first
        and last events, and when it exited (seconds after its imports)."""
        proc = self.start()
        opened, wall = time.monotonic(), time.time()
        code = self.finish(proc)
        ended = time.monotonic() - opened
        stamps = [
            datetime.fromisoformat(e["timestamp"]).timestamp() - wall
            for e in events(self.log)
            if "timestamp" in e
        ]
        logged = (max(0.0, stamps[0]), stamps[-1]) if stamps else (0.0, ended)
        return code, logged, ended

    def look(self, kill: Kill) -> None:
        """What the killed process left: sync requests in flight and a batch intent that
        earlier kills did not leave, and its phase."""
        rows = read(
            self.store, "SELECT key, dispatched_at, reserved_usd FROM requests WHERE"
            f" run_id = '{RUN_ID}' AND status = 'in_flight' AND batch_id IS NULL",
        )  # fmt: skip
        mine = {(k, str(at)): Decimal(str(r or 0)) for k, at, r in rows}
        mine = {ident: usd for ident, usd in mine.items() if ident not in self.in_flight}
        self.in_flight.update(mine)
        kill.in_flight, kill.in_flight_usd = len(mine), sum(mine.values(), Decimal(0))
        intents = {b for (b,) in read(self.store, _INTENTS)} - self.intents
        self.intents |= intents
        last = [e.get("event", "") for e in events(self.log)][-1:] or ["start"]
        if intents:
            kill.creating = True
            known = {b for (b,) in read(self.store, "SELECT batch_id FROM batches")}
            created = any(b not in known for b in api_batches(self.emulator))
            kill.phase = "create+" if created else "create-"
        elif mine:
            kill.phase = f"sync{len(mine)}"
        else:
            kill.phase = PHASES.get(last[0], last[0])


_INTENTS = f"SELECT batch_id FROM batches WHERE run_id = '{RUN_ID}' AND status = 'creating'"

#: The phase a killed process was in, by the last event it logged.
PHASES = {
    "run.started": "start",
    "worker.started": "start",
    "batch.intent_reconciled": "reconciled",
    "batch.submitted": "submitted",
    "batch.polled": "poll",
    "request.completed": "collect",
    "run.summary": "end",
}


def events(log: Path) -> list[dict[str, Any]]:
    """The JSON events a process logged (other lines skipped)."""
    out = []
    for line in log.read_text(errors="replace").splitlines():
        with contextlib.suppress(ValueError):
            event = json.loads(line)
            if isinstance(event, dict):
                out.append(event)
    return out


def read(store: str, sql: str) -> list[tuple[Any, ...]]:
    """Rows of ``sql``, none while the store or its schema does not exist yet."""
    import psycopg

    try:
        return query(store, sql)
    except (sqlite3.Error, psycopg.Error):
        return []


# -- the API's batches -----------------------------------------------------------------


def api_batches(emulator: Emulator) -> dict[str, str]:
    """Every batch the emulator created: id -> processing status."""
    out: dict[str, str] = {}
    after: str | None = None
    while True:
        page = emulator.call(
            "/v1/messages/batches?limit=100" + (f"&after_id={after}" * bool(after))
        )
        out.update({b["id"]: b["processing_status"] for b in page["data"]})
        if not page["has_more"]:
            return out
        after = page["last_id"]


def batch_custom_ids(emulator: Emulator, batch_id: str) -> list[str]:
    """The ``custom_id`` of every result of an ended batch."""
    req = urllib.request.Request(
        f"{emulator.url}/v1/messages/batches/{batch_id}/results", headers={"x-api-key": API_KEY}
    )
    with urllib.request.urlopen(req, timeout=30) as response:
        lines = response.read().decode().splitlines()
    return [json.loads(line)["custom_id"] for line in lines if line]


# -- one trial -------------------------------------------------------------------------


@dataclass
class Trial:
    """What one trial did and found; no ``problems`` means it passed."""

    scenario: str
    store_kind: str
    index: int
    kills: list[Kill] = field(default_factory=list)
    misses: int = 0  # kills drawn after the process had already ended
    exits: list[int | None] = field(default_factory=list)  # None: hung, killed
    billed: int = 0
    billed_usd: Decimal = Decimal(0)
    recorded: int = 0
    lost: int = 0  # billed responses no usage row records
    lost_usd: Decimal = Decimal(0)
    unrecorded_usd: Decimal = Decimal(0)  # the run's
    duplicates: int = 0  # items billed more than once
    batches: int = 0  # batches the API created
    reconciled: Counter[str] = field(default_factory=Counter)  # intents: found, none, ...
    problems: list[str] = field(default_factory=list)

    @property
    def passed(self) -> bool:
        return not self.problems

    @property
    def in_create(self) -> int:
        return sum(k.creating for k in self.kills)


def run_trial(
    trial: Trial, session: Session, rng: random.Random, window: tuple[float, float], max_kills: int
) -> None:
    """Kill the run 1..``max_kills`` times at random in ``window`` (seconds after its
    imports), resume it until it ends, check."""
    session.emulator.reset()
    for _ in range(rng.randint(1, max_kills)):
        kill, code = session.kill_at(rng.uniform(*window))
        if kill is None:
            assert code is not None
            trial.misses += 1
            trial.exits.append(code)
            break
        trial.kills.append(kill)
    if not trial.exits or trial.exits[-1] in RESUMABLE:  # a miss may have finished the run
        resume(trial, session)
    trial.reconciled = session.reconciled()
    check(trial, session)


def resume(trial: Trial, session: Session) -> None:
    """Run the same run id until it ends (resuming pending or partial runs again)."""
    for _ in range(MAX_RESUMES):
        code, _, _ = session.run()
        trial.exits.append(code)
        if code is None:
            trial.problems.append(session.hang())
        if code not in RESUMABLE:
            return


@dataclass(frozen=True)
class Row:
    """A ``usage`` row of the run."""

    key: str
    request_id: str | None
    mode: str
    model: str
    usage: TokenUsage
    cost: Decimal


def usage_rows(store: str) -> list[Row]:
    rows = query(
        store,
        "SELECT key, request_id, mode, model, input_tokens, cache_write_5m, cache_write_1h,"
        " cache_read, output_tokens, thinking_tokens, cost_usd FROM usage"
        f" WHERE run_id = '{RUN_ID}'",
    )
    return [
        Row(key, rid, mode, model, TokenUsage(input=i, cache_write_5m=w5, cache_write_1h=w1,
                                              cache_read=r, output=o, thinking=t), Decimal(str(c)))
        for key, rid, mode, model, i, w5, w1, r, o, t, c in rows
    ]  # fmt: skip


def check(trial: Trial, session: Session) -> None:
    """Checks (a) to (e) of the module docstring; adds to ``trial.problems``."""
    store, emulator = session.store, session.emulator
    ledger = emulator.ledger()
    trial.billed = len(ledger)
    trial.billed_usd = sum((entry_cost(e) for e in ledger), Decimal(0))
    check_status(trial, store)
    rows = usage_rows(store)
    trial.recorded = len(rows)
    keys = Counter(r.key for r in rows)
    for key, n in sorted(keys.items()):
        if n > 1:
            trial.problems.append(f"{key} recorded {n} times")
    if len(keys) != ITEMS:
        trial.problems.append(f"{len(keys)} of {ITEMS} items recorded")
    batch_of = dict(
        read(store, f"SELECT key, batch_id FROM requests WHERE run_id = '{RUN_ID}'")
    )  # the batch whose result each batch item's row records
    lost = match_ledger(trial, ledger, rows, batch_of)
    trial.lost = len(lost)
    trial.lost_usd = sum((entry_cost(e) for e in lost), Decimal(0))
    check_unrecorded(trial, store)
    check_batches(trial, store, emulator)
    check_budget(trial, store, rows)


def check_status(trial: Trial, store: str) -> None:
    """(a): exit 0, the run succeeded, every item succeeded."""
    if not trial.exits or trial.exits[-1] != 0:
        trial.problems.append(f"exit codes {trial.exits}: the last is not 0")
    runs = read(store, f"SELECT status, unrecorded_usd FROM runs WHERE run_id = '{RUN_ID}'")
    if not runs:
        trial.problems.append("no run row")
        return
    status, unrecorded = runs[0]
    trial.unrecorded_usd = Decimal(str(unrecorded))
    if status != "succeeded":
        trial.problems.append(f"the run ended {status}")
    statuses = dict(
        read(store, f"SELECT status, count(*) FROM requests WHERE run_id = '{RUN_ID}' GROUP BY 1")
    )
    if statuses != {"succeeded": ITEMS}:
        trial.problems.append(f"request statuses {statuses}")


def match_ledger(
    trial: Trial, ledger: list[dict[str, Any]], rows: list[Row], batch_of: Mapping[str, str]
) -> list[dict[str, Any]]:
    """(b): every row is a billed response with its usage and cost; the billed entries
    no row records (sync entries by request id, batch entries by custom_id and batch)."""
    sync = {e["request_id"]: e for e in ledger if e.get("batch_id") is None}
    batch = {(e["custom_id"], e["batch_id"]): e for e in ledger if e.get("batch_id") is not None}
    per_item = Counter(e["custom_id"] for e in ledger if e.get("batch_id") is not None)
    trial.duplicates = sum(1 for n in per_item.values() if n > 1)
    if len(sync) + len(batch) != len(ledger):
        trial.problems.append("the emulator billed one request id or custom_id twice in a batch")
    taken: set[Any] = set()
    for row in rows:
        ident: Any = row.request_id if row.mode == "sync" else (row.key, batch_of.get(row.key))
        entry = (sync if row.mode == "sync" else batch).get(ident)
        if entry is None:
            trial.problems.append(f"{row.key}: recorded ({row.mode} {ident}) but never billed")
            continue
        taken.add(ident)
        if (row.model, row.usage) != (entry["model"], entry_usage(entry)):
            trial.problems.append(f"{row.key}: store {row.usage} != ledger {entry_usage(entry)}")
        if row.cost != entry_cost(entry):
            trial.problems.append(f"{row.key}: store ${row.cost} != ledger ${entry_cost(entry)}")
    lost = [e for rid, e in sync.items() if rid not in taken]
    return lost + [e for ident, e in batch.items() if ident not in taken]


def check_unrecorded(trial: Trial, store: str) -> None:
    """(c): the lost money is covered, and the unrecorded money is what the kills left
    in flight."""
    if trial.lost_usd > trial.unrecorded_usd:
        trial.problems.append(
            f"{trial.lost} billed responses (${format_usd(trial.lost_usd)}) not recorded;"
            f" the run's unrecorded_usd is only ${format_usd(trial.unrecorded_usd)}"
        )
    in_flight = sum(k.in_flight for k in trial.kills)
    left = sum((k.in_flight_usd for k in trial.kills), Decimal(0))
    if trial.lost > in_flight:
        trial.problems.append(f"{trial.lost} responses lost, only {in_flight} were in flight")
    if trial.unrecorded_usd != left:
        trial.problems.append(
            f"unrecorded_usd ${format_usd(trial.unrecorded_usd)} != the reservations in"
            f" flight at the kills ${format_usd(left)}"
        )


def check_batches(trial: Trial, store: str, emulator: Emulator) -> None:
    """(d): no custom_id in two of the API's batches; every batch known to the store."""
    created = api_batches(emulator)
    trial.batches = len(created)
    known = {b for (b,) in read(store, f"SELECT batch_id FROM batches WHERE run_id = '{RUN_ID}'")}
    seen: dict[str, str] = {}
    for batch_id, status in created.items():
        if batch_id not in known:
            trial.problems.append(f"the API created {batch_id}, which the store does not know")
        if status != "ended":
            trial.problems.append(f"{batch_id} is still {status}")
            continue
        for custom_id in batch_custom_ids(emulator, batch_id):
            if custom_id in seen:
                trial.problems.append(
                    f"{custom_id} sent in two batches ({seen[custom_id]}, {batch_id}):"
                    " a chunk created twice"
                )
            seen[custom_id] = batch_id
    intents = read(
        store, f"SELECT batch_id FROM batches WHERE run_id = '{RUN_ID}' AND status = 'creating'"
    )
    if intents:
        trial.problems.append(f"intents left: {[b for (b,) in intents]}")


def check_budget(trial: Trial, store: str, rows: list[Row]) -> None:
    """(e): the ledger within the per-run budget; the run's counter agrees with the rows."""
    limit = read(store, f"SELECT budget_limit FROM runs WHERE run_id = '{RUN_ID}'")
    if limit and limit[0][0] is not None and trial.billed_usd > Decimal(str(limit[0][0])):
        trial.problems.append(
            f"the ledger billed ${format_usd(trial.billed_usd)}, over the budget ${limit[0][0]}"
        )
    counter = read(
        store,
        f"SELECT spent, reserved, unrecorded FROM budget_counters WHERE scope = 'run/{RUN_ID}'",
    )
    if not counter:
        trial.problems.append("no budget counter for the run")
        return
    spent, reserved, unrecorded = (Decimal(str(v)) for v in counter[0])
    recorded = sum((r.cost for r in rows), Decimal(0))
    if (spent, reserved, unrecorded) != (recorded, Decimal(0), trial.unrecorded_usd):
        trial.problems.append(
            f"counter run/{RUN_ID}: spent {spent} reserved {reserved} unrecorded {unrecorded};"
            f" rows {recorded}, run unrecorded {trial.unrecorded_usd}"
        )


#: What a failed trial's evidence keeps of the store (the run's rows).
EVIDENCE = {
    "runs": "run_id, status, sessions, unrecorded_usd, budget_limit, stop_reason",
    "workers": "worker_id, pid, started_at, lease_until, ended_at",
    "batches": "batch_id, status, submitted_at, ended_at, requests, worker_id",
    "requests": "key, status, batch_id, worker_id, reserved_usd, dispatched_at, request_id",
    "usage": "key, request_id, mode, cost_usd",
}


def write_evidence(trial: Trial, session: Session, path: Path) -> None:
    """A failed trial's kills, exits, problems, the run's store rows and the ledger."""
    tables: dict[str, list[dict[str, str]]] = {}
    for table, columns in EVIDENCE.items():
        names = [c.strip() for c in columns.split(",")]
        rows = read(session.store, f"SELECT {columns} FROM {table} WHERE run_id = '{RUN_ID}'")
        tables[table] = [dict(zip(names, map(str, r), strict=True)) for r in rows]
    counters = read(session.store, "SELECT scope, spent, reserved, unrecorded FROM budget_counters")
    evidence = {
        "kills": [
            {"at_s": round(k.at_s, 3), "phase": k.phase, "in_flight": k.in_flight,
             "in_flight_usd": str(k.in_flight_usd), "creating": k.creating}
            for k in trial.kills
        ],
        "misses": trial.misses,
        "exits": trial.exits,
        "problems": trial.problems,
        "store": tables,
        "budget_counters": [list(map(str, c)) for c in counters],
        "api_batches": api_batches(session.emulator),
        "ledger": [
            {"request_id": e["request_id"], "batch_id": e.get("batch_id"),
             "custom_id": e.get("custom_id"), "cost": str(entry_cost(e))}
            for e in session.emulator.ledger()
        ],
    }  # fmt: skip
    path.write_text(json.dumps(evidence, indent=1) + "\n")


# -- the bench -------------------------------------------------------------------------


HEADER = (
    f"{'scenario':<11} {'store':<6} {'#':>3} {'kills':>5} {'kill times:phases':<34}"
    f" {'billed':>6} {'rec':>4} {'lost':>4} {'unrec $':>10} {'dup':>3} {'api b':>5}"
    f"  {'exits':<10} verdict"
)


def row(t: Trial) -> str:
    kills = " ".join(k.label for k in t.kills) + (" miss" * t.misses)
    exits = ",".join("hung" if c is None else str(c) for c in t.exits)
    return (
        f"{t.scenario:<11} {t.store_kind:<6} {t.index:>3} {len(t.kills):>5} {kills:<34}"
        f" {t.billed:>6} {t.recorded:>4} {t.lost:>4} {format_usd(t.unrecorded_usd):>10}"
        f" {t.duplicates:>3} {t.batches:>5}  {exits:<10}"
        f" {'ok' if t.passed else 'FAIL'}"
    )


@dataclass
class Bench:
    """The bench's settings and what it found."""

    args: argparse.Namespace
    work: Path
    rng: random.Random
    env: dict[str, str]
    started: float = field(default_factory=time.monotonic)
    trials: list[Trial] = field(default_factory=list)
    plan_max: dict[str, Decimal] = field(default_factory=dict)  # per scenario

    def out_of_time(self) -> bool:
        minutes = self.args.max_minutes
        return bool(minutes) and time.monotonic() - self.started > minutes * 60

    def scenario(self, scenario: Scenario, emulator: Emulator) -> None:
        """Calibrate, then the trials on SQLite, then on PostgreSQL."""
        for kind, count in (("sqlite", self.args.trials), ("pg", self.args.pg_trials)):
            if not count or self.out_of_time():
                continue
            window = self.calibrate(scenario, emulator, kind)
            for index in range(1, count + 1):
                if self.out_of_time():
                    print(f"--max-minutes {self.args.max_minutes:g} reached", flush=True)
                    break
                trial = Trial(scenario.name, kind, index)
                root = self.work / f"{scenario.name}-{kind}-{index:02d}"
                try:
                    with self.store(root, kind) as (store, env):
                        session = self.session(root, scenario, store, env, emulator)
                        run_trial(trial, session, self.rng, window, self.args.max_kills)
                        if not trial.passed:  # before a PostgreSQL schema is dropped
                            write_evidence(trial, session, root / "evidence.json")
                except TrialError as exc:
                    trial.problems.append(f"could not run: {exc}")
                self.trials.append(trial)
                print(row(trial), flush=True)
                for problem in trial.problems[:6]:
                    print(f"      PROBLEM: {problem}", flush=True)
                if trial.passed and not self.args.keep:
                    shutil.rmtree(root, ignore_errors=True)

    @contextlib.contextmanager
    def store(self, root: Path, kind: str) -> Iterator[tuple[str, dict[str, str]]]:
        """A fresh store (a directory, or a new PostgreSQL schema) and the run's env."""
        if kind == "sqlite":
            yield str(root / "store"), self.env
            return
        from tests.postgres import fresh_schema

        env = dict(self.env)
        if self.args.pg_lease is not None:
            env["LLMFLOW_WORKER_LEASE_SECONDS"] = str(self.args.pg_lease)
        with fresh_schema() as url:
            yield url, env

    def session(
        self, root: Path, scenario: Scenario, store: str, env: dict[str, str], emu: Emulator
    ) -> Session:
        budget = self.plan_max[scenario.name] * BUDGET_FACTOR
        prepare_workdir(root / "wd", scenario, budget)
        run_env = {**env, "ANTHROPIC_API_KEY": API_KEY, "ANTHROPIC_BASE_URL": emu.url}
        return Session(root, root / "wd", store, run_env, emu, self.args.run_timeout)

    def calibrate(self, scenario: Scenario, emulator: Emulator, kind: str) -> tuple[float, float]:
        """One unkilled run (it must pass the checks): the kill window, from a little
        before its first event (opening the store, a resume's recovery) to a little
        after its last (the CLI then takes a while to exit, doing nothing of interest)."""
        root = self.work / f"{scenario.name}-{kind}-calibration"
        trial = Trial(scenario.name, kind, 0)
        with self.store(root, kind) as (store, env):
            session = self.session(root, scenario, store, env, emulator)
            emulator.reset()
            code, (first, last), ended = session.run()
            trial.exits.append(code)
            if code is None:
                trial.problems.append(session.hang())
            check(trial, session)
        window = (max(0.0, first - LEAD_S), min(ended, last + LEAD_S))
        print(
            f"{scenario.name} on {kind}: an unkilled run logs from {first:.2f} s to {last:.2f} s"
            f" after its imports and exits at {ended:.2f} s: kills in [{window[0]:.2f},"
            f" {window[1]:.2f}] s; {'ok' if trial.passed else 'FAIL'}",
            flush=True,
        )
        if not trial.passed:
            raise TrialError(f"the calibration run failed: {trial.problems}")
        return window


def summary(trials: list[Trial]) -> list[str]:
    """One line per scenario and store."""
    lines = []
    groups: dict[tuple[str, str], list[Trial]] = {}
    for t in trials:
        groups.setdefault((t.scenario, t.store_kind), []).append(t)
    for (name, kind), group in groups.items():
        kills = sum(len(t.kills) for t in group)
        phases = Counter(k.phase.rstrip("0123456789") for t in group for k in t.kills)
        lines.append(
            f"{name:<11} {kind:<6} {sum(t.passed for t in group)}/{len(group)} passed;"
            f" {kills} kills ({sum(t.in_create for t in group)} inside batch creation,"
            f" {sum(t.misses for t in group)} missed); intents reconciled"
            f" {dict(sum((t.reconciled for t in group), Counter[str]()))}; phases"
            f" {dict(sorted(phases.items()))}; lost {sum(t.lost for t in group)} responses"
            f" ${format_usd(sum((t.lost_usd for t in group), Decimal(0)))}, unrecorded"
            f" ${format_usd(sum((t.unrecorded_usd for t in group), Decimal(0)))};"
            f" duplicates {sum(t.duplicates for t in group)}"
        )
    return lines


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--trials", type=int, default=20, help="per scenario on SQLite")
    parser.add_argument("--pg-trials", type=int, default=3, help="per scenario; 0 skips")
    parser.add_argument("--max-kills", type=int, default=2, help="kills per trial (1..N)")
    parser.add_argument(
        "--scenarios", default=",".join(s.name for s in SCENARIOS), help="comma-separated"
    )
    parser.add_argument("--seed", type=int, default=None, help="kill times (random)")
    parser.add_argument("--pg-url", default=None, help="a PostgreSQL server (else pgserver)")
    parser.add_argument(
        "--pg-lease", type=float, default=None, help="worker lease, seconds (llmflow's: 60)"
    )
    parser.add_argument("--run-timeout", type=float, default=180.0, help="seconds per process")
    parser.add_argument("--max-minutes", type=float, default=None, help="no trial after this")
    parser.add_argument("--keep", action="store_true", help="keep every trial's directory")
    parser.add_argument("--code", type=Path, default=None, help="llmflow from this tree")
    return parser.parse_args()


def main() -> int:
    args = parse_args()
    seed = args.seed if args.seed is not None else random.SystemRandom().randrange(1, 2**31)
    if args.pg_url:
        os.environ["LLMFLOW_TEST_PG_URL"] = args.pg_url
    work = Path(tempfile.mkdtemp(prefix="llmflow-kills-"))
    extra = {"PYTHONPATH": str(args.code.resolve())} if args.code else {}
    bench = Bench(args, work, random.Random(seed), child_env(work / "pycache", **extra))
    chosen = [s for s in SCENARIOS if s.name in args.scenarios.split(",")]
    print(f"seed {seed}; up to {args.max_kills} kills per trial; llmflow from"
          f" {args.code or 'this tree'}; work in {work}", flush=True)  # fmt: skip
    print(HEADER, flush=True)
    failed_setup = False
    for scenario in chosen:
        probe = work / f"{scenario.name}-plan"
        prepare_workdir(probe, scenario, None)
        bench.plan_max[scenario.name] = plan_max(probe)
        emulator = start_emulator(work / f"{scenario.name}-emulator.log", scenario.emulator_args,
                                  bench.env)  # fmt: skip
        try:
            bench.scenario(scenario, emulator)
        except TrialError as exc:
            print(f"{scenario.name}: {exc}", flush=True)
            failed_setup = True
        finally:
            emulator.stop()
    for line in summary(bench.trials):
        print("summary: " + line, flush=True)
    passed = all(t.passed for t in bench.trials) and not failed_setup
    minutes = (time.monotonic() - bench.started) / 60
    print(
        f"{sum(t.passed for t in bench.trials)}/{len(bench.trials)} trials passed in"
        f" {minutes:.1f} min; seed {seed}",
        flush=True,
    )
    if passed and not args.keep:
        shutil.rmtree(work, ignore_errors=True)
    else:
        print(f"trial directories kept in {work}")
    return 0 if passed else 1


if __name__ == "__main__":
    sys.exit(main())
