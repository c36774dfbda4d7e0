"""Turning pydantic validation errors into positioned, readable diagnostics."""

from __future__ import annotations

import difflib
import types
import typing
from collections.abc import Iterable, Sequence
from typing import Any

from pydantic import BaseModel, ValidationError
from pydantic_core import ErrorDetails

from llmflow.errors import Diagnostic
from llmflow.spec._yaml import NodePath, Positions, dotted


def did_you_mean(word: str, choices: Iterable[str]) -> str:
    """`` (did you mean 'x'?)`` when a close choice exists, else an empty string."""
    options = list(choices)
    close = difflib.get_close_matches(word, options, n=1, cutoff=0.6)
    if not close and len(word) >= 4:
        # A misspelt stem of a longer word: 'clasify' for 'classification'.
        scored = [
            (difflib.SequenceMatcher(None, word, o[: len(word) + 1]).ratio(), o) for o in options
        ]
        close = [o for score, o in sorted(scored, reverse=True) if score >= 0.7][:1]
    return f" (did you mean '{close[0]}'?)" if close else ""


def near_miss(word: str, choices: Iterable[str]) -> str | None:
    """A choice ``word`` is almost certainly a misspelling of (stricter than a hint)."""
    best: tuple[float, str] | None = None
    for choice in choices:
        score = difflib.SequenceMatcher(None, word, choice).ratio()
        if len(word) >= 4:  # a misspelt stem of a longer name: 'clasify' / 'classification'
            stem = difflib.SequenceMatcher(None, word, choice[: len(word) + 1]).ratio()
            score = max(score, stem)
        if best is None or score > best[0]:
            best = (score, choice)
    return best[1] if best is not None and best[0] >= 0.8 else None


def known(choices: Iterable[str], limit: int = 12) -> str:
    """A short comma-separated list of choices for an error message."""
    items = sorted(choices)
    shown = ", ".join(items[:limit])
    return shown + (", ..." if len(items) > limit else "")


def from_validation_error(
    error: ValidationError, model: type[BaseModel], data: Any, display: str, positions: Positions
) -> list[Diagnostic]:
    """One diagnostic per pydantic error, positioned on the offending YAML node.

    Errors from the branches of a union that the data plainly is not (a string where a
    mapping stands) are dropped in favour of the branch that matches.
    """
    found: list[tuple[NodePath, int, Diagnostic]] = []
    for detail in error.errors(include_url=False):
        path, skipped = resolve_loc(detail["loc"], data, missing=detail["type"] == "missing")
        found.append((path, skipped, _diagnostic(detail, path, model, data, display, positions)))
    # Within one data path, errors that resolved fewer loc parts are union noise.
    best: dict[NodePath, int] = {}
    for path, skipped, _ in found:
        best[path] = min(best.get(path, skipped), skipped)
    seen: set[str] = set()
    out: list[Diagnostic] = []
    for path, skipped, diag in found:
        if skipped == best[path] and str(diag) not in seen:
            seen.add(str(diag))
            out.append(diag)
    return _drop_union_shadows(out)


def _drop_union_shadows(diags: list[Diagnostic]) -> list[Diagnostic]:
    """Drop 'should be a valid string' next to deeper errors of the same node."""
    keys = [d.key for d in diags]
    return [
        d
        for d in diags
        if not (
            "should be a valid string" in d.message
            and any(k != d.key and k.startswith(d.key) for k in keys)
        )
    ]


def resolve_loc(loc: Sequence[str | int], data: Any, *, missing: bool) -> tuple[NodePath, int]:
    """The data path a pydantic ``loc`` points at, and how many loc parts were skipped."""
    path: list[str | int] = []
    node, skipped = data, 0
    for part in loc:
        if isinstance(node, dict) and isinstance(part, str) and part in node:
            node = node[part]
            path.append(part)
        elif isinstance(node, list) and isinstance(part, int) and 0 <= part < len(node):
            node = node[part]
            path.append(part)
        else:
            skipped += 1
            if missing and isinstance(node, dict) and isinstance(part, str) and part == loc[-1]:
                path.append(part)  # a missing key: name it, position falls back to the parent
                break
    return tuple(path), skipped


def _diagnostic(
    detail: ErrorDetails,
    path: NodePath,
    model: type[BaseModel],
    data: Any,
    display: str,
    positions: Positions,
) -> Diagnostic:
    kind = detail["type"]
    key = dotted(path)
    if kind == "extra_forbidden":
        pos = positions.key(path)
        name = str(path[-1]) if path else ""
        allowed = _allowed_keys(model, detail["loc"][:-1])
        hint = did_you_mean(name, allowed)
        listing = f"; allowed: {known(allowed, 20)}" if allowed and not hint else ""
        return Diagnostic(display, pos.line, pos.col, key, f"unknown key '{name}'{hint}{listing}")
    if kind == "missing":
        parent = path[:-1]
        pos = positions.key(parent) if parent else positions.value(parent)
        return Diagnostic(display, pos.line, pos.col, key, f"missing required key '{path[-1]}'")
    pos = positions.value(path)
    if kind == "union_tag_invalid":
        ctx = detail.get("ctx", {})
        tag = str(ctx.get("tag", ""))
        expected = str(ctx.get("expected_tags", ""))
        field = str(ctx.get("discriminator", "type")).strip("'")
        pos = positions.value((*path, field))
        names = [t.strip(" '") for t in expected.split(",")]
        message = f"unknown {field} '{tag}' (expected one of {expected}){did_you_mean(tag, names)}"
        return Diagnostic(display, pos.line, pos.col, f"{key}.{field}", message)
    message = detail["msg"]
    message = message[0].lower() + message[1:] if message else kind
    message = message.removeprefix("value error, ")
    if kind not in {"missing", "model_type", "dict_type"} and _is_scalar(detail.get("input")):
        message += f", got {detail['input']!r}"
    return Diagnostic(display, pos.line, pos.col, key, message)


def _is_scalar(value: Any) -> bool:
    return isinstance(value, str | int | float | bool) or value is None


def _allowed_keys(model: type[BaseModel], loc: Sequence[str | int]) -> list[str]:
    """Field names (by alias) of the model standing at ``loc`` below ``model``."""
    current: Any = model
    for part in loc:
        current = _step_into(current, part)
        if current is None:
            return []
    current = _unwrap(current)
    if isinstance(current, type) and issubclass(current, BaseModel):
        return [info.alias or name for name, info in current.model_fields.items()]
    return []


def _unwrap(tp: Any) -> Any:
    while typing.get_origin(tp) is typing.Annotated:
        tp = typing.get_args(tp)[0]
    return tp


def _step_into(tp: Any, part: str | int) -> Any:
    tp = _unwrap(tp)
    origin = typing.get_origin(tp)
    if isinstance(tp, type) and issubclass(tp, BaseModel):
        for name, info in tp.model_fields.items():
            if part in (name, info.alias):
                return info.annotation
        return None
    if origin is dict:
        return typing.get_args(tp)[1]
    if origin is list:
        return typing.get_args(tp)[0]
    if origin in (typing.Union, types.UnionType):
        for member in typing.get_args(tp):
            member = _unwrap(member)
            if isinstance(member, type) and issubclass(member, BaseModel):
                tag_field = member.model_fields.get("type")
                tags = typing.get_args(tag_field.annotation) if tag_field else ()
                if part == member.__name__ or part in tags:
                    return member
        return None
    return None
