"""Many processes, one budget: is the bill within every limit in every trial?

The property: 8 ``llmflow run`` processes on one SQLite store and 64 on one
PostgreSQL store (started from two working directories, half each), under random
budgets and injected faults, over 20 trials; in every trial the emulator's billing
ledger is within every limit, and the run store's records equal the ledger.

One ``llmflow emulator`` subprocess serves every trial (``--latency-ms 20``, faults
``rate_limit=0.05,overloaded=0.03,server_error=0.02``, ``--seed``). Each trial does,
on SQLite and then on PostgreSQL: reset the emulator, draw a budget (a day limit of
the pipeline, a month limit of the team tag, or both, maybe a per-run limit, sized
so the processes together want 1.5x-5x the tightest), give it a fresh store (a new
directory; a new schema), start the processes (they import llmflow, then pass a gate
together), wait for all, and check (tests/executor/test_concurrent_budgets.py):

(a) the ledger's billed cost <= every limit (and spent/limit, to show the budget is
    used, not just respected);
(b) tracker == ledger: every ``usage`` row is a billed response with the same usage
    and cost, the billed responses not recorded are covered by ``unrecorded_usd``,
    and the budget counters agree with the rows;
(c) every process exited 0, 1 or 3.

A table row per trial and store, then a summary line; exit 1 if any trial failed.
The processes are forked from one launcher that imported llmflow once (a fresh
interpreter costs 1-4 s of CPU in imports: 64 of them took two minutes to start on 2
cores); ``--max-minutes`` stops starting new trials after that long (the summary
says how many ran). Run::

    .venv/bin/python bench/concurrency_trials.py [--trials 20] [--sqlite-processes 8]
        [--pg-processes 64] [--seed N] [--pg-url postgresql://...] [--max-minutes M]
        [--keep] [--code DIR]

The llmflow under test is this working tree, read when each process starts: trees
being edited meanwhile can break a trial; ``--code DIR`` pins a copy (e.g.
``git archive HEAD llmflow | tar -x -C DIR``) for the emulator and the runs.

Without ``--pg-url`` a throwaway PostgreSQL server starts (pgserver, as the tests do;
``LLMFLOW_TEST_PG_URL`` is used if set). Each trial uses its own schema, dropped after.
"""

from __future__ import annotations

import argparse
import random
import secrets
import shutil
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from decimal import Decimal
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from tests.executor.test_concurrent_budgets import (  # noqa: E402
    FAULTS,
    LATENCY_MS,
    Emulator,
    Trial,
    TrialError,
    child_env,
    draw_budget,
    run_demand,
    run_trial,
    start_emulator,
)
from tests.postgres import server_url, with_schema  # noqa: E402


@contextmanager
def pg_schema(base: str) -> Iterator[str]:
    """A URL whose sessions see a new empty schema, dropped afterwards."""
    import psycopg

    schema = f"bench_{secrets.token_hex(6)}"
    with psycopg.connect(base, autocommit=True) as conn:
        conn.execute(f"CREATE SCHEMA {schema}")
    try:
        yield with_schema(base, schema)
    finally:
        with psycopg.connect(base, autocommit=True) as conn:
            conn.execute(f"DROP SCHEMA {schema} CASCADE")


SHOWN_PROBLEMS = 4  # per trial; the logs of a failed trial are kept


def row(t: Trial, index: int) -> str:
    ratios = " ".join(f"{k}={float(v):.3f}" for k, v in t.ratios.items())
    return (
        f"{index:>5} {t.store_kind:<8} {t.processes:>5} {t.billed:>6} {t.recorded:>6}"
        f" {t.unrecorded_entries:>5} ${float(t.billed_usd):>9.6f}  {t.exit_counts():<14}"
        f" {t.startup_s:>6.1f} {t.median_exit_s:>6.1f} {t.run_s:>6.1f}"
        f"  {'ok' if t.passed else 'FAIL':<4}"
        f"  {t.budget.describe()}  [{ratios}]"
    )


