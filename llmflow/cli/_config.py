"""Loading a pipeline and policy for a command, checked against the shipped catalog."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from llmflow.catalog import Catalog
    from llmflow.spec.loader import PipelineFile, PolicyFile


def load_config(
    pipeline: Path, policy: Path | None, inputs: Mapping[str, str] | None = None
) -> tuple[PipelineFile, PolicyFile | None, Catalog]:
    """Both files and the catalog; raises ConfigError with every diagnostic of both.

    ``inputs`` (``--input`` values) are checked against the scalar inputs when given.
    """
    from llmflow.catalog import load_catalog
    from llmflow.spec.loader import load_pair

    catalog = load_catalog()
    pipeline_file, policy_file = load_pair(
        pipeline,
        policy,
        is_known_model=lambda model: catalog.get(model) is not None,
        model_ids=catalog.ids(),
        inputs=inputs,
    )
    return pipeline_file, policy_file, catalog
