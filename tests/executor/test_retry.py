from __future__ import annotations

import random

import anthropic
import httpx2
import pytest

from llmflow.errors import BackendAuthError
from llmflow.executor.retry import Backoff, Verdict, classify, raise_if_fatal


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
