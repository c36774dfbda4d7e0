"""A local Anthropic-compatible API (DESIGN.md section 6) for tests and dry runs.

``create_app(config)`` returns a Starlette app; serve it with uvicorn or mount it
in-process behind ``httpx2.ASGITransport`` and the official SDK.
"""

from llmflow.emulator.app import create_app
from llmflow.emulator.config import EmulatorConfig, FaultRates, FaultSpecError, parse_faults
from llmflow.emulator.inprocess import IN_PROCESS_BASE_URL, in_process_http_client

__all__ = [
    "IN_PROCESS_BASE_URL",
    "EmulatorConfig",
    "FaultRates",
    "FaultSpecError",
    "create_app",
    "in_process_http_client",
    "parse_faults",
]
