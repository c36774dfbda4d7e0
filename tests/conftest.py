"""Shared test setup: every test runs from the repository root, so paths display as
``tests/fixtures/...`` in diagnostics exactly as a user would see them."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import structlog

ROOT = Path(__file__).resolve().parent.parent
FIXTURES = ROOT / "tests" / "fixtures"


@pytest.fixture(autouse=True)
def _run_from_repo_root(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(ROOT)


@pytest.fixture(autouse=True)
def _isolated_logging() -> Iterator[None]:
    """Commands configure structlog process-wide; every test starts from the defaults."""
    yield
    structlog.reset_defaults()


@pytest.fixture
def pg_url() -> Iterator[str]:
    """A ``postgresql://`` store URL with an empty schema of its own (a real server)."""
    from tests.postgres import fresh_schema

    with fresh_schema() as url:
        yield url
