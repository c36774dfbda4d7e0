"""Datasets, read one item at a time: JSONL objects or CSV rows. Never loaded whole."""

from __future__ import annotations

import csv
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Literal

from llmflow.errors import DatasetError

DatasetType = Literal["jsonl", "csv"]
_CHUNK = 1 << 20


def iter_items(path: Path, kind: DatasetType, limit: int | None = None) -> Iterator[dict[str, Any]]:
    """Yield the items in order; a malformed record raises DatasetError naming its line."""
    reader = _iter_jsonl if kind == "jsonl" else _iter_csv
    for count, item in enumerate(reader(path)):
        if limit is not None and count >= limit:
            return
        yield item


def iter_lines(path: Path, limit: int | None = None) -> Iterator[bytes]:
    """Yield the raw non-blank lines of a JSONL file (for byte-level upper bounds)."""
    count = 0
    with _open_binary(path) as handle:
        for raw in handle:
            if raw.strip():
                if limit is not None and count >= limit:
                    return
                count += 1
                yield raw


def count_items(path: Path, kind: DatasetType, limit: int | None = None) -> int:
    """How many items the dataset has, counted by streaming (bounded memory)."""
    if kind == "csv":
        total = sum(1 for _ in _iter_csv(path))
    else:
        total = _count_nonblank_lines(path)
    return total if limit is None else min(total, limit)


def _open_binary(path: Path) -> Any:
    try:
        return path.open("rb")
    except OSError as exc:
        raise DatasetError(f"{path}: cannot read dataset: {exc.strerror or exc}") from exc


def _count_nonblank_lines(path: Path) -> int:
    count = 0
    with _open_binary(path) as handle:
        tail = b""
        while chunk := handle.read(_CHUNK):
            data = tail + chunk
            lines = data.split(b"\n")
            tail = lines.pop()
            count += sum(1 for line in lines if line.strip())
        if tail.strip():
            count += 1
    return count


def _iter_jsonl(path: Path) -> Iterator[dict[str, Any]]:
    with _open_binary(path) as handle:
        for number, raw in enumerate(handle, start=1):
            if not raw.strip():
                continue
            try:
                value = json.loads(raw)
            except (json.JSONDecodeError, UnicodeDecodeError) as exc:
                raise DatasetError(f"{path}:{number}: not a JSON line: {exc}") from exc
            if not isinstance(value, dict):
                raise DatasetError(f"{path}:{number}: each line must be a JSON object")
            yield value


def _iter_csv(path: Path) -> Iterator[dict[str, Any]]:
    try:
        handle = path.open(encoding="utf-8", newline="")
    except OSError as exc:
        raise DatasetError(f"{path}: cannot read dataset: {exc.strerror or exc}") from exc
    with handle:
        reader = csv.DictReader(handle)
        try:
            for row in reader:
                if None in row:
                    raise DatasetError(f"{path}:{reader.line_num}: more fields than the header")
                yield dict(row)
        except (csv.Error, UnicodeDecodeError) as exc:
            raise DatasetError(f"{path}:{reader.line_num}: {exc}") from exc
