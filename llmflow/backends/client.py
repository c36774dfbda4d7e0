"""Creating the AsyncAnthropic client a run or a plan talks through.

``--backend anthropic`` reads ``ANTHROPIC_API_KEY`` (and ``ANTHROPIC_BASE_URL``, which is
how a user points llmflow at ``llmflow emulator``). ``--backend emulator`` needs an ASGI
transport to the in-process emulator; the CLI builds it, so this layer never imports the
emulator.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Literal

import anthropic
import httpx2

from llmflow.errors import BackendAuthError, BackendError, BackendUnreachable

BackendName = Literal["anthropic", "emulator"]

EMULATOR_BASE_URL = "http://emulator.local"
EMULATOR_API_KEY = "llmflow-emulator"  # the emulator accepts any key


def open_client(
    backend: BackendName,
    *,
    transport: httpx2.AsyncBaseTransport | None = None,
    max_retries: int = 0,
    timeout: float = 600.0,
) -> anthropic.AsyncAnthropic:
    """An AsyncAnthropic client for ``backend``.

    Retries are llmflow's own (the executor honours retry-after and records every
    attempt), so the SDK's are off by default. Raises BackendAuthError when the
    anthropic backend has no key.
    """
    if backend == "emulator":
        if transport is None:
            raise ValueError("the emulator backend needs the in-process emulator's transport")
        http_client = httpx2.AsyncClient(transport=transport, base_url=EMULATOR_BASE_URL)
        return anthropic.AsyncAnthropic(
            api_key=EMULATOR_API_KEY,
            base_url=EMULATOR_BASE_URL,
            http_client=http_client,
            max_retries=max_retries,
            timeout=timeout,
        )
    key = os.environ.get("ANTHROPIC_API_KEY", "").strip()
    if not key:
        raise BackendAuthError(
            "ANTHROPIC_API_KEY is not set; set it, or use --backend emulator to run on the"
            " local emulator"
        )
    return anthropic.AsyncAnthropic(
        api_key=key,
        base_url=os.environ.get("ANTHROPIC_BASE_URL") or None,
        max_retries=max_retries,
        timeout=timeout,
    )


@contextmanager
def sdk_errors(operation: str) -> Iterator[None]:
    """Turn the SDK's errors during ``operation`` into llmflow's backend errors (exit 4)."""
    try:
        yield
    except anthropic.AuthenticationError as exc:
        raise BackendAuthError(f"{operation}: the API refused the key: {exc}") from exc
    except anthropic.APIConnectionError as exc:
        raise BackendUnreachable(f"{operation}: cannot reach the API: {exc}") from exc
    except anthropic.APIError as exc:
        raise BackendError(f"{operation} failed: {exc}") from exc
