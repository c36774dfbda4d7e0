"""Warnings (cache hit ratio, max_tokens, batch cache shortfall) and report settings."""

from __future__ import annotations

from decimal import Decimal
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

from llmflow.catalog import TokenUsage, load_catalog
from llmflow.reporting import build_report, load_settings
from llmflow.reporting.warnings import batch_shortfall, low_hit_ratio, max_tokens_stops
from llmflow.tracker import RunStore
from llmflow.tracker.store import UsageGroup

POLICY = "tests/fixtures/policies/basic.yaml"


def test_the_triage_run_warns_about_each_problem_step(
    store: RunStore, clock: Any, builders: ModuleType
) -> None:
    summary = builders.triage_run(store, clock)
    report = build_report(store, summary.run_id, load_settings(POLICY, load_catalog()))
    kinds = [(w.kind, w.step_id) for w in report.warnings]
    assert kinds == [
        ("low_cache_hit_ratio", "classify"),
        ("batch_cache_shortfall", "classify"),
        ("low_cache_hit_ratio", "extract"),
        ("max_tokens", "extract"),
    ]  # digest: one request cannot read its own cache; no warning
    shortfall = report.warnings[1].message
    assert "5,000 cache_read tokens vs ~25,000 planned" in shortfall
    assert "1 of 10 batch requests hit, plan expected 5" in shortfall
    assert "nothing was cached" in report.warnings[2].message
    assert "1 of 4 outputs (25.0%) stopped at max_tokens" in report.warnings[3].message


def test_a_lower_threshold_silences_the_hit_ratio_warning(
    store: RunStore, clock: Any, builders: ModuleType
) -> None:
    summary = builders.triage_run(store, clock)
    settings = load_settings(POLICY, load_catalog(), min_hit_ratio=Decimal("0.05"))
    kinds = [(w.kind, w.step_id) for w in build_report(store, summary.run_id, settings).warnings]
    assert ("low_cache_hit_ratio", "classify") not in kinds  # 9.9% >= 5%
    assert ("low_cache_hit_ratio", "extract") in kinds  # 0%


def test_low_hit_ratio_boundaries() -> None:
    usage = TokenUsage(input=70, cache_read=30)  # exactly 30%
    assert low_hit_ratio("s", usage, 5, Decimal("0.3")) is None
    assert low_hit_ratio("s", TokenUsage(input=71, cache_read=29), 5, Decimal("0.3")) is not None
    assert low_hit_ratio("s", TokenUsage(input=100), 1, Decimal("0.3")) is None  # one request
    assert low_hit_ratio("s", TokenUsage(output=5), 3, Decimal("0.3")) is None  # no input
    written = low_hit_ratio("s", TokenUsage(input=1, cache_write_5m=99), 3, Decimal("0.3"))
    assert written is not None and "written but never read" in written.message


def test_max_tokens_warns_from_ten_percent() -> None:
    assert max_tokens_stops("s", 1, 10) is not None
    assert max_tokens_stops("s", 9, 91) is None  # 9.9%
    assert max_tokens_stops("s", 0, 10) is None
    assert max_tokens_stops("s", 0, 0) is None


def _group(n: int, reading: int, writing: int, mode: str = "batch") -> UsageGroup:
    usage = TokenUsage(input=n, cache_read=1000 * reading, cache_write_5m=1000 * writing)
    return UsageGroup("s", "haiku", "m", mode, n, reading, writing, usage, Decimal("0.01"))  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("n", "reading", "writing", "rate", "warns"),
    [
        (10, 1, 9, "0.5", True),  # planned 5, read 1
        (10, 3, 7, "0.5", False),  # 3 >= 2.5
        (10, 2, 8, "0.5", True),  # 2 < 2.5
        (10, 0, 0, "0.5", False),  # no cache at all: planned without one
        (10, 0, 10, "0", False),  # the policy expected no hits
        (1, 0, 1, "0.5", False),  # a lone request cannot hit
        (2, 0, 2, "1", True),  # planned min(n - 1, 2) = 1
    ],
)
def test_batch_shortfall(n: int, reading: int, writing: int, rate: str, warns: bool) -> None:
    found = batch_shortfall("s", [_group(n, reading, writing)], Decimal(rate))
    assert (found is not None) is warns


def test_sync_groups_do_not_count_for_the_batch_shortfall() -> None:
    assert batch_shortfall("s", [_group(10, 0, 10, mode="sync")], Decimal("0.5")) is None


def test_settings_from_the_policy(tmp_path: Path) -> None:
    policy = tmp_path / "p.yaml"
    policy.write_text(
        "name: p\n"
        "tiers:\n  cheap: {model: claude-haiku-4-5, input_usd_per_mtok: 2}\n"
        "default_route: {tier: cheap}\n"
        "cache: {min_hit_ratio_warning: 0.55, batch_hit_rate: 0.8}\n"
        "baseline_tier: cheap\n"
    )
    settings = load_settings(str(policy), load_catalog())
    assert settings.min_hit_ratio == Decimal("0.55")
    assert settings.batch_hit_rate == Decimal("0.8")
    assert settings.baseline is not None
    assert settings.baseline.id == "claude-haiku-4-5"
    assert settings.baseline.input_usd_per_mtok == Decimal(2)  # the tier's override
    assert settings.notes == ()
    explicit = load_settings(str(policy), load_catalog(), min_hit_ratio=Decimal("0.1"))
    assert explicit.min_hit_ratio == Decimal("0.1")


@pytest.mark.parametrize("path", [None, "no/such/policy.yaml", "README.md"])
def test_settings_default_when_the_policy_is_gone_or_broken(path: str | None) -> None:
    settings = load_settings(path, load_catalog())
    assert settings.min_hit_ratio == Decimal("0.30")
    assert settings.batch_hit_rate == Decimal("0.5")
    assert settings.baseline is not None and settings.baseline.id == "claude-sonnet-4-6"
    assert len(settings.notes) == 1
