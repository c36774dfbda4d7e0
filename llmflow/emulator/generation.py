"""Deterministic output: prose of a given length, and JSON instances of a schema.

Text is built from words of at most four letters, split into tokens of the model's
tokenizer family (:mod:`llmflow.emulator.tokenizer`: one token a word in ``old``, one or
two in ``new``), so the output token count is exact. How long an answer is comes from
the request (:mod:`llmflow.emulator.lengths`); the words come from its hash.
"""

from __future__ import annotations

import hashlib
import json
import math
import random
from typing import Any, Final

from llmflow.emulator.tokenizer import tokenize

_WORD_TEXT: Final = (
    "the a of and to in is it for on as with was by at be this from or are an "
    "not but all can had her one our out day get has him his how man new now old "
    "see two way who boy did its let put say she too use data plan cost run step "
    "text task fast slow good best save time tier word item list note job map "
    "key cell rows load pay test safe sure real core node link loop"
)
_WORDS: Final = tuple(_WORD_TEXT.split(" "))
_SENTENCE_EVERY: Final = 9


def request_digest(body: dict[str, Any], seed: int) -> bytes:
    """A stable digest of a request body (``stream`` excluded) and the emulator seed."""
    canonical = {k: v for k, v in body.items() if k != "stream"}
    text = json.dumps(canonical, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.blake2b(f"{seed}:{text}".encode(), digest_size=16).digest()


def prose(state: int, n: int, family: str = "old") -> list[str]:
    """Exactly ``n`` tokens of deterministic prose in ``family`` (one string a token)."""
    pieces: list[str] = []
    since_stop = 0
    x = state >> 9
    while len(pieces) < n:
        if since_stop >= _SENTENCE_EVERY and len(pieces) < n - 1:
            pieces.append(".")
            since_stop = 0
            continue
        x = (x * 6364136223846793005 + 1442695040888963407) & 0xFFFFFFFFFFFFFFFF
        word = _WORDS[(x >> 33) % len(_WORDS)]
        if not pieces or pieces[-1] == ".":
            word = word.capitalize()
        pieces.extend(tokenize(word if not pieces else " " + word, family))
        since_stop += 1
    del pieces[n:]
    return pieces


def text_tokens(
    digest: bytes, target: int, limit: int, family: str = "old", *, sentence: bool = True
) -> tuple[list[str], bool]:
    """The first ``min(target, limit)`` tokens of a deterministic text of ``target`` tokens
    (a cut text is a prefix of the whole); True when cut by the limit. A complete text of
    more than one token ends with a full stop when ``sentence`` (a label does not)."""
    state = int.from_bytes(digest, "big")
    n = min(target, limit)
    # prose(n) and prose(m > n) differ at most in their n-th token (a full stop is never
    # put last): draw one more token than is kept when cutting.
    pieces = prose(state, min(target, n + 1), family)[:n]
    if sentence and n == target and n > 1 and pieces[-1] != ".":
        pieces[-1] = "."
    return pieces, target > limit


def apply_stop_sequences(pieces: list[str], stops: list[str]) -> tuple[list[str], str | None]:
    """Cut ``pieces`` before the first stop sequence the text contains."""
    if not stops:
        return pieces, None
    text = "".join(pieces)
    best: tuple[int, str] | None = None
    for stop in stops:
        at = text.find(stop)
        if at >= 0 and (best is None or at < best[0]):
            best = (at, stop)
    if best is None:
        return pieces, None
    kept: list[str] = []
    length = 0
    for piece in pieces:
        if length + len(piece) > best[0]:
            break
        kept.append(piece)
        length += len(piece)
    return kept, best[1]


class SchemaInstance:
    """Builds a JSON value that conforms to a (JSON Schema) ``input_schema``."""

    def __init__(self, root: dict[str, Any], rng: random.Random) -> None:
        self._root = root
        self._rng = rng

    def build(self) -> Any:
        """An instance of the root schema."""
        return self._value(self._root, 0)

    def _resolve(self, schema: dict[str, Any]) -> dict[str, Any]:
        seen = 0
        while "$ref" in schema and seen < 32:
            ref = schema["$ref"]
            node: Any = self._root
            if isinstance(ref, str) and ref.startswith("#"):
                for part in ref[1:].strip("/").split("/"):
                    if part:
                        node = node.get(part.replace("~1", "/").replace("~0", "~"), {})
            schema = node if isinstance(node, dict) else {}
            seen += 1
        return schema

    def _value(self, schema: Any, depth: int) -> Any:
        if not isinstance(schema, dict):
            return None
        schema = self._resolve(schema)
        if "const" in schema:
            return schema["const"]
        if isinstance(schema.get("enum"), list) and schema["enum"]:
            return self._rng.choice(schema["enum"])
        for key in ("anyOf", "oneOf"):
            if isinstance(schema.get(key), list) and schema[key]:
                return self._value(schema[key][0], depth + 1)
        if isinstance(schema.get("allOf"), list):
            merged: dict[str, Any] = {}
            for part in schema["allOf"]:
                part = self._resolve(part) if isinstance(part, dict) else {}
                for k, v in part.items():
                    if k in ("properties",) and k in merged:
                        merged[k] = {**merged[k], **v}
                    elif k == "required" and k in merged:
                        merged[k] = list(dict.fromkeys([*merged[k], *v]))
                    else:
                        merged.setdefault(k, v)
            rest = {k: v for k, v in schema.items() if k != "allOf"}
            return self._value({**merged, **rest}, depth + 1)
        stype = schema.get("type")
        if isinstance(stype, list):
            non_null = [t for t in stype if t != "null"]
            stype = non_null[0] if non_null else "null"
        if stype is None:
            if "properties" in schema:
                stype = "object"
            elif "items" in schema:
                stype = "array"
            else:
                stype = "string"
        return self._typed(stype, schema, depth)

    def _typed(self, stype: str, schema: dict[str, Any], depth: int) -> Any:
        if stype == "object":
            return self._object(schema, depth)
        if stype == "array":
            return self._array(schema, depth)
        if stype == "integer":
            return self._integer(schema)
        if stype == "number":
            return self._number(schema)
        if stype == "boolean":
            return self._rng.random() < 0.5
        if stype == "null":
            return None
        return self._string(schema)

    def _object(self, schema: dict[str, Any], depth: int) -> dict[str, Any]:
        props = schema.get("properties") or {}
        required = set(schema.get("required") or [])
        out: dict[str, Any] = {}
        for name, sub in props.items():
            if name in required or depth < 3:
                out[name] = self._value(sub, depth + 1)
        for name in required:
            if name not in out:
                extra = schema.get("additionalProperties")
                out[name] = self._value(extra if isinstance(extra, dict) else {}, depth + 1)
        min_props = schema.get("minProperties")
        if isinstance(min_props, int):
            i = 0
            while len(out) < min_props:
                out.setdefault(f"key_{i}", "x")
                i += 1
        return out

    def _array(self, schema: dict[str, Any], depth: int) -> list[Any]:
        lo = int(schema.get("minItems", 0))
        hi = int(schema.get("maxItems", max(lo, 3)))
        hi = max(lo, min(hi, lo + 3))
        n = self._rng.randint(max(lo, min(1, hi)), hi) if depth < 4 else lo
        prefix = schema.get("prefixItems") or []
        items = schema.get("items", {})
        out = [self._value(prefix[i] if i < len(prefix) else items, depth + 1) for i in range(n)]
        if schema.get("uniqueItems"):
            unique: list[Any] = []
            for value in out:
                if value not in unique:
                    unique.append(value)
            out = unique
        return out

    def _bounds(
        self, schema: dict[str, Any], default_lo: float, default_hi: float
    ) -> tuple[float, float]:
        lo, hi = default_lo, default_hi
        if isinstance(schema.get("minimum"), int | float):
            lo = float(schema["minimum"])
        if isinstance(schema.get("maximum"), int | float):
            hi = float(schema["maximum"])
        if isinstance(schema.get("exclusiveMinimum"), int | float):
            lo = float(schema["exclusiveMinimum"])
        if isinstance(schema.get("exclusiveMaximum"), int | float):
            hi = float(schema["exclusiveMaximum"])
        if "minimum" in schema and "maximum" not in schema and "exclusiveMaximum" not in schema:
            hi = lo + 100
        has_lo = "minimum" in schema or "exclusiveMinimum" in schema
        if ("maximum" in schema or "exclusiveMaximum" in schema) and not has_lo:
            lo = hi - 100
        return lo, hi

    def _integer(self, schema: dict[str, Any]) -> int:
        lo_f, hi_f = self._bounds(schema, 0, 100)
        lo, hi = math.ceil(lo_f), math.floor(hi_f)
        if "exclusiveMinimum" in schema and lo == lo_f:
            lo += 1
        if "exclusiveMaximum" in schema and hi == hi_f:
            hi -= 1
        multiple = schema.get("multipleOf")
        if isinstance(multiple, int) and multiple > 0:
            first = -(-lo // multiple) * multiple
            if first <= hi:
                steps = (hi - first) // multiple
                return first + multiple * self._rng.randint(0, steps)
        return self._rng.randint(lo, hi) if lo <= hi else lo

    def _number(self, schema: dict[str, Any]) -> float:
        lo, hi = self._bounds(schema, 0.0, 100.0)
        if hi <= lo:
            return lo
        value = round(lo + (hi - lo) * (0.05 + 0.9 * self._rng.random()), 3)
        return min(max(value, lo + (hi - lo) * 0.01), hi - (hi - lo) * 0.01)

    def _string(self, schema: dict[str, Any]) -> str:
        fmt = schema.get("format")
        if fmt == "date-time":
            return "2026-01-01T00:00:00Z"
        if fmt == "date":
            return "2026-01-01"
        if fmt == "email":
            return "user@example.com"
        if fmt in ("uri", "url"):
            return "https://example.com/"
        if fmt == "uuid":
            return "00000000-0000-4000-8000-000000000000"
        lo = int(schema.get("minLength", 0))
        hi = int(schema.get("maxLength", max(lo, 24)))
        words: list[str] = []
        while len(" ".join(words)) < max(lo, min(hi, 12)):
            words.append(self._rng.choice(_WORDS))
        text = " ".join(words)
        if len(text) < lo:
            text = text.ljust(lo, "x")
        return text[:hi]


def schema_instance(schema: dict[str, Any], digest: bytes) -> Any:
    """A deterministic instance of ``schema`` for this request digest."""
    rng = random.Random(int.from_bytes(digest, "big"))
    return SchemaInstance(schema, rng).build()
