"""Wiring a backend for a command: the real API, or the emulator in-process (no socket).

The CLI is the one layer that may know both the backends and the emulator, so the
in-process transport is built here and handed to :func:`llmflow.backends.open_client`.
"""

from __future__ import annotations

import anthropic
import httpx2

from llmflow.backends import BackendName, open_client
from llmflow.emulator.app import create_app
from llmflow.emulator.config import EmulatorConfig


def emulator_transport(config: EmulatorConfig | None = None) -> httpx2.ASGITransport:
    """An ASGI transport to a fresh in-process emulator."""
    return httpx2.ASGITransport(app=create_app(config or EmulatorConfig(retry_after_seconds=0)))


def client_for(
    backend: BackendName | str, *, emulator: EmulatorConfig | None = None
) -> anthropic.AsyncAnthropic:
    """The AsyncAnthropic client of ``--backend``; the emulator one runs in this process."""
    if backend == "emulator":
        return open_client("emulator", transport=emulator_transport(emulator))
    return open_client("anthropic")
