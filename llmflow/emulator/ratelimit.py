"""Rate limits: reported from a one-minute window, or enforced by token buckets.

Without ``rate_limits`` (:class:`RateLimitWindow`) the emulator only reports
``anthropic-ratelimit-*`` headers counted in the current minute and refuses nothing.

With ``rate_limits`` (:class:`RateLimiter`) it enforces them as the API does: one token
bucket per limit (requests, input tokens, output tokens), holding at most the
per-minute limit and refilled continuously at limit/60 per second, full at start.
``POST /v1/messages`` is checked before it runs; count_tokens and batches are not
limited per request and do not consume. A request is admitted when every bucket holds
what it needs:

* requests: 1;
* input tokens: uncached input + cache writes (cache reads do not count), from a
  side-effect-free look at the prompt cache at arrival;
* output tokens: ``max_tokens``, the estimate charged at admission; when the response
  is known (after the latency, before it is sent) the bucket is corrected to the
  actual ``output_tokens``. The facts we follow name the limits, not how output is
  estimated: this is the emulator's choice.

A need larger than a limit waits for a full bucket, is then admitted, and drives the
bucket below zero (the refill repays the debt), so a client that honours
``retry-after`` always gets through. A refused request is a 429 ``rate_limit_error``
naming the limit that waits longest, with ``retry-after`` the whole seconds (rounded
up) until every bucket holds enough. Every response carries
``anthropic-ratelimit-{requests,input-tokens,output-tokens}-{limit,remaining,reset}``:
``remaining`` the whole units in the bucket, ``reset`` the RFC 3339 time (rounded up
to the second) when the bucket is full again.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Final

import structlog

from llmflow.emulator.config import RateLimits
from llmflow.emulator.errors import ApiError

log = structlog.get_logger("llmflow.emulator")

#: Header name and message wording of each bucket, in header order.
_KINDS: Final = (
    ("requests", "requests"),
    ("input-tokens", "input tokens"),
    ("output-tokens", "output tokens"),
)
_EPSILON: Final = 1e-9


def rfc3339(ts: float) -> str:
    """``2026-01-01T00:00:00Z`` (seconds precision, UTC)."""
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


class RateLimitWindow:
    """Counts requests and tokens in the current minute and renders the headers."""

    def __init__(self, requests_per_minute: int, tokens_per_minute: int) -> None:
        self._rpm = requests_per_minute
        self._tpm = tokens_per_minute
        self._window = -1
        self._reset = ""
        self._requests = 0
        self._input = 0
        self._output = 0

    def _roll(self, now: float) -> None:
        window = int(now // 60)
        if window != self._window:
            self._window = window
            self._reset = rfc3339((window + 1) * 60)
            self._requests = self._input = self._output = 0

    def count(self, now: float, input_tokens: int = 0, output_tokens: int = 0) -> None:
        """Account one request (and its tokens) in the window of ``now``."""
        self._roll(now)
        self._requests += 1
        self._input += input_tokens
        self._output += output_tokens

    def headers(self, now: float) -> dict[str, str]:
        """The headers the API sends with every response."""
        self._roll(now)
        rpm, tpm, reset = self._rpm, self._tpm, self._reset
        itpm = otpm = tpm // 2
        return {
            "anthropic-ratelimit-requests-limit": str(rpm),
            "anthropic-ratelimit-requests-remaining": str(max(0, rpm - self._requests)),
            "anthropic-ratelimit-requests-reset": reset,
            "anthropic-ratelimit-tokens-limit": str(tpm),
            "anthropic-ratelimit-tokens-remaining": str(max(0, tpm - self._input - self._output)),
            "anthropic-ratelimit-tokens-reset": reset,
            "anthropic-ratelimit-input-tokens-limit": str(itpm),
            "anthropic-ratelimit-input-tokens-remaining": str(max(0, itpm - self._input)),
            "anthropic-ratelimit-input-tokens-reset": reset,
            "anthropic-ratelimit-output-tokens-limit": str(otpm),
            "anthropic-ratelimit-output-tokens-remaining": str(max(0, otpm - self._output)),
            "anthropic-ratelimit-output-tokens-reset": reset,
        }


class TokenBucket:
    """Holds at most ``limit``, refilled continuously at ``limit / 60`` per second."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self._rate = limit / 60.0
        self._level = float(limit)
        self._at: float | None = None

    def level(self, now: float) -> float:
        """What the bucket holds at ``now`` (negative while repaying a debt)."""
        if self._at is None or now > self._at:
            if self._at is not None:
                self._level = min(self.limit, self._level + (now - self._at) * self._rate)
            self._at = now
        return self._level

    def wait(self, need: int, now: float) -> float:
        """Seconds until the bucket holds ``need`` (at most a full bucket)."""
        missing = min(need, self.limit) - self.level(now)
        return max(0.0, missing / self._rate)

    def take(self, amount: int, now: float) -> None:
        """Remove ``amount`` (a negative amount gives back, up to the limit)."""
        self._level = min(self.limit, self.level(now) - amount)

    def reset_at(self, now: float) -> float:
        """When the bucket is full again."""
        return now + max(0.0, self.limit - self.level(now)) / self._rate

    def headers(self, kind: str, now: float) -> dict[str, str]:
        """``anthropic-ratelimit-{kind}-{limit,remaining,reset}``."""
        prefix = f"anthropic-ratelimit-{kind}-"
        return {
            prefix + "limit": str(self.limit),
            prefix + "remaining": str(max(0, math.floor(self.level(now) + _EPSILON))),
            prefix + "reset": rfc3339(math.ceil(self.reset_at(now) - _EPSILON)),
        }


