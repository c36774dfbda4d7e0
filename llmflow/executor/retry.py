"""Retries of one request: which failures are worth another attempt, and how long to wait.

The SDK's own retries are off (the client is built with ``max_retries=0``) so every
attempt is visible here: it is recorded, and the budget reservation is held across
retries and released only when the request fails for good.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from enum import Enum

import anthropic
import httpx2

from llmflow.errors import BackendAuthError


class Verdict(Enum):
    """What to do after a failed attempt."""

    RETRY = "retry"  # transient: 408, 409, 429, 5xx, 529, connection trouble
    FAIL = "fail"  # the request itself is wrong: 400, 404, 413, 422
    FATAL = "fatal"  # the backend is unusable for every request: 401, 403


@dataclass(frozen=True, slots=True)
class Failure:
    """A classified failed attempt."""

    verdict: Verdict
    status: int | None
    error_type: str
    message: str
    retry_after: float | None
    request_id: str | None
    maybe_billed: bool = False  # the request may have reached the API and been billed


def classify(exc: BaseException) -> Failure:
    """Classify an exception raised by the SDK (or the transport under it)."""
    if isinstance(exc, anthropic.APIStatusError):
        status = exc.status_code
        body = exc.body if isinstance(exc.body, dict) else {}
        raw_error = body.get("error")
        error = raw_error if isinstance(raw_error, dict) else {}
        error_type = str(error.get("type", type(exc).__name__))
        message = str(error.get("message", exc.message))
        should_retry = exc.response.headers.get("x-should-retry")
        if status in (401, 403):
            verdict = Verdict.FATAL
        elif should_retry == "true":
            verdict = Verdict.RETRY
        elif should_retry == "false":
            verdict = Verdict.FAIL
        elif status in (408, 409, 429) or status >= 500:
            verdict = Verdict.RETRY
        else:
            verdict = Verdict.FAIL
        return Failure(
            verdict, status, error_type, message, retry_after_seconds(exc.response), exc.request_id
        )
    if isinstance(exc, anthropic.APIConnectionError | httpx2.TransportError | TimeoutError):
        message = str(exc) or type(exc).__name__
        return Failure(
            Verdict.RETRY, None, "connection_error", message, None, None, _maybe_sent(exc)
        )
    return Failure(Verdict.FAIL, None, type(exc).__name__, str(exc), None, None)


def _maybe_sent(exc: BaseException) -> bool:
    """False only when the request certainly never left: the connection was not made."""
    cause = exc if isinstance(exc, httpx2.TransportError) else exc.__cause__
    return not isinstance(cause, httpx2.ConnectError | httpx2.ConnectTimeout)


def retry_after_seconds(response: httpx2.Response) -> float | None:
    """``retry-after-ms`` or ``retry-after`` (seconds) of a response, if given."""
    for header, scale in (("retry-after-ms", 0.001), ("retry-after", 1.0)):
        value = response.headers.get(header)
        if value is None:
            continue
        try:
            return max(0.0, float(value) * scale)
        except ValueError:
            continue
    return None


@dataclass(frozen=True, slots=True)
class Backoff:
    """Exponential backoff with full jitter, overridden by the server's retry-after."""

    base_seconds: float = 0.5
    max_seconds: float = 60.0

    def delay(self, attempt: int, failure: Failure, rng: random.Random | None = None) -> float:
        """Seconds to wait before attempt ``attempt + 1`` (``attempt`` counts from 1)."""
        if failure.retry_after is not None:
            return min(failure.retry_after, self.max_seconds)
        ceiling = min(self.max_seconds, self.base_seconds * 2 ** (attempt - 1))
        return (rng or random).uniform(0, ceiling)


def raise_if_fatal(failure: Failure) -> None:
    """Turn a failure that makes the backend unusable into BackendAuthError."""
    if failure.verdict is Verdict.FATAL:
        raise BackendAuthError(
            f"the API refused the key ({failure.status} {failure.error_type}: {failure.message})"
        )
