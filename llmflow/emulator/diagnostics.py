"""Cache diagnostics: why a request could not reuse the prefix of an earlier one.

A request that sends ``diagnostics`` (even ``{"previous_message_id": null}``) has its
*fingerprint* stored under its response id: model and speed, a digest per tool, system
block and message block, their token counts, and a digest of the other settings that
change the prompt (thinking, effort, tool_choice, output format). Nothing of the text is
kept. The store is bounded (:data:`MAX_FINGERPRINTS`, oldest dropped first).

With ``previous_message_id`` set, the response's ``diagnostics`` compares the two
fingerprints in prefix order and names the first divergence, as the SDK's
``CacheMissReason`` does:

* ``model_changed`` (model or speed), ``tools_changed``, ``system_changed``,
  ``messages_changed`` (an earlier message block differs; appending blocks is not a
  change), each with ``cache_missed_input_tokens``: the previous request's prompt
  tokens from the divergence on (an estimate of what it could have read);
* ``unavailable``: model, tools, system and messages match but another
  prompt-affecting setting differs;
* ``previous_message_not_found``: no fingerprint under that id (never stored, or
  dropped from the bounded store).

When nothing diverged the response's ``diagnostics`` is ``null`` (the SDK's
``Message.diagnostics``: null when not requested or no divergence was detected); so is
it for ``previous_message_id: null``. The comparison is structural: it does not depend
on whether the cache actually hit (an expired entry is no divergence).
``cache_miss_reason`` is never null (the API's "diagnosis pending"): the emulator
always finishes the comparison before answering.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass
from typing import Any, Final

from llmflow.emulator.cache import cache_keys, segment_digest
from llmflow.emulator.validation import ParsedRequest

MAX_FINGERPRINTS: Final = 10_000
_PARTS: Final = ("tools", "system", "messages")


@dataclass(frozen=True, slots=True)
class Fingerprint:
    """Hashes and token counts of one request's prompt (never its text)."""

    model: str
    speed: str
    parts: dict[str, tuple[bytes, ...]]
    tokens: tuple[int, ...]
    settings: bytes

    @classmethod
    def of(cls, request: ParsedRequest) -> Fingerprint:
        """The fingerprint of a parsed request."""
        parts: dict[str, list[bytes]] = {part: [] for part in _PARTS}
        for segment in request.segments:
            parts[segment.part].append(segment_digest(segment))
        scope, salt = cache_keys(request)
        return cls(
            model=request.info.id,
            speed=request.options.speed or "standard",
            parts={part: tuple(found) for part, found in parts.items()},
            tokens=tuple(s.tokens for s in request.segments),
            settings=scope + salt,
        )


def _first_difference(old: tuple[bytes, ...], new: tuple[bytes, ...]) -> int | None:
    for i, (a, b) in enumerate(zip(old, new, strict=False)):
        if a != b:
            return i
    return None if len(old) == len(new) else min(len(old), len(new))


def _divergence(old: Fingerprint, new: Fingerprint) -> tuple[str, int] | None:
    """(reason, index of the first segment of ``old`` that is not reused)."""
    if old.model != new.model or old.speed != new.speed:
        return "model_changed", 0
    offset = 0
    for part in _PARTS:
        before, after = old.parts[part], new.parts[part]
        if part == "messages":
            after = after[: len(before)]
        at = _first_difference(before, after)
        if at is not None:
            return f"{part}_changed", offset + at
        offset += len(before)
    if old.settings != new.settings:
        return "unavailable", len(old.tokens)
    return None


def diagnose(old: Fingerprint | None, new: Fingerprint) -> dict[str, Any] | None:
    """The response's ``diagnostics`` comparing ``new`` with the earlier ``old``."""
    if old is None:
        return {"cache_miss_reason": {"type": "previous_message_not_found"}}
    found = _divergence(old, new)
    if found is None:
        return None
    reason, at = found
    if reason == "unavailable":
        return {"cache_miss_reason": {"type": reason}}
    missed = sum(old.tokens[at:])
    return {"cache_miss_reason": {"type": reason, "cache_missed_input_tokens": missed}}


class FingerprintStore:
    """Recent fingerprints by response id, oldest dropped beyond ``limit``."""

    def __init__(self, limit: int = MAX_FINGERPRINTS) -> None:
        self._limit = limit
        self._items: OrderedDict[str, Fingerprint] = OrderedDict()

    def clear(self) -> None:
        """Forget every fingerprint."""
        self._items.clear()

    def __len__(self) -> int:
        return len(self._items)

    def diagnostics(self, request: ParsedRequest, message_id: str) -> dict[str, Any] | None:
        """Store ``request``'s fingerprint under ``message_id`` (when it asked for
        diagnostics) and return the response's ``diagnostics``."""
        options = request.options
        if not options.diagnostics:
            return None
        fingerprint = Fingerprint.of(request)
        result = None
        if options.previous_message_id is not None:
            result = diagnose(self._items.get(options.previous_message_id), fingerprint)
        self._items[message_id] = fingerprint
        while len(self._items) > self._limit:
            self._items.popitem(last=False)
        return result
