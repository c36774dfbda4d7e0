"""``llmflow run``: execute a pipeline under a policy, tracked, within budget, resumable."""

from __future__ import annotations

import os
import shlex
import shutil
import signal
import sys
from dataclasses import dataclass
from decimal import ROUND_CEILING, Decimal
from pathlib import Path
from typing import TYPE_CHECKING

import typer

from llmflow.cli._app import app
from llmflow.cli._errors import reported_errors, stderr
from llmflow.cli._inputs import Backend, option_error, parse_budget, parse_inputs
from llmflow.cli._logging import LogFormat, configure_logging
from llmflow.cli._store import DEFAULT_STORE, open_store, store_option, without_password

if TYPE_CHECKING:
    from rich.console import Console

    from llmflow.executor.run import RunOutcome


# Typer keeps single line breaks of a help paragraph, so each paragraph is one line here.
_HELP = (
    "Execute a pipeline; every token is recorded and the budget is never overspent.\n\n"
    "Exit codes: 0 all succeeded · 1 some items failed (resumable) · 2 invalid"
    " configuration or input · 3 stopped by the budget (resumable) · 4 backend unusable"
    " (no key, auth refused, unreachable) · 75 pending: --detach left batches running"
    " (run the same --run-id again to collect) · 130 interrupted (resumable).\n\n"
    "Re-run with the same --run-id to resume: finished requests are not sent again."
    " A run that does not succeed prints the command that resumes it. Examples:\n\n"
    "llmflow run pipelines/support-triage.yaml --policy policies/default.yaml"
    " --backend emulator\n\n"
    "llmflow run pipelines/nightly-doc-summaries.yaml -p policies/overnight-etl.yaml"
    " --run-id nightly-2026-11-24 --store postgresql://llmflow@db/llmflow --log-format json"
)


@app.command("run", help=_HELP)
def run(
    pipeline: Path = typer.Argument(..., help="Pipeline YAML file."),
    policy: Path = typer.Option(..., "--policy", "-p", help="Policy YAML file."),
    backend: Backend = typer.Option(
        Backend.anthropic,
        "--backend",
        help="anthropic: the API with ANTHROPIC_API_KEY (and ANTHROPIC_BASE_URL if set);"
        " emulator: the local emulator in-process, no key, nothing billed.",
    ),
    budget: str | None = typer.Option(
        None,
        "--budget",
        metavar="USD",
        help="Per-run budget in USD for this run, e.g. 2.50 (replaces the policy's"
        " budget.per_run_usd).",
    ),
    run_id: str | None = typer.Option(
        None,
        "--run-id",
        metavar="ID",
        help="Run id (default: a new one from the time); an existing id resumes that run.",
    ),
    store_spec: str = store_option(
        "Run store: a directory (SQLite: llmflow.db and runs/<run_id>/; --state-dir is an"
        " alias) or a postgresql:// URL shared by every process and machine that uses it"
        " (one budget; several workers may run one --run-id). Default: $LLMFLOW_STORE,"
        " else .llmflow."
    ),
    log_format: LogFormat = typer.Option(
        LogFormat.console,
        "--log-format",
        help="console: progress for people; json: one JSON event per line on stderr"
        " (for schedulers).",
    ),
    detach: bool = typer.Option(
        False,
        "--detach",
        help="Submit every batch chunk, record the batch ids and exit 75 (pending) instead"
        " of waiting for them; run the same --run-id again to collect (it polls once, then"
        " finishes or exits 75 again).",
    ),
    inputs: list[str] = typer.Option(
        [],
        "--input",
        "-i",
        metavar="KEY=VALUE",
        help="Value of a scalar input of the pipeline, e.g. week=2026-W48 (repeatable).",
    ),
    emulator_latency_ms: float = typer.Option(0.0, "--emulator-latency-ms", hidden=True),
    emulator_faults: str = typer.Option("", "--emulator-faults", hidden=True),
    emulator_batch_seconds: float = typer.Option(0.0, "--emulator-batch-seconds", hidden=True),
) -> None:
    """Execute a pipeline; every token is recorded and the budget is never overspent."""
    import asyncio

    from rich.console import Console

    from llmflow.cli._backend import client_for
    from llmflow.cli._config import load_config
    from llmflow.cli._progress import ProgressDisplay
    from llmflow.emulator.config import EmulatorConfig, parse_faults
    from llmflow.executor.run import RunRequest, execute
    from llmflow.planner import build_plan_async
    from llmflow.tracker import new_run_id

    configure_logging(log_format)
    console = Console(highlight=False, soft_wrap=True)
    with reported_errors():
        given = parse_inputs(inputs)
        limit = parse_budget(budget)
        pipeline_file, policy_file, catalog = load_config(pipeline, policy, given)
        assert policy_file is not None
        try:
            emulator = EmulatorConfig(
                latency_ms=emulator_latency_ms, batch_seconds=emulator_batch_seconds,
                faults=parse_faults(emulator_faults), retry_after_seconds=0,
            )  # fmt: skip
        except ValueError as exc:
            raise option_error("--emulator-faults", str(exc)) from None
        client = client_for(backend.value, emulator=emulator)
        the_run_id = run_id or new_run_id()
        store = open_store(store_spec)
        shown_limit = limit if limit is not None else policy_file.policy.budget.per_run_usd

        async def main() -> RunOutcome:
            plan = await build_plan_async(pipeline_file, policy_file, inputs=given, catalog=catalog)
            request = RunRequest(
                pipeline_file, policy_file, plan, catalog, client, store, the_run_id, given,
                budget_usd=limit, detach=detach,
            )  # fmt: skip
            interrupt = asyncio.Event()
            loop = asyncio.get_running_loop()
            loop.add_signal_handler(signal.SIGINT, interrupt.set)
            loop.add_signal_handler(signal.SIGTERM, interrupt.set)
            try:
                quiet = log_format is LogFormat.json  # the JSON events say it all
                with ProgressDisplay(console, shown_limit, quiet=quiet) as display:
                    return await execute(request, display, interrupt)
            finally:
                loop.remove_signal_handler(signal.SIGINT)
                loop.remove_signal_handler(signal.SIGTERM)
                await client.close()

        try:
            outcome = asyncio.run(main())
        finally:
            store.close()
    resume = ResumeArgs(
        pipeline, policy, backend.value, the_run_id, store_spec, inputs, budget=budget,
        log_format=log_format.value, detach=detach,
    )  # fmt: skip
    _finish(console, outcome, resume)


