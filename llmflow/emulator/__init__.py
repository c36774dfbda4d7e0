"""A local Anthropic-compatible API (DESIGN.md section 6) for tests and dry runs.

``create_app(config)`` returns a Starlette app; serve it with uvicorn (``llmflow
emulator``) or mount it in-process behind ``httpx2.ASGITransport`` and the official SDK
(``--backend emulator``). The app is imported on first use, so reading the config does
not load the server.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from llmflow.emulator.config import EmulatorConfig, FaultRates, FaultSpecError, parse_faults

if TYPE_CHECKING:
    from llmflow.emulator.app import create_app

__all__ = ["EmulatorConfig", "FaultRates", "FaultSpecError", "create_app", "parse_faults"]


def __getattr__(name: str) -> Any:
    if name == "create_app":
        from llmflow.emulator.app import create_app

        return create_app
    raise AttributeError(f"module 'llmflow.emulator' has no attribute {name!r}")
