"""A local Anthropic-compatible API for tests and dry runs.

``create_app(config)`` returns a Starlette app; serve it with uvicorn (``llmflow
emulator``) or mount it in-process behind ``httpx2.ASGITransport`` and the official SDK
(``--backend emulator``). The app is imported on first use, so reading the config does
not load the server.

It serves Messages (plain and streamed), count_tokens, Message Batches and the Models
API, all from the catalog: each model's limits, lifecycle, tokenizer family, cache
minimum and injected prompt; requests the model does not accept are refused by the
catalog's request rules (:mod:`.refusals`); thinking follows the model's default and
the request's effort (:mod:`.thinking`); caching, automatic caching and cache
diagnostics behave as the API's (:mod:`.cache`, :mod:`.diagnostics`), except that a
batch request reads its cached prefix with probability ``batch_cache_hit_rate``
(:mod:`.batches`). An answer is as long as its ask calls for (:mod:`.lengths`: a label
a few tokens, a summary more for a longer input, times ``output_scale``). Output is
deterministic for a seed; every billed response lands in a ledger (:mod:`.ledger`).

Limits as the API's: rate-limit headers on every response, enforced as token buckets
with ``rate_limits`` (:mod:`.ratelimit`); an organisation spend cap over the ledger
(:mod:`.spendcap`); and a delayed batch-create answer (``batch_create_delay_ms``) to
test clients that give up while the batch is being created.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from llmflow.emulator.config import (
    EmulatorConfig,
    FaultRates,
    FaultSpecError,
    RateLimits,
    RateLimitSpecError,
    SpendCapSpecError,
    parse_faults,
    parse_rate_limits,
    parse_spend_cap,
)

if TYPE_CHECKING:
    from llmflow.emulator.app import create_app

__all__ = [
    "EmulatorConfig",
    "FaultRates",
    "FaultSpecError",
    "RateLimitSpecError",
    "RateLimits",
    "SpendCapSpecError",
    "create_app",
    "parse_faults",
    "parse_rate_limits",
    "parse_spend_cap",
]


def __getattr__(name: str) -> Any:
    if name == "create_app":
        from llmflow.emulator.app import create_app

        return create_app
    raise AttributeError(f"module 'llmflow.emulator' has no attribute {name!r}")
