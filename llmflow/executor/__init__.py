"""The executor: runs a plan wave by wave through the SDK, tracked and within budget.

:func:`execute` with a :class:`RunRequest` is what ``llmflow run`` calls; the result is a
:class:`RunOutcome` (final status, exit code, summary).
"""

from llmflow.executor.run import EXIT_CODES, RunOutcome, RunRequest, execute

__all__ = ["EXIT_CODES", "RunOutcome", "RunRequest", "execute"]
