"""Exact token counts for ``llmflow plan --exact-tokens``: the free count_tokens endpoint."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import anthropic

from llmflow.errors import BackendAuthError, BackendError, BackendUnreachable


class SdkTokenCounter:
    """A TokenCounter backed by ``AsyncAnthropic.messages.count_tokens``."""

    def __init__(self, client: anthropic.AsyncAnthropic) -> None:
        self.client = client

    async def count(self, params: Mapping[str, Any]) -> int:
        """Input tokens of ``params`` as the API counts them."""
        try:
            result = await self.client.messages.count_tokens(**params)
        except anthropic.AuthenticationError as exc:
            raise BackendAuthError(f"count_tokens: the API refused the key: {exc}") from exc
        except anthropic.APIConnectionError as exc:
            raise BackendUnreachable(f"count_tokens: cannot reach the API: {exc}") from exc
        except anthropic.APIError as exc:
            raise BackendError(f"count_tokens failed: {exc}") from exc
        return int(result.input_tokens)
