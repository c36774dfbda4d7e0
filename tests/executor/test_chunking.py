from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from llmflow.executor.chunking import chunk_requests, request_bytes


def _requests(sizes: list[int]) -> list[tuple[str, dict[str, object]]]:
    return [(f"r{i}", {"text": "x" * size}) for i, size in enumerate(sizes)]


def test_request_count_limit() -> None:
    chunks = list(chunk_requests(_requests([1] * 25), max_requests=10))
    assert [len(c) for c in chunks] == [10, 10, 5]


def test_a_request_larger_than_a_batch_is_refused() -> None:
    with pytest.raises(ValueError, match="larger than a whole batch"):
        list(chunk_requests(_requests([5000]), max_bytes=1000))


@given(sizes=st.lists(st.integers(min_value=0, max_value=300), max_size=60), cap=st.integers(1, 7))
def test_chunks_keep_order_and_respect_both_limits(sizes: list[int], cap: int) -> None:
    requests = _requests(sizes)
    max_bytes = 1200
    chunks = list(chunk_requests(requests, max_requests=cap, max_bytes=max_bytes))
    assert [r for c in chunks for r in c] == requests
    for chunk in chunks:
        assert 1 <= len(chunk) <= cap
        assert sum(request_bytes(cid, p) for cid, p in chunk) + 64 <= max_bytes
