"""Planner scale benchmark: a 1,000,000-item ``for_each`` step and DAGs of 1,000 and 5,000 steps.

Prints the planner's time as a ratio to merely reading and JSON-parsing the same
dataset (targets: ratio <= 3), and peak memory as ``resource.getrusage`` max RSS of a
fresh child process per case (the whole process: interpreter + llmflow + the plan;
target < 300 MB). The 1,000-step DAG (chains and fan-ins, prompts reading upstream
outputs) is timed through the functions ``llmflow plan`` calls (``load_config`` then
``build_plan``, in a fresh process with the modules imported; target <= 1.5 s), and as
the wall time of the ``llmflow plan`` command itself (interpreter start included).
Run: ``.venv/bin/python bench/plan_scale.py [--items N] [--steps N] [--dag-steps N]
[--only dataset,dag,cli-dag]``.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import random
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

GUIDE = "Acme Cloud support guide. Severity follows the customer's stated impact. " * 400


def write_dataset(path: Path, items: int) -> int:
    rng = random.Random(7)
    words = [
        "database",
        "slow",
        "upgrade",
        "region",
        "latency",
        "billing",
        "login",
        "error",
        "timeout",
        "disk",
    ]
    with path.open("w", encoding="utf-8") as handle:
        for i in range(items):
            body = " ".join(rng.choice(words) for _ in range(rng.randint(8, 30)))
            handle.write(
                json.dumps({"id": f"T-{i}", "customer": f"c{i % 97}", "body": body}) + "\n"
            )
    return path.stat().st_size


def write_pair(folder: Path, pipeline: dict[str, Any]) -> tuple[Path, Path]:
    policy = {
        "name": "bench",
        "tiers": {"haiku": {"model": "claude-haiku-4-5"}, "sonnet": {"model": "claude-sonnet-4-6"}},
        "routes": {"classification": {"tier": "haiku", "mode": "batch", "max_tokens": 16}},
        "default_route": {"tier": "sonnet", "max_tokens": 512},
        "budget": {"per_run_usd": 100},
    }
    (folder / "guide.md").write_text(GUIDE, encoding="utf-8")
    (folder / "pipeline.yaml").write_text(json.dumps(pipeline), encoding="utf-8")
    (folder / "policy.yaml").write_text(json.dumps(policy), encoding="utf-8")
    return folder / "pipeline.yaml", folder / "policy.yaml"


def plan_in_child(pipeline: Path, policy: Path, queue: Any) -> None:
    """Load and plan once; report seconds and this process's peak RSS."""
    from llmflow.catalog import load_catalog
    from llmflow.planner import make_plan
    from llmflow.spec.loader import load_pair

    catalog = load_catalog()
    start = time.perf_counter()
    pf, pol = load_pair(pipeline, policy, is_known_model=lambda m: catalog.get(m) is not None)
    assert pol is not None
    plan = make_plan(pf, pol, catalog=catalog)
    elapsed = time.perf_counter() - start
    rss_kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    queue.put((elapsed, rss_kb, plan.total.cost_expected, plan.total.cost_max, len(plan.steps)))


def cli_plan_in_child(pipeline: Path, policy: Path, queue: Any) -> None:
    """What ``llmflow plan`` does, in process: load_config (both files, the catalog, the
    model checks), then build_plan. Modules are imported before the clock starts."""
    from llmflow.cli._config import load_config
    from llmflow.planner import build_plan
    from llmflow.spec import dag, loader, templates  # noqa: F401  (imported, not timed)

    cpu = time.process_time()
    start = time.perf_counter()
    pf, pol, catalog = load_config(pipeline, policy, {})
    loaded = time.perf_counter()
    assert pol is not None
    plan = build_plan(pf, pol, inputs={}, catalog=catalog).plan
    end = time.perf_counter()
    cpu = time.process_time() - cpu
    queue.put((end - start, loaded - start, end - loaded, cpu, plan.total.cost_expected))


def cli_seconds(pipeline: Path, policy: Path, store: Path) -> tuple[float, float]:
    """Wall and CPU (user + system) seconds of ``llmflow plan --format json`` as a
    subprocess (a fresh, absent store)."""
    exe = Path(sys.executable).parent / "llmflow"
    env = {**os.environ, "LLMFLOW_STORE": str(store)}
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    subprocess.run(
        [str(exe), "plan", str(pipeline), "--policy", str(policy), "--format", "json"],
        check=True,
        env=env,
        stdout=subprocess.DEVNULL,
    )
    wall = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = after.ru_utime - before.ru_utime + after.ru_stime - before.ru_stime
    return wall, cpu


def chain_fan_in_dag(steps: int) -> dict[str, Any]:
    """Chains (each step reads the previous one) and fan-ins (every 10th step reads up to
    8 earlier steps); every dependency is a template reference to an upstream output."""
    rng = random.Random(13)
    spec: dict[str, Any] = {}
    for i in range(steps):
        if i == 0:
            deps: list[str] = []
        elif i % 10 == 0:
            deps = sorted({f"s{rng.randrange(i)}" for _ in range(8)})
        else:
            deps = [f"s{i - 1}"]
        reads = "".join(f"{{{{ steps.{d}.output }}}}\n" for d in deps)
        spec[f"s{i}"] = {
            "task": "general",
            "prompt": f"Step {i}: combine these.\n{reads}",
            "system": ["You help.", "{{ inputs.guide }}"],
        }
    return {
        "name": "dag-1k",
        "inputs": {"guide": {"type": "text", "path": "guide.md"}},
        "steps": spec,
    }


