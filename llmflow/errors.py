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
    ├── BudgetExceeded           a dispatch would overspend the budget (exit 3)
    ├── RequestFailed            one request failed for good (the run goes on; exit 1 at the end)
    └── RunStoreError            the run store is missing, locked or of another run (exit 2)
"""

from __future__ import annotations

from dataclasses import dataclass
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
    """Dispatching a request would spend past the budget; nothing was sent."""

    exit_code = 3

    def __init__(self, limit: Decimal, spent: Decimal, reserved: Decimal, needed: Decimal) -> None:
        self.limit, self.spent, self.reserved, self.needed = limit, spent, reserved, needed
        super().__init__(
            f"budget ${limit} would be exceeded: spent ${spent} + reserved ${reserved}"
            f" + this request's upper bound ${needed}"
        )


class RequestFailed(LlmflowError):
    """A request failed for good after its retries; the run records it and goes on."""

    exit_code = 1


class RunStoreError(LlmflowError):
    """The run store cannot be opened, or a run id belongs to another pipeline."""

    exit_code = 2
