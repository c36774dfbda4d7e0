"""Run the emulator in-process behind the official SDK (no socket).

from anthropic import AsyncAnthropic
app = create_app(EmulatorConfig())
client = AsyncAnthropic(api_key="emulator", base_url=IN_PROCESS_BASE_URL,
                        http_client=in_process_http_client(app))
"""

from __future__ import annotations

from typing import Final

import httpx2
from starlette.applications import Starlette

#: Base URL the in-process client uses (never resolved: no socket is opened).
IN_PROCESS_BASE_URL: Final = "http://emulator.invalid"


def in_process_http_client(
    app: Starlette, base_url: str = IN_PROCESS_BASE_URL, timeout: float = 600.0
) -> httpx2.AsyncClient:
    """An ``httpx2.AsyncClient`` whose requests go straight to ``app`` (ASGI)."""
    return httpx2.AsyncClient(
        transport=httpx2.ASGITransport(app=app), base_url=base_url, timeout=timeout
    )
