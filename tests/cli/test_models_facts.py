"""`llmflow models --format json` against the published facts of late November 2026,
written out here by hand (not read from the catalog), model by model."""

from __future__ import annotations

import json
from decimal import Decimal
from typing import Any

import pytest
from typer.testing import CliRunner

from llmflow.cli import app

# id: status, context, max output, input, output, 5m write, 1h write, read, min cache, tokenizer
FACTS: dict[str, tuple[Any, ...]] = {
    "claude-haiku-5-5": ("latest", 1_000_000, 128_000, "0.10", "0.50", "0.125", "0.20", "0.01", 512, "new"),
    "claude-sonnet-5-5": ("latest", 1_000_000, 128_000, "2", "10", "2.50", "4", "0.20", 1024, "new"),
    "claude-opus-5-5": ("latest", 1_000_000, 128_000, "4", "20", "5", "8", "0.20", 512, "new"),
    "claude-fable-5-2": ("latest", 1_000_000, 128_000, "8", "40", "10", "16", "0.20", 512, "new"),
    "claude-fable-5-1": ("active", 1_000_000, 128_000, "10", "50", "12.50", "20", "0.25", 512, "new"),
    "claude-fable-5": ("legacy", 1_000_000, 128_000, "10", "50", "12.50", "20", "1.00", 512, "new"),
    "claude-opus-5": ("legacy", 1_000_000, 128_000, "5", "25", "6.25", "10", "0.50", 512, "new"),
    "claude-sonnet-5": ("legacy", 1_000_000, 128_000, "2", "10", "2.50", "4", "0.20", 1024, "new"),
    "claude-opus-4-8": ("legacy", 1_000_000, 128_000, "5", "25", "6.25", "10", "0.50", 1024, "new"),
    "claude-opus-4-7": ("active", 1_000_000, 128_000, "5", "25", "6.25", "10", "0.50", 2048, "new"),
    "claude-opus-4-6": ("legacy", 1_000_000, 128_000, "5", "25", "6.25", "10", "0.50", 4096, "old"),
    "claude-sonnet-4-6": ("legacy", 1_000_000, 128_000, "3", "15", "3.75", "6", "0.30", 2048, "old"),
    "claude-opus-4-5": ("legacy", 200_000, 64_000, "5", "25", "6.25", "10", "0.50", 4096, "old"),
    "claude-haiku-4-5": ("legacy", 200_000, 64_000, "1", "5", "1.25", "2", "0.10", 4096, "old"),
    "claude-sonnet-4-5": ("deprecated", 200_000, 64_000, "3", "15", "3.75", "6", "0.30", 1024, "old"),
}  # fmt: skip
CATEGORIES = ("input", "output", "cache_write_5m", "cache_write_1h", "cache_read")


@pytest.fixture(scope="module")
def listed() -> dict[str, dict[str, Any]]:
    result = CliRunner().invoke(app, ["models", "--format", "json"])
    assert result.exit_code == 0, result.output
    return {entry["id"]: entry for entry in json.loads(result.output)}


@pytest.mark.parametrize("model_id", sorted(FACTS))
def test_each_model_agrees_with_the_published_facts(
    listed: dict[str, dict[str, Any]], model_id: str
) -> None:
    status, context, max_out, *prices, min_cache, tokenizer = FACTS[model_id]
    entry = listed[model_id]
    assert entry["status"] == status
    assert (entry["context_window"], entry["max_output_tokens"]) == (context, max_out)
    assert {k: Decimal(entry["prices"][k]) for k in CATEGORIES} == {
        k: Decimal(v) for k, v in zip(CATEGORIES, prices, strict=True)
    }
    assert entry["min_cacheable_tokens"] == min_cache
    assert entry["tokenizer"] == tokenizer


def test_lifecycle_dates_and_replacements(listed: dict[str, dict[str, Any]]) -> None:
    assert listed["claude-sonnet-4-5"]["retires_at"] == "2026-11-30"
    assert listed["claude-sonnet-4-5"]["replacement"] == "claude-sonnet-5-5"
    assert listed["claude-opus-4-1"]["status"] == "retired"
    assert listed["claude-opus-4-1"]["retires_at"] == "2026-08-05"
    assert listed["claude-opus-4-7"]["retires_at"] is None


def test_haiku_5_5_band_and_fast_mode_prices(listed: dict[str, dict[str, Any]]) -> None:
    (band,) = listed["claude-haiku-5-5"]["bands"]
    assert band["above_prompt_tokens"] == 100_000
    assert {k: Decimal(band["prices"][k]) for k in CATEGORIES} == {
        "input": Decimal("0.50"), "output": Decimal("2.50"), "cache_write_5m": Decimal("0.625"),
        "cache_write_1h": Decimal("1.00"), "cache_read": Decimal("0.05"),
    }  # fmt: skip
    assert all(listed[m]["bands"] == [] for m in FACTS if m != "claude-haiku-5-5")
