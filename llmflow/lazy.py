"""Imports deferred to first use, so a command loads only what it runs.

``llmflow report`` must start fast, and most of its start is imports. Two kinds are
deferred here:

- **Loggers.** Importing structlog takes ~0.1 s (it brings rich's tracebacks and
  pygments), and commands that print a result on stdout seldom log anything. Modules on
  their path take ``_log = lazy_logger(name)`` instead of ``structlog.get_logger(name)``:
  the same logger, made on the first call. :func:`configure_when_imported` runs a
  structlog configuration now if structlog is loaded, else just before a lazy logger
  loads it.
- **Package exports.** A package's ``__init__`` sets ``__getattr__ = exports(__name__,
  {module: names})`` (PEP 562) and imports the names under ``TYPE_CHECKING`` for the
  type checker: ``from llmflow.tracker import RunStore`` then loads the store, not the
  whole tracker.
"""

from __future__ import annotations

import importlib
import sys
from collections.abc import Callable, Mapping
from typing import Any

_pending: list[Callable[[], None]] = []


class LazyLogger:
    """``structlog.get_logger(name)``, made when an attribute is first read."""

    __slots__ = ("_logger", "_name")

    def __init__(self, name: str) -> None:
        self._name = name
        self._logger: Any = None

    def __getattr__(self, attr: str) -> Any:
        if self._logger is None:
            self._logger = _structlog().get_logger(self._name)
        return getattr(self._logger, attr)


def lazy_logger(name: str) -> Any:
    """A logger named ``name`` that imports structlog on its first use."""
    return LazyLogger(name)


def configure_when_imported(configure: Callable[[], None]) -> None:
    """Run ``configure`` now if structlog is imported, else when a lazy logger imports it
    (only the last configuration given before then is kept)."""
    if "structlog" in sys.modules:
        _pending.clear()
        configure()
    else:
        _pending[:] = [configure]


def discard_pending_configuration() -> None:
    """Forget a configuration waiting for structlog (one is being applied now)."""
    _pending.clear()


def _structlog() -> Any:
    import structlog

    while _pending:
        _pending.pop()()
    return structlog


def exports(package: str, names: Mapping[str, tuple[str, ...]]) -> Callable[[str], Any]:
    """A module ``__getattr__`` for ``package``, whose ``names`` map each submodule to the
    names it exports: a name is imported from its submodule on first use, then kept in
    the package."""
    namespace = sys.modules[package].__dict__
    where = {name: module for module, found in names.items() for name in found}

    def __getattr__(name: str) -> Any:
        module = where.get(name)
        if module is None:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        value = getattr(importlib.import_module(f"{package}.{module}"), name)
        namespace[name] = value
        return value

    return __getattr__
