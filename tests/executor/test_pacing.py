from __future__ import annotations

import math
import time
from datetime import UTC, datetime

import httpx2
import pytest
from hypothesis import given
from hypothesis import strategies as st
from structlog.testing import capture_logs

from llmflow.executor.pacing import RatePacer, parse_rfc3339

WALL = 1_800_000_000.0  # POSIX seconds at monotonic NOW
NOW = 1_000.0


def _rfc3339(posix: float) -> str:
    return datetime.fromtimestamp(posix, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _headers(
    kind: str, limit: int | str, remaining: int | str, reset_in: float | None = None
) -> dict[str, str]:
    headers = {
        f"anthropic-ratelimit-{kind}-limit": str(limit),
        f"anthropic-ratelimit-{kind}-remaining": str(remaining),
    }
    if reset_in is not None:
        headers[f"anthropic-ratelimit-{kind}-reset"] = _rfc3339(WALL + reset_in)
    return headers


def _pacer() -> RatePacer:
    """A pacer whose wall clock reads WALL when the monotonic clock reads NOW."""
    return RatePacer(clock=lambda: NOW, wall_clock=lambda: WALL)


def _reserve(pacer: RatePacer, now: float = NOW, inp: int = 0, out: int = 0) -> float:
    return pacer.reserve(input_tokens=inp, output_tokens=out, now=now)


# ---- headers --------------------------------------------------------------------------


def test_no_headers_never_delay() -> None:
    pacer = _pacer()
    pacer.observe({}, NOW)
    pacer.observe({"content-type": "application/json"}, NOW)
    assert [_reserve(pacer, inp=10**9, out=10**9) for _ in range(100)] == [0.0] * 100


def test_remaining_without_a_known_limit_never_delays() -> None:
    pacer = _pacer()
    pacer.observe({"anthropic-ratelimit-requests-remaining": "0"}, NOW)
    assert _reserve(pacer) == 0.0


@pytest.mark.parametrize(
    "headers",
    [
        _headers("requests", "lots", "0"),
        _headers("requests", "nan", "0"),
        _headers("requests", "-5", "0"),
        _headers("requests", "0", "0"),
        _headers("requests", "", ""),
    ],
)
def test_garbled_limits_are_ignored(headers: dict[str, str]) -> None:
    pacer = _pacer()
    pacer.observe(headers, NOW)
    assert _reserve(pacer) == 0.0


def test_garbled_remaining_and_reset_keep_the_local_view() -> None:
    pacer = _pacer()
    pacer.observe(_headers("requests", 60, 0), NOW)
    pacer.observe(
        {
            "anthropic-ratelimit-requests-limit": "60",
            "anthropic-ratelimit-requests-remaining": "many",
            "anthropic-ratelimit-requests-reset": "tomorrow",
        },
        NOW,
    )
    assert _reserve(pacer) == pytest.approx(1.0)  # still the remaining 0 seen first


def test_header_names_are_case_insensitive_and_httpx_headers_work() -> None:
    pacer = _pacer()
    pacer.observe({k.upper(): v for k, v in _headers("requests", 60, 0).items()}, NOW)
    assert _reserve(pacer) == pytest.approx(1.0)
    other = _pacer()
    other.observe(httpx2.Headers(_headers("output-tokens", 6000, 0)), NOW)
    assert _reserve(other, out=100) == pytest.approx(1.0)


def test_legacy_combined_tokens_headers_are_not_a_limit() -> None:
    pacer = _pacer()
    pacer.observe(_headers("tokens", 60, 0), NOW)
    assert _reserve(pacer, inp=100, out=100) == 0.0


@pytest.mark.parametrize(
    ("text", "posix"),
    [
        ("2027-01-01T00:00:00Z", 1798761600.0),
        ("2027-01-01T00:00:00.500Z", 1798761600.5),
        ("2027-01-01T01:00:00+01:00", 1798761600.0),
        ("2027-01-01T00:00:00", 1798761600.0),
        ("soon", None),
        ("", None),
    ],
)
def test_parse_rfc3339(text: str, posix: float | None) -> None:
    assert parse_rfc3339(text) == posix


@given(
    st.dictionaries(
        st.sampled_from(
            [
                f"anthropic-ratelimit-{kind}-{part}"
                for kind in ("requests", "input-tokens", "output-tokens", "tokens")
                for part in ("limit", "remaining", "reset")
            ]
        )
        | st.text(max_size=30),
        st.text(max_size=40)
        | st.integers(-(10**12), 10**12).map(str)
        | st.floats(allow_nan=True).map(str),
    ),
    st.integers(0, 10**6),
    st.integers(0, 10**6),
)
def test_arbitrary_headers_never_raise(headers: dict[str, str], inp: int, out: int) -> None:
    pacer = _pacer()
    pacer.observe(headers, NOW)
    delay = _reserve(pacer, inp=inp, out=out)
    assert delay >= 0 and math.isfinite(delay)


# ---- bucket arithmetic ----------------------------------------------------------------


def test_sixty_rpm_exhausted_refills_one_request_per_second() -> None:
    pacer = _pacer()
    pacer.observe(_headers("requests", 60, 0, reset_in=60), NOW)
    assert _reserve(pacer) == pytest.approx(1.0)
    assert _reserve(pacer, now=NOW + 1.0) == pytest.approx(1.0)  # the first took the refill
    assert _reserve(pacer, now=NOW + 3.0) == pytest.approx(0.0)  # a second refilled in 2 s


def test_concurrent_reservations_queue_behind_one_another() -> None:
    pacer = _pacer()
    pacer.observe(_headers("requests", 60, 0, reset_in=60), NOW)
    delays = [_reserve(pacer) for _ in range(32)]
    assert delays == pytest.approx([float(n) for n in range(1, 33)])


def test_reset_header_bounds_the_wait() -> None:
    # A window that empties at once (as the emulator's does): everything is back at reset.
    pacer = _pacer()
    pacer.observe(_headers("requests", 60, 0, reset_in=30), NOW)
    delays = [_reserve(pacer) for _ in range(32)]
    assert delays[:29] == pytest.approx([float(n) for n in range(1, 30)])
    assert delays[29:] == pytest.approx([30.0] * 3)
    assert delays == sorted(delays)


def test_reset_restores_the_limit_less_what_was_reserved_since() -> None:
    pacer = _pacer()
    pacer.observe(_headers("requests", 60, 0, reset_in=5), NOW)
    for _ in range(50):
        _reserve(pacer)
    # At reset: 60 back, 50 of them promised already; the continuous refill gives only 10 - 50.
    assert _reserve(pacer, now=NOW + 5) == 0.0
    assert [_reserve(pacer, now=NOW + 5) for _ in range(9)] == [0.0] * 9
    assert _reserve(pacer, now=NOW + 5) > 0


def test_the_bucket_refills_up_to_the_limit_only() -> None:
    pacer = _pacer()
    pacer.observe(_headers("requests", 60, 0), NOW)
    hour_later = NOW + 3600
    assert [_reserve(pacer, now=hour_later) for _ in range(60)] == [0.0] * 60
    assert _reserve(pacer, now=hour_later) == pytest.approx(1.0)


def test_tokens_buckets_and_the_slowest_limit_wins() -> None:
    pacer = _pacer()
    pacer.observe(
        _headers("requests", 1000, 1000)
        | _headers("input-tokens", 600_000, 5_000)
        | _headers("output-tokens", 60_000, 0),
        NOW,
    )
    # input: 10,000 wanted, 5,000 left, refills 10,000/s -> 0.5 s; output: 2,000 at 1,000/s -> 2 s
    assert _reserve(pacer, inp=10_000, out=2_000) == pytest.approx(2.0)
    assert _reserve(pacer, inp=0, out=1_000) == pytest.approx(3.0)


def test_a_request_above_the_whole_limit_waits_for_a_full_bucket_only() -> None:
    pacer = _pacer()
    pacer.observe(_headers("input-tokens", 6_000, 0), NOW)
    assert _reserve(pacer, inp=1_000_000) == pytest.approx(60.0)


def test_a_new_observation_replaces_the_local_view() -> None:
    pacer = _pacer()
    pacer.observe(_headers("requests", 60, 0), NOW)
    for _ in range(10):
        _reserve(pacer)
    pacer.observe(_headers("requests", 60, 30), NOW + 1)
    assert _reserve(pacer, now=NOW + 1) == 0.0


def test_plenty_of_capacity_costs_nothing() -> None:
    pacer = _pacer()
    pacer.observe(
        _headers("requests", 1000, 999, 1)
        | _headers("input-tokens", 2_000_000, 1_999_000, 1)
        | _headers("output-tokens", 400_000, 399_000, 1),
        NOW,
    )
    assert {_reserve(pacer, inp=1_000, out=100) for _ in range(500)} == {0.0}


@given(
    limit=st.integers(1, 10_000),
    remaining=st.integers(0, 10_000),
    costs=st.lists(st.integers(1, 500), min_size=1, max_size=60),
)
def test_reservations_never_outrun_the_bucket(limit: int, remaining: int, costs: list[int]) -> None:
    """Whatever is released by time t fits in what remained plus what refilled by t."""
    pacer = _pacer()
    pacer.observe(_headers("input-tokens", limit, remaining), NOW)
    released = 0.0
    rate = limit / 60
    previous = 0.0
    for cost in costs:
        delay = _reserve(pacer, inp=cost)
        assert delay >= previous - 1e-9  # a later reservation never overtakes an earlier one
        previous = delay
        released += min(cost, limit)
        assert released <= min(remaining, limit) + rate * delay + 1e-6 * max(1.0, released)


# ---- retry-after ----------------------------------------------------------------------


def test_backoff_holds_every_request_until_retry_after_has_passed() -> None:
    pacer = _pacer()
    pacer.backoff(7.0, NOW)
    assert _reserve(pacer) == pytest.approx(7.0)
    assert _reserve(pacer, now=NOW + 5) == pytest.approx(2.0)
    assert _reserve(pacer, now=NOW + 7) == 0.0


def test_backoff_keeps_the_latest_release_time() -> None:
    pacer = _pacer()
    pacer.backoff(10.0, NOW)
    pacer.backoff(1.0, NOW + 1)
    assert _reserve(pacer, now=NOW + 2) == pytest.approx(8.0)


@pytest.mark.parametrize("retry_after", [None, 0.0, -3.0, math.nan, math.inf])
def test_backoff_without_a_usable_retry_after_holds_nothing(retry_after: float | None) -> None:
    pacer = _pacer()
    pacer.backoff(retry_after, NOW)
    assert _reserve(pacer) == 0.0


def test_backoff_and_buckets_take_the_longer_wait() -> None:
    pacer = _pacer()
    pacer.observe(_headers("requests", 60, 0), NOW)
    pacer.backoff(3.0, NOW)
    assert _reserve(pacer) == pytest.approx(3.0)
    assert [_reserve(pacer) for _ in range(3)] == pytest.approx([3.0, 3.0, 4.0])


# ---- wait -----------------------------------------------------------------------------


async def test_wait_sleeps_on_the_injected_clock_and_logs_only_when_it_waits() -> None:
    ticks = [NOW]
    slept: list[float] = []

    async def sleep(seconds: float) -> None:
        slept.append(seconds)
        ticks[0] += seconds

    pacer = RatePacer(clock=lambda: ticks[0], wall_clock=lambda: WALL, sleep=sleep)
    with capture_logs() as logs:
        await pacer.wait(input_tokens=10, output_tokens=10)
        pacer.observe(_headers("output-tokens", 600, 0), ticks[0])
        await pacer.wait(input_tokens=10, output_tokens=20)
    assert slept == pytest.approx([2.0])
    assert [(e["event"], e["limit"], e["log_level"]) for e in logs] == [
        ("ratelimit.paced", "output-tokens", "info")
    ]
    assert logs[0]["delay"] == pytest.approx(2.0)


async def test_wait_with_the_default_clock_and_sleep_honours_the_backoff() -> None:
    pacer = RatePacer()
    start = time.monotonic()
    pacer.backoff(0.02, start)
    await pacer.wait(input_tokens=1, output_tokens=1)
    assert time.monotonic() >= start + 0.02


# ---- reading the headers less often while every bucket is roomy -----------------------


def test_roomy_headers_are_not_read_again_within_the_quiet_interval() -> None:
    from llmflow.executor.pacing import QUIET_SECONDS

    pacer = _pacer()
    pacer.observe(_headers("requests", 100, 100, reset_in=60), NOW)
    # Read within the quiet interval: ignored (the local count still holds 100).
    pacer.observe(_headers("requests", 100, 0, reset_in=60), NOW + QUIET_SECONDS / 2)
    assert _reserve(pacer, now=NOW + QUIET_SECONDS / 2) == 0.0
    # Read after it: the API's count replaces the local one.
    pacer.observe(_headers("requests", 100, 0, reset_in=60), NOW + QUIET_SECONDS)
    assert _reserve(pacer, now=NOW + QUIET_SECONDS) > 0.0


def test_a_low_bucket_or_a_429_is_read_on_every_response() -> None:
    pacer = _pacer()
    pacer.observe(_headers("requests", 100, 20, reset_in=60), NOW)  # below a quarter
    pacer.observe(_headers("requests", 100, 0, reset_in=60), NOW)
    assert _reserve(pacer) > 0.0

    roomy = _pacer()
    roomy.observe(_headers("requests", 100, 100, reset_in=60), NOW)
    roomy.observe(_headers("requests", 100, 0, reset_in=60), NOW, always=True)
    assert _reserve(roomy) > 0.0
