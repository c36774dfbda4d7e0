from __future__ import annotations

import random

import anthropic
import httpx2
import pytest
from hypothesis import given
from hypothesis import strategies as st

from llmflow.errors import BackendAuthError
from llmflow.executor.retry import (
    Backoff,
    Failure,
    Verdict,
    classify,
    is_spend_cap,
    raise_if_fatal,
    spend_cap_message,
)


def _status_error(status: int, headers: dict[str, str] | None = None) -> anthropic.APIStatusError:
    request = httpx2.Request("POST", "http://emulator.local/v1/messages")
    body = {
        "type": "error",
        "error": {"type": "some_error", "message": "nope"},
        "request_id": "req_1",
    }
    response = httpx2.Response(status, headers=headers or {}, json=body, request=request)
    client = anthropic.Anthropic(api_key="k", base_url="http://emulator.local")
    return client._make_status_error_from_response(response)


@pytest.mark.parametrize(
    ("status", "verdict"),
    [
        (400, Verdict.FAIL),
        (401, Verdict.FATAL),
        (403, Verdict.FATAL),
        (404, Verdict.FAIL),
        (408, Verdict.RETRY),
        (409, Verdict.RETRY),
        (413, Verdict.FAIL),
        (429, Verdict.RETRY),
        (500, Verdict.RETRY),
        (529, Verdict.RETRY),
    ],
)
def test_status_codes(status: int, verdict: Verdict) -> None:
    failure = classify(_status_error(status))
    assert failure.verdict is verdict
    assert failure.error_type == "some_error" and failure.message == "nope"


def test_x_should_retry_wins() -> None:
    assert classify(_status_error(400, {"x-should-retry": "true"})).verdict is Verdict.RETRY
    assert classify(_status_error(500, {"x-should-retry": "false"})).verdict is Verdict.FAIL


def test_retry_after_is_honoured_and_capped() -> None:
    failure = classify(_status_error(429, {"retry-after": "7"}))
    assert failure.retry_after == 7
    assert Backoff(max_seconds=60).delay(1, failure) == 7
    assert Backoff(max_seconds=2).delay(1, failure) == 2
    ms = classify(_status_error(529, {"retry-after-ms": "250", "retry-after": "9"}))
    assert ms.retry_after == 0.25


def test_exponential_backoff_without_retry_after() -> None:
    failure = classify(_status_error(500))
    rng = random.Random(1)
    delays = [Backoff(base_seconds=1, max_seconds=8).delay(n, failure, rng) for n in range(1, 7)]
    assert all(0 <= d <= min(8, 2 ** (n - 1)) for n, d in zip(range(1, 7), delays, strict=True))


def test_connection_errors_retry_and_auth_errors_are_fatal() -> None:
    request = httpx2.Request("POST", "http://x")
    assert classify(anthropic.APIConnectionError(request=request)).verdict is Verdict.RETRY
    with pytest.raises(BackendAuthError):
        raise_if_fatal(classify(_status_error(401)))


def test_only_a_failure_to_connect_is_known_not_to_have_been_billed() -> None:
    request = httpx2.Request("POST", "http://x")
    refused = anthropic.APIConnectionError(request=request)
    refused.__cause__ = httpx2.ConnectError("connection refused")
    dropped = anthropic.APIConnectionError(request=request)
    dropped.__cause__ = httpx2.RemoteProtocolError("server disconnected")
    assert classify(refused).maybe_billed is False
    assert classify(dropped).maybe_billed is True
    assert classify(anthropic.APITimeoutError(request=request)).maybe_billed is True
    assert classify(httpx2.ConnectTimeout("slow connect")).maybe_billed is False
    assert classify(_status_error(529)).maybe_billed is False  # the API answered: no charge


def _error_429(
    error_type: str,
    message: str,
    headers: dict[str, str] | None = None,
    status: int = 429,
    code: str | None = None,
) -> anthropic.APIStatusError:
    request = httpx2.Request("POST", "https://api.anthropic.com/v1/messages")
    error: dict[str, object] = {"type": error_type, "message": message}
    if code is not None:
        error["details"] = {"error_code": code}
    body = {"type": "error", "error": error, "request_id": "req_9"}
    response = httpx2.Response(status, headers=headers or {}, json=body, request=request)
    client = anthropic.Anthropic(api_key="k", base_url="https://api.anthropic.com")
    return client._make_status_error_from_response(response)


MONTHLY = "This request would exceed your organization's monthly spend limit for its API tier."


def test_spend_cap_by_error_code_is_its_own_verdict() -> None:
    exc = _error_429("rate_limit_error", "Over the limit.", code="enforced_spend_limit_reached")
    assert isinstance(exc, anthropic.RateLimitError)
    assert type(exc).__name__ == "EnforcedSpendLimitReachedError"  # the SDK's own subclass
    failure = classify(exc)
    assert failure.verdict is Verdict.SPEND_CAP
    assert failure.status == 429 and failure.retry_after is None
    assert failure.error_code == "enforced_spend_limit_reached"
    assert failure.error_type == "rate_limit_error"


