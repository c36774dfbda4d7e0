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
    # The organisation's spend cap is reached (429 enforced_spend_limit_reached: the monthly
    # cap of its tier; or contract_spend_limit_reached): no request can succeed until the
    # cap is raised or the month turns. Never retried.
    SPEND_CAP = "spend_cap"


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
    error_code: str | None = None  # ``error.details.error_code``: names the cause, if given


def classify(exc: BaseException) -> Failure:
    """Classify an exception raised by the SDK (or the transport under it)."""
    if isinstance(exc, anthropic.APIStatusError):
        status = exc.status_code
        body = exc.body if isinstance(exc.body, dict) else {}
        raw_error = body.get("error")
        error = raw_error if isinstance(raw_error, dict) else {}
        error_type = str(error.get("type", type(exc).__name__))
        message = str(error.get("message", exc.message))
        details = error.get("details")
        raw_code = details.get("error_code") if isinstance(details, dict) else None
        code = raw_code if isinstance(raw_code, str) else None
        should_retry = exc.response.headers.get("x-should-retry")
        if status in (400, 429) and is_spend_cap(error_type, message, code):
            verdict = Verdict.SPEND_CAP  # before x-should-retry: retrying cannot succeed
        else:
            verdict = _status_verdict(status, should_retry)
        retry_after = retry_after_seconds(exc.response)
        return Failure(
            verdict, status, error_type, message, retry_after, exc.request_id, error_code=code
        )
    if isinstance(exc, anthropic.APIConnectionError | httpx2.TransportError | TimeoutError):
        message = str(exc) or type(exc).__name__
        return Failure(
            Verdict.RETRY, None, "connection_error", message, None, None, _maybe_sent(exc)
        )
    return Failure(Verdict.FAIL, None, type(exc).__name__, str(exc), None, None)


def _status_verdict(status: int, should_retry: str | None) -> Verdict:
    if status in (401, 403):
        return Verdict.FATAL
    if should_retry == "true":
        return Verdict.RETRY
    if should_retry == "false":
        return Verdict.FAIL
    if status in (408, 409, 429) or status >= 500:
        return Verdict.RETRY
    return Verdict.FAIL


# How the API says "a spend cap is reached", in the error code, type or message
# (lower-cased): codes ``enforced_spend_limit_reached`` (the monthly cap of the API tier)
# and ``contract_spend_limit_reached``; messages "...exceed your organization's monthly
# spend limit..." and "You have reached your specified API usage limits...".
_SPEND_CAP_MARKERS = ("spend_limit", "spend limit", "specified api usage limits")


def is_spend_cap(error_type: str, message: str, error_code: str | None = None) -> bool:
    """Whether an error's code, type or message says a spend cap is reached."""
    text = f"{error_code or ''} {error_type} {message}".lower()
    return any(marker in text for marker in _SPEND_CAP_MARKERS)


def spend_cap_message(failure: Failure) -> str:
    """One line for the user when the organisation's spend cap stops the run."""
    status = "" if failure.status is None else f"{failure.status} "
    if failure.error_code:
        cause = f"{status}{failure.error_code}"
    else:  # recognised by its wording: the API's message is the evidence (and may say when)
        detail = " ".join(failure.message.split())[:200]
        cause = f"{status}{failure.error_type}: {detail}" if detail else status + failure.error_type
    if failure.error_code == "contract_spend_limit_reached":
        return (
            "the API refused the request: the organisation's contract spend limit is reached "
            f"({cause}); raise it with your Anthropic account team"
        )
    return (
        "the API refused the request: the organisation's monthly spend cap is reached "
        f"({cause}); raise it in the Console, or wait for the next month"
    )


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
