"""Helpers: write a small pipeline/policy pair to a temp dir and load it."""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import pytest

from llmflow.catalog import load_catalog
from llmflow.spec.loader import PipelineFile, PolicyFile, load_pair

FIXTURES = Path(__file__).parents[1] / "fixtures" / "planner"

PairMaker = Callable[..., tuple[PipelineFile, PolicyFile]]


@pytest.fixture
def make_pair(tmp_path: Path) -> PairMaker:
    """Write pipeline and policy dicts (plus data files) and load them with load_pair."""
    counter = iter(range(1_000_000))

    def make(
        pipeline: dict[str, Any],
        policy: dict[str, Any],
        *,
        files: dict[str, str] | None = None,
        items: Sequence[dict[str, Any]] | None = None,
    ) -> tuple[PipelineFile, PolicyFile]:
        folder = tmp_path / f"pair{next(counter)}"
        folder.mkdir()
        for name, text in (files or {}).items():
            (folder / name).write_text(text, encoding="utf-8")
        if items is not None:
            lines = "".join(json.dumps(i) + "\n" for i in items)
            (folder / "items.jsonl").write_text(lines, encoding="utf-8")
        (folder / "pipeline.yaml").write_text(json.dumps(pipeline), encoding="utf-8")
        (folder / "policy.yaml").write_text(json.dumps(policy), encoding="utf-8")
        catalog = load_catalog()
        pf, pol = load_pair(
            folder / "pipeline.yaml",
            folder / "policy.yaml",
            is_known_model=lambda m: catalog.get(m) is not None,
            inputs={},
        )
        assert pol is not None
        return pf, pol

    return make