def read_in_child(path: Path, queue: Any) -> None:
    """The reference: read every line and json.loads it."""
    start = time.perf_counter()
    count = 0
    with path.open("rb") as handle:
        for line in handle:
            if line.strip():
                json.loads(line)
                count += 1
    queue.put((time.perf_counter() - start, count))


def in_child(target: Any, *args: Any) -> Any:
    ctx = mp.get_context("spawn")
    queue = ctx.Queue()
    proc = ctx.Process(target=target, args=(*args, queue))
    proc.start()
    result = queue.get()
    proc.join()
    return result


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--items", type=int, default=1_000_000)
    parser.add_argument("--steps", type=int, default=5_000)
    parser.add_argument("--dag-steps", type=int, default=1_000)
    parser.add_argument(
        "--only", default="dataset,dag,cli-dag", help="comma-separated cases to run"
    )
    args = parser.parse_args()
    cases = set(args.only.split(","))
    with tempfile.TemporaryDirectory(prefix="llmflow-bench-") as tmp:
        folder = Path(tmp)
        if "cli-dag" in cases:
            cli_case(folder, args.dag_steps)
        if "dataset" in cases:
            dataset_case(folder, args.items)
        if "dag" in cases:
            dag_case(folder, args.steps)
    sys.stdout.flush()


def cli_case(folder: Path, steps: int) -> None:
    """The 1,000-step DAG through ``llmflow plan``: in process, then as a command."""
    cli_folder = folder / "cli-dag"
    cli_folder.mkdir()
    pipe, pol = write_pair(cli_folder, chain_fan_in_dag(steps))
    total, load_s, plan_s, cpu, expected = in_child(cli_plan_in_child, pipe, pol)
    wall, wall_cpu = cli_seconds(pipe, pol, cli_folder / "store")
    verdict = "ok" if total <= 1.5 else "over"
    print(f"dag (chains + fan-ins): {steps:,} steps")
    print(f"  llmflow plan work (load_config + build_plan): {total:.2f} s", end="")
    print(f"  (target <= 1.5 s: {verdict}; cpu {cpu:.2f} s)")
    print(f"    load_config {load_s:.2f} s, build_plan {plan_s:.2f} s")
    print(
        f"  `llmflow plan` command: {wall:.2f} s wall, {wall_cpu:.2f} s cpu"
        "  (interpreter and imports included)"
    )
    print(f"  plan: expected ${expected}")


def dataset_case(folder: Path, items: int) -> None:
    """A 1,000,000-item for_each step, against reading and parsing the dataset."""
    size = write_dataset(folder / "items.jsonl", items)
    pipeline = {
        "name": "scale",
        "inputs": {
            "items": {"type": "jsonl", "path": "items.jsonl"},
            "guide": {"type": "text", "path": "guide.md"},
        },
        "steps": {
            "classify": {
                "task": "classification",
                "for_each": "inputs.items",
                "system": ["You triage tickets.", "{{ inputs.guide }}"],
                "prompt": "Ticket {{ item.id }} from {{ item.customer }}:\n{{ item.body }}",
            }
        },
    }
    pipe, pol = write_pair(folder, pipeline)
    read_s, count = in_child(read_in_child, folder / "items.jsonl")
    plan_s, rss_kb, expected, maximum, _ = in_child(plan_in_child, pipe, pol)
    print(f"dataset: {count:,} items, {size / 1e6:.1f} MB")
    print(f"  read + json.loads every line: {read_s:.2f} s")
    print(f"  llmflow plan (load + plan):   {plan_s:.2f} s")
    print(f"  ratio planner / read+parse:   {plan_s / read_s:.2f}  (target <= 3)")
    print(
        f"  peak memory (getrusage ru_maxrss of the planning process): {rss_kb / 1024:.0f} MB"
        "  (target < 300 MB)"
    )
    print(f"  plan: expected ${expected}, max ${maximum}")


def dag_case(folder: Path, nsteps_wanted: int) -> None:
    """A random DAG of 5,000 steps (up to 3 dependencies each), load_pair + make_plan."""
    dag_folder = folder / "dag"
    dag_folder.mkdir()
    rng = random.Random(11)
    steps: dict[str, Any] = {}
    for i in range(nsteps_wanted):
        deps = sorted({f"s{rng.randrange(i)}" for _ in range(rng.randint(0, 3))}) if i else []
        prompt = f"Step {i}. " + "".join(f"{{{{ steps.{d}.output }}}} " for d in deps)
        steps[f"s{i}"] = {
            "task": "general",
            "needs": deps,
            "prompt": prompt,
            "system": ["You help.", "{{ inputs.guide }}"],
        }
    dag = {
        "name": "dag",
        "inputs": {"guide": {"type": "text", "path": "guide.md"}},
        "steps": steps,
    }
    pipe, pol = write_pair(dag_folder, dag)
    dag_s, dag_rss, expected, maximum, nsteps = in_child(plan_in_child, pipe, pol)
    print(f"dag: {nsteps:,} steps")
    print(f"  llmflow plan (load + plan): {dag_s:.2f} s")
    print(f"  peak memory (getrusage ru_maxrss of the planning process): {dag_rss / 1024:.0f} MB")
    print(f"  plan: expected ${expected}, max ${maximum}")


if __name__ == "__main__":
    main()
