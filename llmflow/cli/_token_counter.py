"""Exact token counts for ``llmflow plan --exact-tokens``: the free count_tokens endpoint."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import anthropic

from llmflow.backends import sdk_errors


class SdkTokenCounter:
    """A TokenCounter backed by ``AsyncAnthropic.messages.count_tokens``."""

    def __init__(self, client: anthropic.AsyncAnthropic) -> None:
        self.client = client

    async def count(self, params: Mapping[str, Any]) -> int:
        """Input tokens of ``params`` as the API counts them."""
        with sdk_errors("count_tokens"):
            result = await self.client.messages.count_tokens(**params)
        return int(result.input_tokens)
