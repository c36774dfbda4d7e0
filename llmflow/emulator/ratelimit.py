"""``anthropic-ratelimit-*`` headers from a one-minute window (reported, not enforced)."""

from __future__ import annotations

from datetime import UTC, datetime


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
