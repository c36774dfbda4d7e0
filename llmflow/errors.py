"""The one exception tree of llmflow.

Every error llmflow raises on purpose derives from :class:`LlmflowError`; the CLI
maps each branch to an exit code and prints it without a
traceback.

    LlmflowError
    ├── ConfigError              bad pipeline, policy or input (exit 2)
    │     carries every Diagnostic of a file at once (file:line:col, dotted key, message)
    ├── DatasetError             a dataset cannot be read or a line is malformed (exit 2)
    ├── PlanError                the pair is valid but cannot be planned (exit 2)
    ├── BackendError             the API cannot be used at all (exit 4)
    │   ├── BackendAuthError     no key, or the key was refused
    │   └── BackendUnreachable   connection refused, DNS, TLS
    ├── BudgetExceeded           a dispatch would overspend a budget limit (exit 3)
    │   └── OrganisationSpendCap the API's own spend cap refused a request
    ├── RequestFailed            one request failed for good (the run goes on; exit 1 at the end)
    └── RunStoreError            the run store is missing, locked or of another run (exit 2)
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal


@dataclass(frozen=True, slots=True)
class Diagnostic:
    """One problem found in a configuration file, with its position.

    ``line`` and ``col`` are 1-based, as editors show them; ``key`` is the dotted
    path of the offending node (``steps.classify.task``).
    """

    file: str
    line: int
    col: int
    key: str
    message: str

    def __str__(self) -> str:
        where = f"{self.file}:{self.line}:{self.col}"
        return f"{where}: {self.key}: {self.message}" if self.key else f"{where}: {self.message}"


class LlmflowError(Exception):
    """Base class of every error llmflow raises on purpose."""

    exit_code: int = 2


class ConfigError(LlmflowError):
    """One or more configuration files are invalid; holds every diagnostic found."""

    exit_code = 2

    def __init__(self, diagnostics: list[Diagnostic]) -> None:
        self.diagnostics = sorted(diagnostics, key=lambda d: (d.file, d.line, d.col, d.key))
        super().__init__("\n".join(str(d) for d in self.diagnostics))


class DatasetError(LlmflowError):
    """A dataset could not be read, or one of its records is malformed."""

    exit_code = 2


class PlanError(LlmflowError):
    """The pipeline and policy are each valid but cannot be planned together."""

    exit_code = 2


class BackendError(LlmflowError):
    """The backend cannot be used at all (no key, auth refused, unreachable)."""

    exit_code = 4


class BackendAuthError(BackendError):
    """No API key was found, or the API refused it."""


class BackendUnreachable(BackendError):
    """The API could not be reached."""


class BudgetExceeded(LlmflowError):
    """Dispatching a request would spend past a budget limit; nothing was sent.

    ``limit_name`` is ``run``, ``day``, ``month`` or ``day[team=ml]``; ``key`` what
    sets it (``budget.per_day_usd``, ``--budget``); ``spent`` includes money possibly
    billed but unrecorded; ``reserved`` is held by requests in flight (of every process
    sharing the store); ``resets_at`` is when a day or month limit starts afresh.
    """

    exit_code = 3

    def __init__(
        self,
        limit: Decimal,
        spent: Decimal,
        reserved: Decimal,
        needed: Decimal,
        *,
        limit_name: str = "run",
        key: str | None = None,
        resets_at: datetime | None = None,
    ) -> None:
        self.limit, self.spent, self.reserved, self.needed = limit, spent, reserved, needed
        self.limit_name, self.key, self.resets_at = limit_name, key, resets_at
        super().__init__(self.describe())

    def describe(self) -> str:
        """One line: which limit, what it holds, what was asked, and the remedy."""
        period = self.limit_name.split("[", 1)[0]
        scope = self.limit_name[len(period) :]
        what = {"run": "per-run", "day": "per-day", "month": "per-month"}.get(period, period)
        name = f"the {what} budget{' of ' + scope.strip('[]') if scope else ''}"
        setting = f" ({self.key} = ${self.limit})" if self.key else f" (${self.limit})"
        text = (
            f"{name}{setting} would be passed: spent ${self.spent} and reserved"
            f" ${self.reserved} in flight, and the next request needs up to ${self.needed}"
        )
        remedy = f"raise {self.key}" if self.key else "raise the limit"
        if self.resets_at is not None:
            remedy += f", or run again after {self.resets_at:%Y-%m-%d %H:%M} UTC when it resets"
        return f"{text}; {remedy}"


class OrganisationSpendCap(BudgetExceeded):
    """The API refused a request: the organisation's monthly spend cap is reached."""

    def __init__(self, message: str) -> None:
        LlmflowError.__init__(self, message)
        self.limit = self.spent = self.reserved = self.needed = Decimal(0)
        self.limit_name, self.key, self.resets_at = "organisation", None, None
        self._message = message

    def describe(self) -> str:
        return self._message


class RequestFailed(LlmflowError):
    """A request failed for good after its retries; the run records it and goes on."""

    exit_code = 1


class RunStoreError(LlmflowError):
    """The run store cannot be opened, or a run id belongs to another pipeline."""

    exit_code = 2
