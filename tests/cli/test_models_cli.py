"""`llmflow models`: the catalog as a table and as JSON, and `--check` against the
Models API of the emulator (which serves the shipped catalog)."""

from __future__ import annotations

import datetime as dt
import json
from decimal import Decimal
from typing import Any

import pytest
from anthropic.types import ModelInfo as ApiModel
from typer.testing import CliRunner

from llmflow.catalog import Catalog, ModelInfo, load_catalog
from llmflow.cli import app
from llmflow.cli._model_drift import Drift, compare

runner = CliRunner()
CATALOG = load_catalog()
REQUIRED = {
    "id",
    "status",
    "retires_at",
    "context_window",
    "max_output_tokens",
    "min_cacheable_tokens",
    "tokenizer",
    "prices",
    "bands",
    "capabilities",
}
EXTRAS = {
    "display_name",
    "line",
    "lifecycle",
    "released",
    "replacement",
    "aliases",
    "batch_max_output_tokens",
    "fast",
    "batch_multiplier",
    "data_residency",
    "residency_multiplier",
    "thinking_estimates",
    "third_party",
    "assumed",
    "notes",
    "priced_on",
    "source",
}
CATEGORIES = ("input", "output", "cache_write_5m", "cache_write_1h", "cache_read")


def expected_prices(info: ModelInfo, p_in: Decimal, p_out: Decimal) -> dict[str, Decimal]:
    return {
        "input": p_in,
        "output": p_out,
        "cache_write_5m": p_in * info.cache_write_5m_multiplier,
        "cache_write_1h": p_in * info.cache_write_1h_multiplier,
        "cache_read": p_in * info.cache_read_multiplier,
    }


def as_decimals(prices: dict[str, str]) -> dict[str, Decimal]:
    assert set(prices) == set(CATEGORIES)
    for text in prices.values():
        assert isinstance(text, str) and "e" not in text.lower()  # decimal strings
    return {name: Decimal(text) for name, text in prices.items()}


def models_json() -> list[dict[str, Any]]:
    result = runner.invoke(app, ["models", "--format", "json"])
    assert result.exit_code == 0, result.output
    entries = json.loads(result.stdout)
    assert isinstance(entries, list)
    return entries


def test_json_has_every_catalog_model_and_every_field_agrees_with_the_catalog() -> None:
    entries = models_json()
    assert [e["id"] for e in entries] == list(CATALOG.models)
    for entry in entries:
        info = CATALOG.models[entry["id"]]
        assert set(entry) == REQUIRED | EXTRAS, entry["id"]
        assert entry["status"] == info.status and entry["lifecycle"] == info.lifecycle
        retires = info.retires_at.isoformat() if info.retires_at else None
        assert entry["retires_at"] == retires
        assert entry["context_window"] == info.context_window
        assert entry["max_output_tokens"] == info.max_output_tokens
        assert entry["batch_max_output_tokens"] == info.batch_max_output_tokens
        assert entry["min_cacheable_tokens"] == info.min_cacheable_tokens
        assert entry["tokenizer"] == info.tokenizer
        base = expected_prices(info, info.input_usd_per_mtok, info.output_usd_per_mtok)
        assert as_decimals(entry["prices"]) == base
        assert len(entry["bands"]) == len(info.bands)
        for shown, band in zip(entry["bands"], info.bands, strict=True):
            assert shown["above_prompt_tokens"] == band.above_prompt_tokens
            banded = expected_prices(info, band.input_usd_per_mtok, band.output_usd_per_mtok)
            assert as_decimals(shown["prices"]) == banded
        if info.fast is None:
            assert entry["fast"] is None
        else:
            fast = expected_prices(
                info, info.fast.input_usd_per_mtok, info.fast.output_usd_per_mtok
            )
            assert as_decimals(entry["fast"]["prices"]) == fast
            until = info.fast.until.isoformat() if info.fast.until else None
            assert entry["fast"]["until"] == until
        assert entry["capabilities"] == info.capabilities.model_dump(mode="json")
        assert entry["aliases"] == list(info.aliases)
        assert entry["replacement"] == info.replacement
        assert entry["data_residency"] is info.data_residency
        assert Decimal(entry["batch_multiplier"]) == info.batch_multiplier
        assert Decimal(entry["residency_multiplier"]) == info.residency_multiplier
        assert entry["third_party"] == list(info.third_party)
        assert entry["assumed"] == list(info.assumed)
        assert entry["priced_on"] == info.priced_on.isoformat()
        assert entry["source"] == CATALOG.source(info.price_source)


