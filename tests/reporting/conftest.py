"""Fixtures for the reporting tests: a run store with a settable clock, on SQLite (a tmp
dir) and on a real PostgreSQL (the report's SQL is the same on both)."""

from __future__ import annotations

import importlib.util
import sys
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType

import pytest

from llmflow.tracker import RunStore


def _builders() -> ModuleType:
    name = "reporting_builders"
    if name not in sys.modules:
        spec = importlib.util.spec_from_file_location(name, Path(__file__).with_name("builders.py"))
        assert spec is not None and spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        spec.loader.exec_module(module)
    return sys.modules[name]


@pytest.fixture
def builders() -> ModuleType:
    """tests/reporting/builders.py (runs made by driving the real Tracker)."""
    return _builders()


@pytest.fixture
def clock(builders: ModuleType) -> object:
    return builders.Clock()


@pytest.fixture(params=["sqlite", "postgresql"])
def store(request: pytest.FixtureRequest, tmp_path: Path, clock: object) -> Iterator[RunStore]:
    if request.param == "sqlite":
        s = RunStore.open(tmp_path / "state", clock=clock)  # type: ignore[arg-type]
        yield s
        s.close()
        return
    from tests.postgres import fresh_schema

    with fresh_schema() as url:
        s = RunStore.open(url, clock=clock, runs_dir=tmp_path / "state")  # type: ignore[arg-type]
        yield s
        s.close()