@dataclass(slots=True)
class Admission:
    """What an admitted request was charged, to correct once its response is known."""

    input_tokens: int
    output_tokens: int


class RateLimiter:
    """The enforced limits: a bucket each for requests, input and output tokens."""

    def __init__(self, limits: RateLimits) -> None:
        self._limits = limits
        self._buckets = self._fresh()

    def _fresh(self) -> dict[str, TokenBucket]:
        limits = self._limits
        values = (limits.rpm, limits.itpm, limits.otpm)
        return {kind: TokenBucket(value) for (kind, _), value in zip(_KINDS, values, strict=True)}

    def reset(self) -> None:
        """Fill every bucket."""
        self._buckets = self._fresh()

    def admit(self, now: float, input_tokens: int, max_tokens: int) -> Admission:
        """Charge a request arriving at ``now``, or raise the 429 that refuses it."""
        needs = {"requests": 1, "input-tokens": input_tokens, "output-tokens": max_tokens}
        waits = {kind: self._buckets[kind].wait(need, now) for kind, need in needs.items()}
        longest = max(waits, key=lambda kind: waits[kind])
        if waits[longest] > 0:
            retry_after = max(1, math.ceil(waits[longest] - _EPSILON))
            log.debug("emulator.ratelimit.refused", limit=longest, retry_after=retry_after)
            raise _refusal(longest, self._buckets[longest].limit, retry_after)
        for kind, need in needs.items():
            self._buckets[kind].take(need, now)
        return Admission(input_tokens, max_tokens)

    def settle(
        self, admission: Admission, now: float, input_tokens: int, output_tokens: int
    ) -> None:
        """Correct the charge of an admitted request to what it actually used."""
        self._buckets["input-tokens"].take(input_tokens - admission.input_tokens, now)
        self._buckets["output-tokens"].take(output_tokens - admission.output_tokens, now)
        admission.input_tokens, admission.output_tokens = input_tokens, output_tokens

    def headers(self, now: float) -> dict[str, str]:
        """The ``anthropic-ratelimit-*`` headers of every response."""
        headers: dict[str, str] = {}
        for kind, _ in _KINDS:
            headers.update(self._buckets[kind].headers(kind, now))
        return headers


def _refusal(kind: str, limit: int, retry_after: int) -> ApiError:
    wording = dict(_KINDS)[kind]
    return ApiError(
        "rate_limit_error",
        f"This request would exceed your organization's rate limit of {limit:,} {wording}"
        " per minute. Please reduce the prompt length or the maximum tokens requested,"
        " or try again later.",
        {"retry-after": str(retry_after)},
    )