def test_json_prices_match_the_published_figures() -> None:
    by_id = {e["id"]: e for e in models_json()}
    haiku = by_id["claude-haiku-5-5"]
    assert haiku["prices"] == {
        "input": "0.1",
        "output": "0.5",
        "cache_write_5m": "0.125",
        "cache_write_1h": "0.2",
        "cache_read": "0.01",
    }
    assert haiku["bands"] == [
        {
            "above_prompt_tokens": 100000,
            "prices": {
                "input": "0.5",
                "output": "2.5",
                "cache_write_5m": "0.625",
                "cache_write_1h": "1",
                "cache_read": "0.05",
            },
        }
    ]
    assert by_id["claude-opus-5-5"]["prices"]["cache_read"] == "0.2"
    assert by_id["claude-fable-5-1"]["prices"]["cache_read"] == "0.25"
    assert by_id["claude-opus-5-5"]["fast"]["prices"]["output"] == "40"
    assert by_id["claude-opus-4-8"]["fast"]["until"] == "2026-11-30"
    assert by_id["claude-sonnet-4-5"]["replacement"] == "claude-sonnet-5-5"
    assert by_id["claude-opus-4-1"]["status"] == "retired"


def test_table_fits_100_columns_flags_unconfirmed_facts_and_dates_the_catalog() -> None:
    result = runner.invoke(app, ["models"])
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert max(len(line.rstrip()) for line in lines) <= 100
    assert lines[0].startswith(f"Model catalog of {CATALOG.catalog_date.isoformat()}")
    rows = {line.split()[0]: line.split() for line in lines if line.startswith(" claude-")}
    assert set(rows) == set(CATALOG.models)
    assert rows["claude-haiku-5-5"][-2:] == ["512*", "new"]  # min cacheable: third-party
    assert rows["claude-sonnet-5-5"][-2:] == ["1024?", "new"]  # not published: assumed
    assert rows["claude-fable-5-2"][-3:] == ["0.2*", "512?", "new"]  # cache read: third-party
    assert rows["claude-opus-5-5"][-2:] == ["512", "new"]
    text = result.stdout
    assert "* from third-party price trackers only" in text
    assert "? not published" in text
    assert "claude-sonnet-4-5: retires 2026-11-30; use claude-sonnet-5-5" in text
    assert "claude-opus-4-8: fast mode 10 in / 50 out, until 2026-11-30" in text
    assert "claude-haiku-5-5: prompts above 100,000 tokens" in text


def test_check_against_the_emulator_finds_no_drift() -> None:
    result = runner.invoke(app, ["models", "--check", "--backend", "emulator"])
    assert result.exit_code == 0, result.output
    assert result.stdout.startswith("no drift: the catalog matches the Models API (16 models")
    result = runner.invoke(app, ["models", "--check", "--backend", "emulator", "--format", "json"])
    assert result.exit_code == 0 and json.loads(result.stdout) == []


def altered_catalog() -> Catalog:
    models = dict(CATALOG.models)
    del models["claude-opus-5"]  # the API lists it, the catalog does not
    sonnet = models["claude-sonnet-5-5"]
    caps = sonnet.capabilities.model_copy(
        update={"effort_levels": ("low", "medium", "high"), "structured_outputs": False}
    )
    models["claude-sonnet-5-5"] = sonnet.model_copy(
        update={"context_window": 500_000, "capabilities": caps}
    )
    haiku = models["claude-haiku-5-5"]
    models["claude-haiku-5-5"] = haiku.model_copy(
        update={
            "status": "deprecated",
            "retires_at": dt.date(2027, 1, 1),
            "max_output_tokens": 64_000,
            "capabilities": haiku.capabilities.model_copy(
                update={"thinking_types": ("adaptive", "enabled", "disabled")}
            ),
        }
    )
    models["claude-unreleased-9"] = haiku.model_copy(update={"id": "claude-unreleased-9"})
    return Catalog(catalog_date=CATALOG.catalog_date, sources=CATALOG.sources, models=models)


