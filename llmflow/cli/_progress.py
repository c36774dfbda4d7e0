"""What ``llmflow run`` shows while it works: a live display on a TTY, plain lines otherwise."""

from __future__ import annotations

from decimal import Decimal

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TaskID, TextColumn

from llmflow.catalog import format_usd
from llmflow.tracker import Tracker


def _money(amount: Decimal) -> str:
    return f"${amount.quantize(Decimal('0.0001'))}"


class ProgressDisplay:
    """Per step: done/total, spend vs budget, cache hit ratio."""

    def __init__(self, console: Console, budget: Decimal | None, *, quiet: bool = False) -> None:
        self.console = console
        self.budget = budget
        self.live = console.is_terminal and not quiet
        self.quiet = quiet
        self.tracker: Tracker | None = None
        self.tasks: dict[str, TaskID] = {}
        self.budget_task: TaskID | None = None
        self.steps: list[str] = []
        self.progress = Progress(
            TextColumn("{task.description:<16}"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("{task.fields[spend]:>10}"),
            TextColumn("cache {task.fields[hit]:>4}"),
            console=console,
            transient=False,
        )

    def __enter__(self) -> ProgressDisplay:
        if self.live:
            self.progress.start()
        return self

    def __exit__(self, *exc: object) -> None:
        if self.live:
            self.progress.stop()

    def run_started(self, tracker: Tracker) -> None:
        self.tracker = tracker
        if not self.live and not self.quiet:
            state = "resuming" if tracker.resumed else "starting"
            self.console.print(f"run {tracker.run_id}: {state}", markup=False, highlight=False)

    def step_started(self, step_id: str, total: int) -> None:
        self.steps.append(step_id)
        if self.live:
            self.tasks[step_id] = self.progress.add_task(step_id, total=total, spend="", hit="")
            self._update(step_id)
        elif not self.quiet:
            self.console.print(f"step {step_id}: {total} request(s)", markup=False, highlight=False)

    def request_done(self, step_id: str) -> None:
        if self.live:
            self._update(step_id)

    def step_finished(self, step_id: str) -> None:
        if self.live:
            self._update(step_id)
            return
        if self.tracker is None or self.quiet:
            return
        p = self.tracker.step_progress(step_id)
        line = (
            f"step {step_id}: {p.succeeded}/{p.total} succeeded, {p.failed} failed,"
            f" {p.skipped} skipped, {_money(p.cost)}, cache hit {p.cache_hit_ratio:.1%}"
            f"  (run spend {self._spend()})"
        )
        self.console.print(line, markup=False, highlight=False)

    def _spend(self) -> str:
        spent = Decimal(0)
        if self.tracker is not None:  # progress is seeded from the store: earlier sessions count
            spent = sum((self.tracker.step_progress(s).cost for s in self.steps), Decimal(0))
        limit = f" of ${format_usd(self.budget)}" if self.budget is not None else ""
        return f"{_money(spent)}{limit}"

    def _update(self, step_id: str) -> None:
        task = self.tasks.get(step_id)
        if task is None or self.tracker is None:
            return
        p = self.tracker.step_progress(step_id)
        self.progress.update(
            task, completed=p.done, spend=_money(p.cost), hit=f"{p.cache_hit_ratio:.0%}"
        )
        if self.budget_task is None:
            self.budget_task = self.progress.add_task("run spend", total=None, spend="", hit="")
        self.progress.update(self.budget_task, spend=self._spend())
