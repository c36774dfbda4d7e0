"""The catalog's parse is cached like bytecode: the same data, never stale, only where
Python writes bytecode."""

from __future__ import annotations

import sys
from importlib import resources
from pathlib import Path

import pytest
from ruamel.yaml import YAML

from llmflow.catalog.yaml_cache import cache_path, load_yaml_cached

SHIPPED = Path(str(resources.files("llmflow.catalog").joinpath("models.yaml")))


@pytest.fixture
def writable(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Bytecode (and the cache) under ``tmp_path / "pycache"``, written."""
    monkeypatch.setattr(sys, "pycache_prefix", str(tmp_path / "pycache"))
    monkeypatch.setattr(sys, "dont_write_bytecode", False)
    return tmp_path / "pycache"


def _no_parsing(monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(*_: object, **__: object) -> None:
        raise AssertionError("parsed again")

    monkeypatch.setattr("ruamel.yaml.YAML", refuse)


def test_the_cached_data_is_the_parsed_data(
    writable: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    source = tmp_path / "models.yaml"
    source.write_text(SHIPPED.read_text("utf-8"), "utf-8")
    parsed = YAML(typ="safe").load(SHIPPED.read_text("utf-8"))
    assert load_yaml_cached(source) == parsed
    cached = cache_path(source, source.read_text("utf-8"))
    assert cached.is_file() and writable in cached.parents
    assert cached.name.startswith("models.yaml.") and cached.suffix == ".json"
    with monkeypatch.context() as m:
        _no_parsing(m)
        assert load_yaml_cached(source) == parsed
    # an edited file is parsed again, under another name
    source.write_text(source.read_text("utf-8").replace("catalog_date:", "# x\ncatalog_date:"))
    assert cache_path(source, source.read_text("utf-8")) != cached
    assert load_yaml_cached(source) == parsed
    assert len(list(cached.parent.glob("models.yaml.*.json"))) == 2


def test_nothing_is_written_without_bytecode(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(sys, "pycache_prefix", str(tmp_path / "pycache"))
    monkeypatch.setattr(sys, "dont_write_bytecode", True)
    source = tmp_path / "m.yaml"
    source.write_text("a: 1\n", "utf-8")
    assert load_yaml_cached(source) == {"a": 1}
    assert not (tmp_path / "pycache").exists()


def test_data_json_cannot_hold_exactly_is_not_cached(writable: Path, tmp_path: Path) -> None:
    source = tmp_path / "m.yaml"
    source.write_text("when: 2026-05-20\n", "utf-8")
    first = load_yaml_cached(source)
    assert str(first["when"]) == "2026-05-20" and not writable.exists()


def test_a_broken_cache_is_parsed_again_and_replaced(writable: Path, tmp_path: Path) -> None:
    source = tmp_path / "m.yaml"
    source.write_text("a: [1, two, null, true]\n", "utf-8")
    cached = cache_path(source, source.read_text("utf-8"))
    cached.parent.mkdir(parents=True)
    cached.write_text("{not json", "utf-8")
    assert load_yaml_cached(source) == {"a": [1, "two", None, True]}
    assert load_yaml_cached(source) == {"a": [1, "two", None, True]}
    assert cached.read_text("utf-8").startswith("{")


def test_an_unwritable_cache_directory_is_no_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("", "utf-8")
    monkeypatch.setattr(sys, "pycache_prefix", str(blocker))  # a file: no directory under it
    monkeypatch.setattr(sys, "dont_write_bytecode", False)
    source = tmp_path / "m.yaml"
    source.write_text("a: 1\n", "utf-8")
    assert load_yaml_cached(source) == {"a": 1}
