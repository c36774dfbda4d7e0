"""A local Anthropic-compatible API (DESIGN.md section 6) for tests and dry runs.

``create_app(config)`` returns a Starlette app; serve it with uvicorn or mount it
in-process behind ``httpx2.ASGITransport`` and the official SDK.
"""

from llmflow.emulator.app import create_app
from llmflow.emulator.config import EmulatorConfig, FaultRates, FaultSpecError, parse_faults

__all__ = ["EmulatorConfig", "FaultRates", "FaultSpecError", "create_app", "parse_faults"]