def test_check_reports_every_drift_and_exits_one(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("llmflow.cli.cmd_models.load_catalog", altered_catalog)
    result = runner.invoke(app, ["models", "--check", "--backend", "emulator", "--format", "json"])
    assert result.exit_code == 1, result.output
    drifts = json.loads(result.stdout)
    by_key = {(d["model"], d["field"]): (d["catalog"], d["api"]) for d in drifts}
    assert by_key == {
        ("claude-haiku-5-5", "lifecycle"): ("deprecated", "active"),
        ("claude-haiku-5-5", "retires_at"): ("2027-01-01", None),
        ("claude-haiku-5-5", "max_output_tokens"): (64000, 128000),
        ("claude-haiku-5-5", "thinking_types"): (
            ["adaptive", "enabled", "disabled"],
            ["adaptive", "disabled"],
        ),
        ("claude-sonnet-5-5", "context_window"): (500000, 1000000),
        ("claude-sonnet-5-5", "effort_levels"): (
            ["low", "medium", "high"],
            ["low", "medium", "high", "xhigh", "max"],
        ),
        ("claude-sonnet-5-5", "structured_outputs"): (False, True),
        ("claude-opus-5", "listed"): ("missing from the catalog", "active"),
        ("claude-unreleased-9", "listed"): ("active", "not listed by the API"),
    }
    assert len(drifts) == len(by_key)


def test_check_table_lists_the_drift(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("llmflow.cli.cmd_models.load_catalog", altered_catalog)
    result = runner.invoke(app, ["models", "--check", "--backend", "emulator"])
    assert result.exit_code == 1
    assert "9 difference(s) between the catalog and the Models API" in result.stdout
    assert "claude-sonnet-5-5" in result.stdout and "context_window" in result.stdout


def test_a_retired_model_the_api_no_longer_lists_is_no_drift() -> None:
    listed = [
        ApiModel.model_validate(
            {
                "id": "claude-opus-5-5",
                "type": "model",
                "display_name": "Claude Opus 5.5",
                "created_at": "2026-09-22T00:00:00Z",
                "lifecycle": "active",
                "max_input_tokens": 1_000_000,
                "max_tokens": 128_000,
            }
        )
    ]
    one = Catalog(
        catalog_date=CATALOG.catalog_date,
        sources=CATALOG.sources,
        models={k: CATALOG.models[k] for k in ("claude-opus-5-5", "claude-opus-4-1")},
    )
    assert compare(one, listed) == []
    retired = ApiModel.model_validate(
        {**listed[0].model_dump(mode="json"), "lifecycle": "retired", "retires_at": None}
    )
    assert compare(one, [retired]) == [Drift("claude-opus-5-5", "lifecycle", "active", "retired")]


def test_check_without_a_key_or_a_reachable_api_exits_four(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("ANTHROPIC_API_KEY", raising=False)
    result = runner.invoke(app, ["models", "--check"])
    assert result.exit_code == 4
    assert "ANTHROPIC_API_KEY is not set" in result.stderr
    monkeypatch.setenv("ANTHROPIC_API_KEY", "sk-test")
    monkeypatch.setenv("ANTHROPIC_BASE_URL", "http://127.0.0.1:9")
    result = runner.invoke(app, ["models", "--check"])
    assert result.exit_code == 4
    assert result.stderr.startswith("error: models.list: cannot reach the API")
    assert "Traceback" not in result.output


def test_bad_usage_exits_two() -> None:
    assert runner.invoke(app, ["models", "--format", "xml"]).exit_code == 2
    assert runner.invoke(app, ["models", "--backend", "nowhere"]).exit_code == 2
