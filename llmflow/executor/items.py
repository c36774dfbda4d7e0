"""The items of a step: one request per dataset row, per upstream output, or just one.

Datasets are streamed; nothing here holds a whole dataset in memory.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from typing import Any

from llmflow.spec.datasets import count_items, iter_items
from llmflow.spec.loader import PipelineFile
from llmflow.spec.pipeline import DatasetInput


def step_items(
    pipeline_file: PipelineFile, step_id: str, upstream: Mapping[str, Sequence[Any]]
) -> Iterator[tuple[int, Any]]:
    """``(item_index, item)`` pairs; ``item`` is None for a single-request step."""
    step = pipeline_file.pipeline.steps[step_id]
    source = step.for_each_source
    if source is None:
        yield 0, None
        return
    kind, name = source
    if kind == "steps":
        yield from enumerate(upstream[name])
        return
    spec = pipeline_file.pipeline.inputs[name]
    assert isinstance(spec, DatasetInput)
    yield from enumerate(iter_items(pipeline_file.input_path(name), spec.type, spec.limit))


def step_item_count(
    pipeline_file: PipelineFile, step_id: str, upstream: Mapping[str, Sequence[Any]]
) -> int:
    """How many requests the step sends (counted by streaming)."""
    step = pipeline_file.pipeline.steps[step_id]
    source = step.for_each_source
    if source is None:
        return 1
    kind, name = source
    if kind == "steps":
        return len(upstream[name])
    spec = pipeline_file.pipeline.inputs[name]
    assert isinstance(spec, DatasetInput)
    return count_items(pipeline_file.input_path(name), spec.type, spec.limit)
