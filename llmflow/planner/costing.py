"""Pricing planned usage with the one cost formula (``llmflow.catalog.cost``).

* **expected**: estimated tokens, the cache decision's expected writes and reads.
* **max**: a true upper bound. Per request the prefix (≤ its byte bound) is billed at
  the dearest of input, cache write at the planned TTL and cache read; the rest at the
  input price; output (text and thinking) at ``max_tokens``. Cost is linear in how the
  prefix splits between these categories, so the dearest single category bounds every
  split. Prices are those of the band the largest request's bound could reach (a
  higher band is dearer in every category), with fast mode and residency as asked.
* **baseline**: the same tokens on the baseline tier, synchronous, without cache.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from decimal import Decimal
from typing import Any

from llmflow.catalog import Catalog, ModelInfo, TokenUsage, cost
from llmflow.errors import PlanError
from llmflow.planner.requests import Ttl
from llmflow.planner.tokens import (
    ZERO_SIZE,
    Size,
    block_size,
    injected_tokens,
    params_size,
    static_size,
    tool_size,
)
from llmflow.spec.policy import Policy

_HUNDRED = Decimal(100)
_PCT = Decimal("0.1")


def tier_model(policy: Policy, tier: str, catalog: Catalog) -> ModelInfo:
    """The catalog model of a policy tier, with the tier's price overrides applied."""
    spec = policy.tiers.get(tier)
    if spec is None:
        raise PlanError(f"tier '{tier}' is not defined in the policy")
    info = catalog.resolve(spec.model, spec.model_dump())
    if info is None:
        raise PlanError(f"tier '{tier}' names no known model: '{spec.model}'")
    return info


def max_cost(
    *,
    requests: int,
    prefix_bound: int,
    rest_bound: int,
    max_tokens: int,
    model: ModelInfo,
    batch: bool,
    ttls: Sequence[Ttl] = (),
    largest_prompt: int = 0,
    speed: str | None = None,
    inference_geo: str | None = None,
) -> Decimal:
    """Upper bound of ``requests`` requests: each writes its prefix (or the dearer case).

    ``prefix_bound`` is per request, ``rest_bound`` summed over all requests; ``ttls``
    are the TTLs the requests' breakpoints carry (none: no cache, all input);
    ``largest_prompt`` bounds the prompt of the largest request (it picks the band).
    """
    output = requests * max_tokens
    prefix = requests * prefix_bound
    cases = [TokenUsage(input=rest_bound + prefix, output=output)]
    if ttls:
        cases.append(TokenUsage(input=rest_bound, cache_read=prefix, output=output))
    if "5m" in ttls:
        cases.append(TokenUsage(input=rest_bound, cache_write_5m=prefix, output=output))
    if "1h" in ttls:
        cases.append(TokenUsage(input=rest_bound, cache_write_1h=prefix, output=output))
    return max(
        cost(
            case,
            model,
            batch=batch,
            speed=speed,
            inference_geo=inference_geo,
            prompt_tokens=largest_prompt,
        )
        for case in cases
    )


def baseline_cost(usage: TokenUsage, model: ModelInfo) -> Decimal:
    """The same tokens priced naively: all input uncached, synchronous."""
    return cost(TokenUsage(input=usage.total_input, output=usage.output), model, batch=False)


def savings_pct(baseline: Decimal, expected: Decimal) -> Decimal:
    """Percent saved against the baseline, to one decimal (0 when the baseline is 0)."""
    if not baseline:
        return Decimal(0)
    return ((baseline - expected) * _HUNDRED / baseline).quantize(_PCT)


def request_prefix_bound(params: Mapping[str, Any]) -> tuple[int, tuple[Ttl, ...]]:
    """Bound of the tokens up to a request's last breakpoint, and the TTLs marked."""
    running = ZERO_SIZE
    prefix = 0
    ttls: set[Ttl] = set()
    segments: list[tuple[Mapping[str, Any], Size]] = [
        (tool, tool_size(tool)) for tool in params.get("tools", ())
    ]
    system = params.get("system")
    if isinstance(system, list):
        segments += [(b, block_size(str(b.get("text", "")))) for b in system]
    for segment, size in segments:
        running += size
        marks = segment.get("cache_control")
        if marks:
            prefix = running.bound
            ttls.add(_ttl(marks))
    for message in params.get("messages", ()):
        content = message.get("content")
        for block in content if isinstance(content, list) else ():
            if block.get("cache_control"):
                # A marked message block: bound the whole request as cacheable.
                prefix = params_size(params).bound
                ttls.add(_ttl(block["cache_control"]))
    return prefix, tuple(sorted(ttls))


def _ttl(marks: Mapping[str, Any]) -> Ttl:
    return "1h" if marks.get("ttl") == "1h" else "5m"


def static_params(params: Mapping[str, Any]) -> dict[str, Any]:
    """A request with ``params``' tools and system and a one-character message: its
    exact token count bounds what the tools and system add to any request carrying them
    (they are tokenized apart from the messages, and the message adds tokens)."""
    kept = {k: params[k] for k in ("model", "system", "tools", "tool_choice") if k in params}
    return {**kept, "messages": [{"role": "user", "content": "x"}]}


def request_max_cost(
    params: Mapping[str, Any],
    model: ModelInfo,
    *,
    batch: bool,
    static_tokens: int | None = None,
) -> Decimal:
    """Upper bound of one request's cost: what a budget reserves before dispatching it.

    ``static_tokens``, the exact count of :func:`static_params` (the count_tokens
    endpoint), replaces the byte bound of the tools and system blocks: the rest keeps
    its byte bound, so the result stays a true bound, and a large static prompt (a
    product guide, 3-4 bytes a token) is no longer counted at a token a byte.
    """
    total = params_size(params).bound + injected_tokens(params, model)
    prefix, ttls = request_prefix_bound(params)
    if static_tokens is not None:
        static = static_size(params).bound
        if static_tokens < static:
            total -= static - static_tokens
            # a prefix within the tools and system is within their exact count
            if prefix <= static:
                prefix = min(prefix, static_tokens)
            else:
                prefix -= static - static_tokens
    return max_cost(
        requests=1,
        prefix_bound=prefix,
        rest_bound=total - prefix,
        max_tokens=int(params["max_tokens"]),
        model=model,
        batch=batch,
        ttls=ttls,
        largest_prompt=total,
        speed=params.get("speed"),
        inference_geo=params.get("inference_geo"),
    )
