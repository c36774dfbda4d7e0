"""``llmflow emulator --output-scale`` and ``--batch-cache-hit-rate`` reach the config."""

from __future__ import annotations

from typing import Any

import pytest
from typer.testing import CliRunner

import llmflow.emulator.server as server
from llmflow.cli import app as cli_app
from llmflow.emulator import EmulatorConfig


@pytest.fixture
def served(monkeypatch: pytest.MonkeyPatch) -> list[EmulatorConfig]:
    """The configs ``llmflow emulator`` would serve (nothing is served)."""
    configs: list[EmulatorConfig] = []

    def fake_serve(config: EmulatorConfig, **_: Any) -> None:
        configs.append(config)

    monkeypatch.setattr(server, "serve", fake_serve)
    return configs


def test_defaults(served: list[EmulatorConfig]) -> None:
    result = CliRunner().invoke(cli_app, ["emulator", "--port", "0"])
    assert result.exit_code == 0, result.output
    (config,) = served
    assert config.output_scale == EmulatorConfig().output_scale == 1.0
    assert config.batch_cache_hit_rate == EmulatorConfig().batch_cache_hit_rate


def test_options_reach_the_config(served: list[EmulatorConfig]) -> None:
    args = ["emulator", "--output-scale", "2.5", "--batch-cache-hit-rate", "0.3", "--seed", "4"]
    result = CliRunner().invoke(cli_app, args)
    assert result.exit_code == 0, result.output
    (config,) = served
    assert (config.output_scale, config.batch_cache_hit_rate, config.seed) == (2.5, 0.3, 4)


@pytest.mark.parametrize(
    ("option", "value"),
    [
        ("--output-scale", "0"),
        ("--output-scale", "-2"),
        ("--output-scale", "inf"),
        ("--output-scale", "big"),
        ("--batch-cache-hit-rate", "1.5"),
        ("--batch-cache-hit-rate", "-0.1"),
    ],
)
def test_bad_values_exit_2(served: list[EmulatorConfig], option: str, value: str) -> None:
    result = CliRunner().invoke(cli_app, ["emulator", option, value])
    assert result.exit_code == 2
    assert option in result.output
    assert served == []


def test_help_lists_the_options() -> None:
    result = CliRunner().invoke(cli_app, ["emulator", "--help"], terminal_width=200)
    assert result.exit_code == 0
    assert "--output-scale" in result.output and "--batch-cache-hit-rate" in result.output