def _finish(console: Console, outcome: RunOutcome, resume: ResumeArgs) -> None:
    from llmflow.catalog import format_usd

    total = outcome.summary.total
    baseline = format_usd(total.cost_baseline) if total.cost_baseline is not None else "n/a"
    console.print(
        f"run {outcome.run_id}: {outcome.status} · cost ${format_usd(total.cost)}"
        f" (plan ${format_usd(total.plan_cost_expected or Decimal(0))}, baseline ${baseline},"
        f" {_savings(total.savings_pct)}) · cache hit {float(total.cache_hit_ratio):.1%}",
        markup=False,
    )
    for alert in outcome.summary.budget.alerts:
        console.print(f"alert: {alert.message}", markup=False)
    console.print(f"summary: {outcome.summary_path}", markup=False)
    if outcome.error is not None:
        stderr.print(f"error: {outcome.error}", markup=False)
    if outcome.status == "budget_stopped":
        _explain_budget_stop(outcome, resume)
    if outcome.status == "pending":
        stderr.print(f"batches are still running; collect with: {resume.command()}", markup=False)
    if outcome.status in ("partial", "budget_stopped", "interrupted", "failed"):
        when = f" ({resume.when})" if resume.when else ""
        stderr.print(f"resume with{when}: {resume.command()}", markup=False)
        if without_password(resume.store) != resume.store:
            stderr.print(
                "(the store's password is left out: set PGPASSWORD, or LLMFLOW_STORE)",
                markup=False,
            )
    raise typer.Exit(outcome.exit_code)


def _savings(pct: Decimal | None) -> str:
    if pct is None:
        return "saved n/a"
    if pct < 0:
        return f"{-pct}% over baseline"
    return f"saved {pct}%"


def _explain_budget_stop(outcome: RunOutcome, resume: ResumeArgs) -> None:
    """Say which limit stopped the run and give a resume command that can finish it."""
    from llmflow.catalog import format_usd

    summary = outcome.summary
    refusal = outcome.budget_error
    spent = format_usd(summary.budget.spent)
    if refusal is None:
        stderr.print(f"stopped by the budget after ${spent}", markup=False)
        return
    stderr.print(f"stopped by the budget after ${spent} of this run: {refusal}", markup=False)
    if refusal.limit_name == "organisation":
        resume.when = "once the organisation's spend cap is raised or its month resets"
        return
    if refusal.resets_at is not None:
        resume.when = (
            f"after {refusal.resets_at:%Y-%m-%d %H:%M} UTC, when the {refusal.limit_name}"
            f" limit resets, or once {refusal.key} is raised in {resume.policy}"
        )
        return
    plan_max = summary.total.plan_cost_max
    needed = refusal.spent + refusal.reserved + refusal.needed
    if plan_max is None or plan_max < needed:
        plan_max = needed
    # The plan's max is a true upper bound of the whole run: a per-run budget of that
    # much lets the resumed run finish (period budgets still apply).
    resume.budget = format_usd(plan_max.quantize(Decimal("0.01"), rounding=ROUND_CEILING))
    stderr.print(
        f"the plan's max cost is ${format_usd(plan_max)}: the command below resumes with"
        f" --budget {resume.budget}; lower it to spend less",
        markup=False,
    )


@dataclass
class ResumeArgs:
    """The options of this ``llmflow run`` that a resume must repeat."""

    pipeline: Path
    policy: Path
    backend: str
    run_id: str
    store: str
    inputs: list[str]
    budget: str | None = None
    log_format: str = LogFormat.console.value
    when: str | None = None  # a condition the resume needs (a period reset, say)
    detach: bool = False

    def command(self) -> str:
        parts = [_program(), "run", str(self.pipeline), "--policy", str(self.policy)]
        parts += ["--backend", self.backend, "--run-id", self.run_id]
        if self.store != DEFAULT_STORE and self.store != os.environ.get("LLMFLOW_STORE"):
            parts += ["--store", without_password(self.store)]
        for item in self.inputs:
            parts += ["--input", item]
        if self.budget is not None:
            parts += ["--budget", self.budget]
        if self.log_format != LogFormat.console.value:
            parts += ["--log-format", self.log_format]
        if self.detach:
            parts += ["--detach"]
        return shlex.join(parts)


def _program() -> str:
    """How the user can call llmflow again from this directory.

    ``llmflow`` when it is on PATH; ``uv run llmflow`` under ``uv run``; else the path
    this process was started as (e.g. ``.venv/bin/llmflow``).
    """
    argv0 = sys.argv[0] if sys.argv else ""
    if Path(argv0).name != "llmflow":  # started some other way (python -m, tests)
        return "llmflow"
    if os.environ.get("UV_RUN_RECURSION_DEPTH"):
        return "uv run llmflow"
    on_path = shutil.which("llmflow")
    if on_path is not None and Path(on_path).resolve() == Path(argv0).resolve():
        return "llmflow"
    try:
        return str(Path(argv0).resolve().relative_to(Path.cwd()))
    except ValueError:
        return str(Path(argv0).resolve())
