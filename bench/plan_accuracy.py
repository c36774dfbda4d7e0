"""Plan accuracy on the emulator: what ``llmflow plan`` expects vs what ``llmflow run`` costs.

For every example pipeline (``pipelines/*.yaml``) under every shipped policy
(``policies/*.yaml``), pairs that ``llmflow validate`` refuses being skipped and listed,
each as CLI subprocesses with a timeout each, in a fresh temporary store per pair:

1. ``llmflow plan P --policy Q --format json --store S`` (S empty: a plan without
   history, whatever ``$LLMFLOW_STORE`` or ``./.llmflow`` hold);
2. ``llmflow run P --policy Q --backend emulator --store S`` (the in-process emulator at
   its defaults: seed, output lengths, batch cache hit rate), then
   ``llmflow report --last --store S --format json``;
3. ``llmflow plan`` again on S (a plan after one run: it differs from the first only
   where the planner reads the store's history), then a second run on a fresh emulator
   into S and its report.

Compared: the plan's total expected cost with the run's actual total (error % =
(expected - actual) / actual), the plan's max (a true upper bound: it must be >= the
actual on every pair, and per step), and per step the expected vs the actual for steps
that cost over $0.001. Targets: |error| <= 35% before history; max >= actual always.
Deterministic (emulator default seed); bounded by ``--timeout`` per subprocess.

    .venv/bin/python bench/plan_accuracy.py [--pipelines NAME ...] [--policies NAME ...]
        [--jobs N] [--timeout S] [--tolerance PCT] [--step-floor USD] [--json PATH]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
_LLMFLOW = "import sys; from llmflow.cli import main; sys.argv[0] = 'llmflow'; main()"


class CommandFailed(RuntimeError):
    """A subprocess that timed out, or exited with a code the caller did not accept."""


@dataclass
class StepFigures:
    id: str
    expected: Decimal
    max: Decimal
    actual: Decimal
    expected_after: Decimal | None = None  # the plan after one run
    actual_second: Decimal | None = None  # the second run
    route: str = ""  # model, mode, effort and thinking of the first plan
    requests: int = 0
    planned_tokens: dict[str, int] = field(default_factory=dict)  # first plan's estimate
    actual_usage: dict[str, int] = field(default_factory=dict)  # first run's usage

    @property
    def error_pct(self) -> Decimal | None:
        return error_pct(self.expected, self.actual)

    @property
    def error_after_pct(self) -> Decimal | None:
        if self.expected_after is None or self.actual_second is None:
            return None
        return error_pct(self.expected_after, self.actual_second)


@dataclass
class PairFigures:
    pipeline: str
    policy: str
    skipped: str | None = None  # why validate refused the pair (or a command failed)
    expected: Decimal = Decimal(0)
    max: Decimal = Decimal(0)
    actual: Decimal = Decimal(0)
    run_status: str = ""
    expected_after: Decimal = Decimal(0)
    max_after: Decimal = Decimal(0)
    actual_second: Decimal = Decimal(0)
    run2_status: str = ""
    steps: list[StepFigures] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def error_pct(self) -> Decimal | None:
        return error_pct(self.expected, self.actual)

    @property
    def error_after_pct(self) -> Decimal | None:
        return error_pct(self.expected_after, self.actual_second)


def error_pct(expected: Decimal, actual: Decimal) -> Decimal | None:
    """(expected - actual) / actual in percent; None when nothing was spent."""
    if actual == 0:
        return None
    return (expected - actual) / actual * 100


def fmt_pct(value: Decimal | None) -> str:
    return "n/a" if value is None else f"{value:+.1f}%"


def fmt_usd(value: Decimal) -> str:
    return f"${value:.4f}" if value < 10 else f"${value:.2f}"


# -- subprocesses ---------------------------------------------------------------------


def call(args: list[str], timeout: float, cwd: Path) -> subprocess.CompletedProcess[str]:
    """Run ``llmflow ARGS`` in this interpreter (CommandFailed on timeout)."""
    env = {k: v for k, v in os.environ.items() if k != "LLMFLOW_STORE"}
    env["NO_COLOR"] = "1"
    env["COLUMNS"] = "200"
    try:
        return subprocess.run(
            [sys.executable, "-c", _LLMFLOW, *args],
            cwd=cwd,
            env=env,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
    except subprocess.TimeoutExpired as exc:
        raise CommandFailed(f"llmflow {args[0]} timed out after {timeout:g} s") from exc


def last_line(done: subprocess.CompletedProcess[str]) -> str:
    lines = (done.stderr.strip() or done.stdout.strip()).splitlines()
    return lines[-1][:200] if lines else ""


def llmflow(args: list[str], timeout: float, cwd: Path, ok: tuple[int, ...] = (0,)) -> str:
    """stdout of ``llmflow ARGS`` when it exits with a code in ``ok``, else CommandFailed."""
    done = call(args, timeout, cwd)
    if done.returncode not in ok:
        raise CommandFailed(f"llmflow {args[0]} exited {done.returncode}: {last_line(done)}")
    return done.stdout


def validate(pipeline: Path, policy: Path, timeout: float, cwd: Path) -> str | None:
    """None when ``llmflow validate`` accepts the pair, else its first error line."""
    try:
        llmflow(["validate", str(pipeline), "--policy", str(policy)], timeout, cwd)
    except CommandFailed as exc:
        return str(exc)
    return None


def plan_json(pipeline: Path, policy: Path, store: Path, timeout: float, cwd: Path) -> Any:
    args = ["plan", str(pipeline), "--policy", str(policy), "--format", "json"]
    return json.loads(llmflow([*args, "--store", str(store)], timeout, cwd))


def run_and_report(
    pipeline: Path, policy: Path, store: Path, timeout: float, cwd: Path
) -> tuple[str, Any]:
    args = ["run", str(pipeline), "--policy", str(policy), "--backend", "emulator"]
    # 1 (failed items) and 3 (budget stop) still leave a run to report on.
    done = call([*args, "--store", str(store)], timeout, cwd)
    if done.returncode not in (0, 1, 3):
        raise CommandFailed(f"llmflow run exited {done.returncode}: {last_line(done)}")
    status = "ok" if done.returncode == 0 else f"exit {done.returncode}"
    report = llmflow(["report", "--last", "--store", str(store), "--format", "json"], timeout, cwd)
    return status, json.loads(report)


# -- one pair -------------------------------------------------------------------------


def step_costs(plan: Any) -> dict[str, tuple[Decimal, Decimal]]:
    """step id -> (expected, max) of a ``plan --format json`` document."""
    return {
        s["id"]: (Decimal(s["cost"]["expected"]), Decimal(s["cost"]["max"])) for s in plan["steps"]
    }


def actual_costs(report: Any) -> dict[str, Decimal]:
    return {s["id"]: Decimal(s["cost"]) for s in report["steps"]}


def measure_pair(pipeline: Path, policy: Path, root: Path, timeout: float) -> PairFigures:
    figures = PairFigures(pipeline.stem, policy.stem)
    start = time.monotonic()
    refused = validate(pipeline, policy, timeout, root)
    if refused is not None:
        figures.skipped = f"validate refused: {refused}"
        return figures
    store = Path(tempfile.mkdtemp(prefix=f"{pipeline.stem}.{policy.stem}.", dir=root))
    try:
        first = plan_json(pipeline, policy, store, timeout, root)
        figures.run_status, report = run_and_report(pipeline, policy, store, timeout, root)
        after = plan_json(pipeline, policy, store, timeout, root)
        figures.run2_status, report2 = run_and_report(pipeline, policy, store, timeout, root)
    except (CommandFailed, json.JSONDecodeError, KeyError) as exc:
        figures.skipped = f"failed: {exc}"
        return figures
    figures.expected = Decimal(first["total"]["cost_expected"])
    figures.max = Decimal(first["total"]["cost_max"])
    figures.actual = Decimal(report["total"]["cost"])
    figures.expected_after = Decimal(after["total"]["cost_expected"])
    figures.max_after = Decimal(after["total"]["cost_max"])
    figures.actual_second = Decimal(report2["total"]["cost"])
    planned, planned_after = step_costs(first), step_costs(after)
    actual, actual2 = actual_costs(report), actual_costs(report2)
    usage = {s["id"]: s.get("usage", {}) for s in report["steps"]}
    for step in first["steps"]:
        step_id = step["id"]
        expected, maximum = planned[step_id]
        figures.steps.append(
            StepFigures(
                step_id,
                expected,
                maximum,
                actual.get(step_id, Decimal(0)),
                planned_after.get(step_id, (None, None))[0],
                actual2.get(step_id),
                route=" ".join(str(step.get(k)) for k in ("model", "mode", "effort", "thinking")),
                requests=int(step.get("requests", 0)),
                planned_tokens=dict(step.get("tokens", {})),
                actual_usage=dict(usage.get(step_id, {})),
            )
        )
    figures.seconds = time.monotonic() - start
    return figures


# -- output ---------------------------------------------------------------------------


def worst_step(pair: PairFigures, floor: Decimal) -> StepFigures | None:
    measured = [s for s in pair.steps if s.actual > floor and s.error_pct is not None]
    return max(measured, key=lambda s: abs(s.error_pct or Decimal(0)), default=None)


def print_table(pairs: list[PairFigures], floor: Decimal) -> None:
    header = (
        f"{'pipeline':<22} {'policy':<14} {'expected':>9} {'actual':>9} {'error':>8} "
        f"{'max':>9} {'max>=act':>8}  {'worst step (error)':<30} "
        f"{'exp@hist':>9} {'actual2':>9} {'err@hist':>8}"
    )
    print(header)
    print("-" * len(header))
    for p in pairs:
        if p.skipped is not None:
            print(f"{p.pipeline:<22} {p.policy:<14} skipped: {p.skipped}")
            continue
        worst = worst_step(p, floor)
        worst_text = "-" if worst is None else f"{worst.id} ({fmt_pct(worst.error_pct)})"
        status = "" if p.run_status == "ok" else f" [{p.run_status}]"
        print(
            f"{p.pipeline:<22} {p.policy:<14} {fmt_usd(p.expected):>9} {fmt_usd(p.actual):>9} "
            f"{fmt_pct(p.error_pct):>8} {fmt_usd(p.max):>9} "
            f"{'yes' if p.max >= p.actual else 'NO':>8}  {worst_text:<30} "
            f"{fmt_usd(p.expected_after):>9} {fmt_usd(p.actual_second):>9} "
            f"{fmt_pct(p.error_after_pct):>8}{status}"
        )


def print_summary(pairs: list[PairFigures], tolerance: Decimal, floor: Decimal) -> None:
    done = [p for p in pairs if p.skipped is None]
    skipped = [p for p in pairs if p.skipped is not None]
    within = [p for p in done if p.error_pct is not None and abs(p.error_pct) <= tolerance]
    bounded = [p for p in done if p.max >= p.actual]
    history = [p for p in done if p.expected_after != p.expected]
    repeat = [p for p in done if p.actual_second != p.actual]
    print()
    print(
        f"summary: {len(done)} pairs measured, {len(skipped)} skipped; "
        f"{len(within)}/{len(done)} within ±{tolerance}% before history; "
        f"max >= actual on {len(bounded)}/{len(done)} (must be all); "
        f"plan after one run differs on {len(history)}/{len(done)}; "
        f"second run costs differently on {len(repeat)}/{len(done)}"
    )
    for p in done:
        if p not in within:
            print(f"  pair miss: {p.pipeline} × {p.policy}: {fmt_pct(p.error_pct)}"
                  f" (expected {fmt_usd(p.expected)}, actual {fmt_usd(p.actual)})")  # fmt: skip
        if p not in bounded:
            print(f"  MAX BELOW ACTUAL: {p.pipeline} × {p.policy}: max {p.max}"
                  f" < actual {p.actual}")  # fmt: skip
    for p in done:
        for s in p.steps:
            if s.actual > floor and (s.error_pct is None or abs(s.error_pct) > tolerance):
                print(f"  step miss: {p.pipeline} × {p.policy} · {s.id}: {fmt_pct(s.error_pct)}"
                      f" (expected {fmt_usd(s.expected)}, actual {fmt_usd(s.actual)})")  # fmt: skip
            if s.actual > s.max:
                print(f"  STEP MAX BELOW ACTUAL: {p.pipeline} × {p.policy} · {s.id}:"
                      f" max {s.max} < actual {s.actual}")  # fmt: skip
    for p in skipped:
        print(f"  skipped: {p.pipeline} × {p.policy}: {p.skipped}")


def write_json(path: Path, pairs: list[PairFigures], args: argparse.Namespace) -> None:
    def encode(value: Any) -> Any:
        if isinstance(value, Decimal):
            return str(value)
        raise TypeError(type(value).__name__)

    rows = []
    for p in pairs:
        row = asdict(p)
        row["error_pct"] = p.error_pct
        row["error_after_pct"] = p.error_after_pct
        for step_row, step in zip(row["steps"], p.steps, strict=True):
            step_row["error_pct"] = step.error_pct
            step_row["error_after_pct"] = step.error_after_pct
        rows.append(row)
    document = {
        "tolerance_pct": args.tolerance,
        "step_floor_usd": args.step_floor,
        "pairs": rows,
    }
    path.write_text(json.dumps(document, indent=2, default=encode) + "\n")


def pick(folder: Path, names: list[str] | None) -> list[Path]:
    files = sorted(folder.glob("*.yaml"))
    if names:
        wanted = {Path(n).stem for n in names}
        files = [f for f in files if f.stem in wanted]
        missing = wanted - {f.stem for f in files}
        if missing:
            raise SystemExit(f"not in {folder}: {', '.join(sorted(missing))}")
    return files


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--pipelines", nargs="*", help="Pipeline names (default: all).")
    parser.add_argument("--policies", nargs="*", help="Policy names (default: all).")
    parser.add_argument("--jobs", type=int, default=2, help="Pairs measured at once (2).")
    parser.add_argument("--timeout", type=float, default=300.0, help="Seconds per subprocess.")
    parser.add_argument("--tolerance", type=Decimal, default=Decimal(35), help="Target ±%%.")
    parser.add_argument(
        "--step-floor", type=Decimal, default=Decimal("0.001"), help="Steps costing over USD."
    )
    parser.add_argument("--json", type=Path, help="Write the raw figures here.")
    args = parser.parse_args()
    if not 1 <= args.jobs <= 16 or not 0 < args.timeout <= 3600:
        parser.error("--jobs must be within 1..16 and --timeout within (0, 3600]")
    pipelines = pick(ROOT / "pipelines", args.pipelines)
    policies = pick(ROOT / "policies", args.policies)
    pairs = [(pl, po) for pl in pipelines for po in policies]
    print(f"{len(pairs)} pairs ({len(pipelines)} pipelines × {len(policies)} policies), "
          f"emulator in-process at its defaults, {args.jobs} at once, "
          f"timeout {args.timeout:g} s per subprocess")  # fmt: skip
    start = time.monotonic()
    with (
        tempfile.TemporaryDirectory(prefix="llmflow-plan-accuracy-") as tmp,
        ThreadPoolExecutor(args.jobs) as pool,
    ):
        root = Path(tmp)
        results = list(
            pool.map(lambda pair: measure_pair(pair[0], pair[1], root, args.timeout), pairs)
        )
    print(f"measured in {time.monotonic() - start:.0f} s; error = (expected - actual) / actual;"
          f" exp@hist = plan after one run, actual2 = second run\n")  # fmt: skip
    print_table(results, args.step_floor)
    print_summary(results, args.tolerance, args.step_floor)
    if args.json is not None:
        write_json(args.json, results, args)
        print(f"\nraw figures: {args.json}")


if __name__ == "__main__":
    main()
