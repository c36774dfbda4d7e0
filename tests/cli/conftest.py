"""Shared by the CLI tests: the run builders of tests/reporting (real Tracker runs)."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType


def load_builders() -> ModuleType:
    """tests/reporting/builders.py, loaded once."""
    name = "reporting_builders"
    if name not in sys.modules:
        path = Path(__file__).resolve().parents[1] / "reporting" / "builders.py"
        spec = importlib.util.spec_from_file_location(name, path)
        assert spec is not None and spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        spec.loader.exec_module(module)
    return sys.modules[name]
