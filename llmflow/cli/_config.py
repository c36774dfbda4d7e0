"""Loading a pipeline and policy for a command, checked against the shipped catalog.

Every step is also checked against the model it resolves to (sampling, thinking,
effort, fast mode, data residency, output schema, limits, lifecycle): errors refuse the
configuration with the loader's own, warnings (a deprecated model) go to stderr.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from llmflow.catalog import Catalog
    from llmflow.errors import Diagnostic
    from llmflow.spec.loader import PipelineFile, PolicyFile

#: Today's date for lifecycle and fast-mode rules (tests pin it).
clock: Callable[[], dt.date] = dt.date.today


def load_config(
    pipeline: Path, policy: Path | None, inputs: Mapping[str, str] | None = None
) -> tuple[PipelineFile, PolicyFile | None, Catalog]:
    """Both files and the catalog; raises ConfigError with every diagnostic of both.

    ``inputs`` (``--input`` values) are checked against the scalar inputs when given.
    Warnings are printed to stderr as ``warning: file:line:col: key: message``.
    """
    from llmflow.catalog import load_catalog
    from llmflow.cli._errors import stderr
    from llmflow.planner.model_checks import check_models
    from llmflow.spec.loader import load_pair

    catalog = load_catalog()
    warnings: list[Diagnostic] = []

    def check_pair(pipeline_file: PipelineFile, policy_file: PolicyFile) -> list[Diagnostic]:
        found = check_models(pipeline_file, policy_file, catalog, today=clock(), inputs=inputs)
        warnings.extend(found.warnings)
        return found.errors

    try:
        pipeline_file, policy_file = load_pair(
            pipeline,
            policy,
            is_known_model=lambda model: catalog.get(model) is not None,
            model_ids=catalog.ids(),
            inputs=inputs,
            check_pair=check_pair,
        )
    finally:
        for warning in sorted(warnings, key=lambda d: (d.file, d.line, d.col, d.key)):
            stderr.print(f"warning: {warning}", markup=False)
    return pipeline_file, policy_file, catalog