HEADER = (
    f"{'trial':>5} {'store':<8} {'procs':>5} {'billed':>6} {'usage':>6} {'lost':>5}"
    f" {'ledger USD':>10}  {'exits':<14} {'start':>6} {'median':>6} {'run':>6}  {'res':<4}"
    "  budget  [spent/limit]"
)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--trials", type=int, default=20)
    parser.add_argument("--sqlite-processes", type=int, default=8, help="0 skips SQLite")
    parser.add_argument("--pg-processes", type=int, default=64, help="0 skips PostgreSQL")
    parser.add_argument("--seed", type=int, default=None, help="budgets and faults (random)")
    parser.add_argument("--pg-url", default=None, help="a PostgreSQL server (else pgserver)")
    parser.add_argument("--latency-ms", type=float, default=LATENCY_MS)
    parser.add_argument("--faults", default=FAULTS)
    parser.add_argument("--run-timeout", type=float, default=600.0, help="seconds per trial")
    parser.add_argument(
        "--max-minutes", type=float, default=None, help="start no trial after this long"
    )
    parser.add_argument("--keep", action="store_true", help="keep the trials' directories")
    parser.add_argument(
        "--code",
        type=Path,
        default=None,
        help="run the emulator and the runs from this llmflow source tree (PYTHONPATH),"
        " e.g. `git archive HEAD llmflow | tar -x -C DIR`, to test a fixed version",
    )
    args = parser.parse_args()

    seed = args.seed if args.seed is not None else random.SystemRandom().randrange(1, 2**31)
    rng = random.Random(seed)
    work = Path(tempfile.mkdtemp(prefix="llmflow-concurrency-"))
    pycache = work / "pycache"
    demand = run_demand()
    extra = {"PYTHONPATH": str(args.code.resolve())} if args.code else {}
    base_url = None
    if args.pg_processes:
        base_url = args.pg_url or server_url()
    print(
        f"seed {seed}; one run wants ${demand} (plan, expected); emulator latency"
        f" {args.latency_ms:g} ms, faults {args.faults}; llmflow from"
        f" {args.code or 'this tree'}; work in {work}",
        flush=True,
    )

    started = time.monotonic()
    emulator: Emulator = start_emulator(
        work / "emulator.log", seed=seed, faults=args.faults, latency_ms=args.latency_ms,
        env=child_env(pycache, **extra),
    )  # fmt: skip
    trials: list[Trial] = []
    ran = 0
    try:
        print(HEADER, flush=True)
        for index in range(1, args.trials + 1):
            if args.max_minutes and time.monotonic() - started > args.max_minutes * 60:
                print(f"--max-minutes {args.max_minutes:g} reached: stopping", flush=True)
                break
            ran += 1
            for kind, processes in (("sqlite", args.sqlite_processes), ("pg", args.pg_processes)):
                if not processes:
                    continue
                budget = draw_budget(rng, processes, demand)
                root = work / f"t{index:02d}-{kind}"
                label = f"t{index:02d}{kind}"
                try:
                    if kind == "sqlite":
                        trial = run_trial(
                            label=label, emulator=emulator, store=str(root / "store"),
                            processes=processes, budget=budget, root=root, pycache=pycache,
                            run_timeout=args.run_timeout, extra_env=extra,
                        )  # fmt: skip
                    else:
                        assert base_url is not None
                        with pg_schema(base_url) as url:
                            trial = run_trial(
                                label=label, emulator=emulator, store=url,
                                processes=processes, budget=budget, root=root, pycache=pycache,
                                run_timeout=args.run_timeout, extra_env=extra,
                            )  # fmt: skip
                except TrialError as exc:  # it could not run: counts as failed, no figures
                    store_kind = "sqlite" if kind == "sqlite" else "postgres"
                    trial = Trial(label, store_kind, processes, budget, problems=[str(exc)])
                trials.append(trial)
                print(row(trial, index), flush=True)
                for problem in trial.problems[:SHOWN_PROBLEMS]:
                    print(f"      PROBLEM: {' / '.join(problem.splitlines()[:2])}", flush=True)
                if len(trial.problems) > SHOWN_PROBLEMS:
                    more = len(trial.problems) - SHOWN_PROBLEMS
                    print(f"      ... and {more} more (logs in {root})", flush=True)
                if trial.passed and not args.keep:
                    shutil.rmtree(root, ignore_errors=True)
    finally:
        emulator.stop()
    wall = time.monotonic() - started

    passed = sum(t.passed for t in trials)
    measured = [t for t in trials if t.ratios]  # the trials whose processes ran
    kinds = []
    for kind in ("sqlite", "postgres"):
        of_kind = [t for t in trials if t.store_kind == kind]
        if not of_kind:
            continue
        text = f"{kind} {sum(t.passed for t in of_kind)}/{len(of_kind)} passed"
        ran_kind = [t for t in of_kind if t.ratios]
        if ran_kind:
            text += (
                f", spent/limit {float(min(t.ratio for t in ran_kind)):.3f}"
                f"-{float(max(t.ratio for t in ran_kind)):.3f}, mean start"
                f" {sum(t.startup_s for t in ran_kind) / len(ran_kind):.1f} s, run"
                f" {sum(t.run_s for t in ran_kind) / len(ran_kind):.1f} s"
            )
        kinds.append(text)
    per_kind = "; ".join(kinds)
    low = min((t.ratio for t in measured), default=Decimal(0))
    high = max((t.ratio for t in measured), default=Decimal(0))
    print(
        f"summary: {ran} of {args.trials} trials ran, {passed}/{len(trials)} store trials"
        f" passed ({len(trials) - len(measured)} could not run); spent/limit (tightest"
        f" limit) min {float(low):.3f} max {float(high):.3f}; {per_kind};"
        f" wall {wall / 60:.1f} min; seed {seed}",
        flush=True,
    )
    if passed == len(trials) and not args.keep:
        shutil.rmtree(work, ignore_errors=True)
    else:
        print(f"trial directories kept in {work}")
    return 0 if passed == len(trials) else 1


if __name__ == "__main__":
    sys.exit(main())