@pytest.mark.parametrize(
    ("error_type", "message"),
    [
        ("enforced_spend_limit_reached", "Your organization has reached its spend limit."),
        ("rate_limit_error", "enforced_spend_limit_reached"),
        ("Enforced_Spend_Limit_Reached", ""),
        ("rate_limit_error", MONTHLY),
    ],
)
def test_spend_cap_by_type_or_wording(error_type: str, message: str) -> None:
    exc = _error_429(error_type, message)
    assert isinstance(exc, anthropic.RateLimitError)
    assert classify(exc).verdict is Verdict.SPEND_CAP


def test_contract_spend_limit_is_a_spend_cap_too() -> None:
    exc = _error_429("rate_limit_error", "Contract limit.", code="contract_spend_limit_reached")
    failure = classify(exc)
    assert failure.verdict is Verdict.SPEND_CAP
    assert spend_cap_message(failure) == (
        "the API refused the request: the organisation's contract spend limit is reached "
        "(429 contract_spend_limit_reached); raise it with your Anthropic account team"
    )


def test_spend_cap_wins_over_retry_hints() -> None:
    headers = {"x-should-retry": "true", "retry-after": "60"}
    failure = classify(_error_429("rate_limit_error", MONTHLY, headers))
    assert failure.verdict is Verdict.SPEND_CAP and failure.retry_after == 60


def test_usage_limit_400_is_a_spend_cap_too() -> None:
    message = "You have reached your specified API usage limits. You will regain access on 2027-01-01 at 00:00 UTC."
    failure = classify(_error_429("invalid_request_error", message, status=400))
    assert failure.verdict is Verdict.SPEND_CAP
    assert "You will regain access on 2027-01-01" in spend_cap_message(failure)


@pytest.mark.parametrize(
    ("error_type", "message", "headers", "code"),
    [
        (
            "rate_limit_error",
            "This request would exceed your account's rate limit.",
            {"retry-after": "3"},
            None,
        ),
        ("rate_limit_error", "Rate limited", {}, None),
        (
            "rate_limit_error",
            "Number of request tokens has exceeded your per-minute rate limit",
            {},
            None,
        ),
        (
            "rate_limit_error",
            "Usage is growing too fast.",
            {"retry-after": "3"},
            "ramp_limit_exceeded",
        ),
    ],
)
def test_ordinary_429s_still_retry(
    error_type: str, message: str, headers: dict[str, str], code: str | None
) -> None:
    exc = _error_429(error_type, message, headers, code=code)
    assert isinstance(exc, anthropic.RateLimitError)
    failure = classify(exc)
    assert failure.verdict is Verdict.RETRY
    assert failure.retry_after == (3.0 if headers else None)
    assert failure.error_code == code


def test_spend_cap_wording_elsewhere_does_not_change_other_statuses() -> None:
    assert classify(_error_429("api_error", "spend limit", status=500)).verdict is Verdict.RETRY
    assert classify(_error_429("authentication_error", "spend limit", status=401)).verdict is (
        Verdict.FATAL
    )
    payment = _error_429(
        "billing_error", "x", status=402, code="linked_organization_spend_limit_reached"
    )
    assert classify(payment).verdict is Verdict.FAIL


@given(st.text(max_size=80), st.text(max_size=80), st.none() | st.text(max_size=40))
def test_is_spend_cap_only_with_the_wording(
    error_type: str, message: str, code: str | None
) -> None:
    text = f"{code or ''} {error_type} {message}".lower()
    expected = (
        "spend_limit" in text or "spend limit" in text or "specified api usage limits" in text
    )
    assert is_spend_cap(error_type, message, code) is expected
    assert is_spend_cap(error_type, message, "enforced_spend_limit_reached")


def test_spend_cap_message_is_one_line_naming_the_monthly_cap() -> None:
    failure = classify(_error_429("rate_limit_error", MONTHLY, code="enforced_spend_limit_reached"))
    assert spend_cap_message(failure) == (
        "the API refused the request: the organisation's monthly spend cap is reached "
        "(429 enforced_spend_limit_reached); raise it in the Console, or wait for the next month"
    )
    worded = classify(_error_429("rate_limit_error", "would exceed your\nmonthly spend limit"))
    assert "(429 rate_limit_error: would exceed your monthly spend limit)" in spend_cap_message(
        worded
    )
    bare = Failure(Verdict.SPEND_CAP, None, "spend_limit", "x\n" * 1000, None, None)
    assert "\n" not in spend_cap_message(bare) and len(spend_cap_message(bare)) < 400
