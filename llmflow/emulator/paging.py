"""Cursor pagination as the API's list endpoints do it (``limit``, ``after_id``,
``before_id``; ``data``, ``has_more``, ``first_id``, ``last_id``)."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any, Final, TypeVar

from llmflow.emulator.errors import invalid

T = TypeVar("T")

DEFAULT_LIMIT: Final = 20
MAX_LIMIT: Final = 1000


def parse_limit(query: Mapping[str, str]) -> int:
    """The ``limit`` query parameter (1-1000, default 20)."""
    try:
        limit = int(query.get("limit", str(DEFAULT_LIMIT)))
    except ValueError:
        raise invalid("limit: Input should be a valid integer") from None
    if not 1 <= limit <= MAX_LIMIT:
        raise invalid(f"limit: Input should be between 1 and {MAX_LIMIT}")
    return limit


def page(
    items: Sequence[T],
    ids: Sequence[str],
    *,
    before_id: str | None,
    after_id: str | None,
    limit: int,
) -> tuple[list[T], bool]:
    """The items just before ``before_id`` or just after ``after_id`` (else the first
    ones), and whether more lie in that direction."""
    if before_id is not None:
        if before_id not in ids:
            raise invalid(f"before_id: {before_id} not found")
        end = ids.index(before_id)
        start = max(0, end - limit)
        return list(items[start:end]), start > 0
    start = 0
    if after_id is not None:
        if after_id not in ids:
            raise invalid(f"after_id: {after_id} not found")
        start = ids.index(after_id) + 1
    return list(items[start : start + limit]), start + limit < len(items)


def page_json(
    chunk: Sequence[T], has_more: bool, render: Callable[[T], dict[str, Any]]
) -> dict[str, Any]:
    """The list response of a page."""
    data = [render(item) for item in chunk]
    return {
        "data": data,
        "has_more": has_more,
        "first_id": data[0]["id"] if data else None,
        "last_id": data[-1]["id"] if data else None,
    }
