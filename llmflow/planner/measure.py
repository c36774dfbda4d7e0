"""Sizing a step's requests without sending them.

Each request of a step is split into its cacheable **prefix** (the forced output tool on
models without structured outputs, then the leading static system blocks not marked
``cache: false``) and the **rest** (request and message framing, an
``output_config.format`` schema, the other system blocks and the prompt).

* A ``for_each`` over a dataset streams it once: memory stays bounded. Where a
  template only interpolates item fields directly (``{{ item.body }}``), a request's
  bound is computed exactly from the field values without rendering; otherwise each
  item is rendered. The expected estimate renders a deterministic sample of items
  (every k-th) and scales by bytes (it is exact when the sample covers every item).
* Upstream outputs are stand-in texts: ``expected_output_tokens`` long for the
  estimate, ``max_tokens`` (+ slack) bytes for the bound. Long upstream lists are
  rendered with one and two outputs and extrapolated linearly.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final, Literal

from jinja2 import TemplateError

from llmflow.errors import DatasetError
from llmflow.planner.requests import (
    RequestOptions,
    build_params,
    count_params,
    output_format,
    output_tool,
)
from llmflow.planner.tokens import (
    BLOCK_FRAMING,
    EST_BLOCK_FRAMING,
    EST_MESSAGE_FRAMING,
    EST_REQUEST_FRAMING,
    MESSAGE_FRAMING,
    REQUEST_FRAMING,
    ZERO_SIZE,
    Size,
    block_size,
    estimate_text,
    tool_size,
    utf8_len,
)
from llmflow.spec.datasets import DatasetType, count_items, iter_items
from llmflow.spec.pipeline import Step
from llmflow.spec.templates import references, render

#: Items rendered in full for the expected estimate of a dataset step.
SAMPLE_ITEMS: Final = 256
#: Requests per step counted with count_tokens under ``--exact-tokens``.
EXACT_SAMPLES: Final = 8
#: Upstream lists up to this long are rendered whole; longer ones are extrapolated.
WHOLE_LIST: Final = 16
#: Tokens added to each upstream output's bound (re-tokenisation where texts join).
UPSTREAM_SLACK: Final = 8

_REST_FRAMING: Final = Size(
    REQUEST_FRAMING + MESSAGE_FRAMING + BLOCK_FRAMING,
    EST_REQUEST_FRAMING + EST_MESSAGE_FRAMING + EST_BLOCK_FRAMING,
)
_SYSTEM_FRAMING: Final = Size(BLOCK_FRAMING, EST_BLOCK_FRAMING)


class StandIn(str):
    """An upstream output at plan time: text of a planned size.

    A structured output's fields (``item.severity``) are stand-ins too, each as long
    as ``field_text`` (the whole output for the bound, a share of it for the estimate).
    """

    field_text: str

    def __new__(cls, text: str, field_text: str | None = None) -> StandIn:
        self = super().__new__(cls, text)
        self.field_text = text if field_text is None else field_text
        return self

    def __getattr__(self, name: str) -> StandIn:
        if name.startswith("_"):
            raise AttributeError(name)
        return StandIn(self.field_text)

    def __getitem__(self, key: Any) -> Any:
        if isinstance(key, str):
            return StandIn(self.field_text)
        return str.__getitem__(self, key)


@dataclass(frozen=True, slots=True)
class Upstream:
    """What a later step can know of a step's outputs before it runs."""

    count: int
    expected_tokens: int
    max_tokens: int
    fields: int = 0  # properties of a structured output (0: plain text)

    def stand_in(self, mode: Literal["bound", "expected"]) -> StandIn:
        """One output: ``max_tokens + slack`` bytes, or ``expected_tokens`` estimated tokens."""
        if mode == "bound":
            return StandIn("x" * (self.max_tokens + UPSTREAM_SLACK))
        share = self.expected_tokens // max(1, self.fields)
        return StandIn("x" * (4 * self.expected_tokens), "x" * (4 * max(1, share)))


@dataclass(frozen=True, slots=True)
class PrefixSegment:
    """One cacheable unit of a step's prefix (the tool, or a system block by index)."""

    kind: Literal["tool", "system"]
    index: int
    key: str
    size: Size


@dataclass(slots=True)
class StepProfile:
    """The sizes of a step's requests: the shared prefix and the summed rest."""

    requests: int
    prefix: tuple[PrefixSegment, ...]
    rest: Size
    samples: list[dict[str, Any]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    largest_rest: int = 0  # bound of the largest single request's rest

    @property
    def largest_bound(self) -> int:
        """A true bound of the largest single request's prompt (before injected tokens)."""
        return self.prefix_size.bound + self.largest_rest

    @property
    def prefix_size(self) -> Size:
        """The whole prefix of one request."""
        total = ZERO_SIZE
        for segment in self.prefix:
            total += segment.size
        return total

    @property
    def total(self) -> Size:
        """Every input token of every request."""
        return self.prefix_size.scaled(self.requests) + self.rest


@dataclass(frozen=True, slots=True)
class StepSource:
    """A step to size: its spec, route facts and the dataset it fans out over, if any."""

    step_id: str
    step: Step
    model: str
    max_tokens: int
    dataset: tuple[Path, DatasetType, int | None] | None = None
    fan_out_over: str | None = None
    options: RequestOptions = field(default_factory=RequestOptions)


def _digest(kind: str, text: str) -> str:
    return hashlib.sha256(f"{kind}\x00{text}".encode("utf-8", "surrogatepass")).hexdigest()[:32]


class _Contexts:
    """Template contexts in both modes, with upstream lists shortened as needed."""

    def __init__(self, inputs: Mapping[str, Any], upstream: Mapping[str, Upstream]) -> None:
        self.inputs = inputs
        self.upstream = upstream

    def steps(self, mode: Literal["bound", "expected"], longer: bool = False) -> Any:
        namespace: dict[str, dict[str, Any]] = {}
        for step_id, up in self.upstream.items():
            one = up.stand_in(mode)
            length = up.count if up.count <= WHOLE_LIST else (2 if longer else 1)
            namespace[step_id] = {"outputs": [one] * length, "output": one}
        return namespace

    def context(
        self, mode: Literal["bound", "expected"], item: Any = None, longer: bool = False
    ) -> dict[str, Any]:
        ctx: dict[str, Any] = {"inputs": self.inputs, "steps": self.steps(mode, longer)}
        if item is not None:
            ctx["item"] = item
        return ctx

    def longest_list(self, source: str) -> int:
        """The longest extrapolated upstream list the template reads (0: none)."""
        counts = [
            self.upstream[s].count
            for s in references(source).steps
            if s in self.upstream and self.upstream[s].count > WHOLE_LIST
        ]
        return max(counts, default=0)

    def extra(self, source: str, item: Any, mode: Literal["bound", "expected"]) -> int:
        """Bytes (bound) or tokens (expected) long lists add beyond their first output.

        Every long list grows from one output to two together (templates often walk
        lists in parallel); the growth is scaled to the longest list.
        """
        longest = self.longest_list(source)
        if not longest:
            return 0
        measure = utf8_len if mode == "bound" else estimate_text
        one = measure(render(source, self.context(mode, item)))
        two = measure(render(source, self.context(mode, item, longer=True)))
        return (longest - 1) * max(0, two - one)


def _render_size(ctx: _Contexts, source: str, item: Any) -> Size:
    bound = utf8_len(render(source, ctx.context("bound", item))) + ctx.extra(source, item, "bound")
    expected = estimate_text(render(source, ctx.context("expected", item)))
    expected += ctx.extra(source, item, "expected")
    return Size(bound, min(expected, bound))


def simple_item_fields(source: str) -> dict[str, str] | None:
    """Fields a template interpolates directly from ``item`` (``{{ item.x }}``), or None.

    None means ``item`` is used some other way (filters, conditions, loops, the whole
    item), so each item must be rendered to bound it. Values map a marker per field.
    """
    fields = references(source).item_fields
    if fields is None:
        return None
    return {f: f"\ufdd0{i}\ufdd1" for i, f in enumerate(sorted(set(fields)))}


@dataclass(frozen=True, slots=True)
class _FastBound:
    """A request part bounded from item fields: static bytes + Σ multiplicity × value bytes."""

    static: int
    fields: tuple[tuple[str, int], ...]
    framing: int

    def bytes(self, item: Mapping[str, Any]) -> int:
        total = self.static
        for name, times in self.fields:
            value = item[name]
            if type(value) is str:
                size = len(value) if value.isascii() else utf8_len(value)
            else:
                size = utf8_len(str(value))
            total += times * size
        return total + self.framing if total or self.framing == 0 else 0


def _fast_bound(ctx: _Contexts, source: str, framing: int) -> _FastBound | None:
    markers = simple_item_fields(source)
    if markers is None:
        return None
    text = render(source, ctx.context("bound", markers))
    static = utf8_len(text) + ctx.extra(source, markers, "bound")
    fields = []
    for name, marker in markers.items():
        times = text.count(marker)
        static -= times * utf8_len(marker)
        fields.append((name, times))
    return _FastBound(static, tuple(fields), framing)


def profile_step(
    source: StepSource,
    inputs: Mapping[str, Any],
    upstream: Mapping[str, Upstream],
    *,
    keep_samples: bool = False,
) -> StepProfile:
    """Size every request of one step (streaming its dataset, if any)."""
    step = source.step
    read: set[str] = set()
    for text in [step.prompt, *(b.text for b in step.system_blocks)]:
        read |= references(text).steps
    ctx = _Contexts(inputs, {k: upstream[k] for k in sorted(read) if k in upstream})
    blocks = step.system_blocks
    prefix: list[PrefixSegment] = []
    static_rest = _REST_FRAMING
    if step.output_schema is not None and source.options.structured_via == "tool":
        tool = output_tool(step.output_schema)
        key = _digest("tool", json.dumps(tool, sort_keys=True))
        prefix.append(PrefixSegment("tool", 0, key, tool_size(tool)))
    elif step.output_schema is not None:
        schema = output_format(step.output_schema)["schema"]
        static_rest += Size(utf8_len(json.dumps(schema)), estimate_text(json.dumps(schema)))
    dynamic: list[tuple[str, int]] = []  # (source, framing bytes) rendered per request
    in_prefix = True
    for index, block in enumerate(blocks):
        static = references(block.text).is_static
        if not static:
            in_prefix = False
            dynamic.append((block.text, BLOCK_FRAMING))
            continue
        text = render(block.text, ctx.context("bound"))
        if not text:
            continue
        if in_prefix and block.cache:
            key = _digest("system", text)
            prefix.append(PrefixSegment("system", index, key, block_size(text)))
        else:
            in_prefix = False
            static_rest += block_size(text)
    dynamic.append((step.prompt, 0))
    profile = StepProfile(requests=0, prefix=tuple(prefix), rest=ZERO_SIZE)
    if source.dataset is not None:
        _profile_dataset(source, ctx, dynamic, static_rest, profile, keep_samples)
    else:
        item: Any = None
        count = 1
        if source.fan_out_over is not None:
            up = upstream[source.fan_out_over]
            count = up.count
            item = up
            profile.notes.append(
                f"fans out over the {count} output(s) of step '{source.fan_out_over}',"
                f" each ~{up.expected_tokens} tokens (≤ {up.max_tokens})"
            )
        one = static_rest
        for text, framing in dynamic:
            item_value = None if item is None else item
            size = _standin_size(ctx, text, item_value)
            one += size + (
                Size(framing, EST_BLOCK_FRAMING) if framing and size.bound else ZERO_SIZE
            )
        profile.requests = count
        profile.rest = one.scaled(count)
        profile.largest_rest = one.bound
        if keep_samples and count:
            profile.samples = [_sample_params(source, ctx, item_value_of(item))]
    return profile


def item_value_of(item: Any) -> Any:
    """The ``item`` of a stand-in fan-out in expected mode (None for plain steps)."""
    return item.stand_in("expected") if isinstance(item, Upstream) else item


def _standin_size(ctx: _Contexts, text: str, item: Any) -> Size:
    if isinstance(item, Upstream):
        bound = utf8_len(render(text, ctx.context("bound", item.stand_in("bound"))))
        bound += ctx.extra(text, item.stand_in("bound"), "bound")
        expected = estimate_text(render(text, ctx.context("expected", item.stand_in("expected"))))
        expected += ctx.extra(text, item.stand_in("expected"), "expected")
        return Size(bound, min(bound, expected))
    return _render_size(ctx, text, None)


def _sample_params(source: StepSource, ctx: _Contexts, item: Any) -> dict[str, Any]:
    context = ctx.context("expected", item)
    step = source.step
    params = build_params(
        model=source.model,
        max_tokens=source.max_tokens,
        system=[render(b.text, context) for b in step.system_blocks],
        prompt=render(step.prompt, context),
        options=source.options,
    )
    return count_params(params)


def _items(source: StepSource) -> Iterator[dict[str, Any]]:
    assert source.dataset is not None
    path, kind, limit = source.dataset
    return iter_items(path, kind, limit)


def _profile_dataset(
    source: StepSource,
    ctx: _Contexts,
    dynamic: list[tuple[str, int]],
    static_rest: Size,
    profile: StepProfile,
    keep_samples: bool,
) -> None:
    assert source.dataset is not None
    path, kind, limit = source.dataset
    count = count_items(path, kind, limit)
    stride = max(1, -(-count // SAMPLE_ITEMS))
    fast: list[_FastBound] = []
    slow: list[tuple[str, int]] = []
    for text, framing in dynamic:
        if not references(text).uses_item:
            size = _render_size(ctx, text, None)
            static_rest += size + (
                Size(framing, EST_BLOCK_FRAMING) if framing and size.bound else ZERO_SIZE
            )
            continue
        bound = _fast_bound(ctx, text, framing)
        if bound is None:
            slow.append((text, framing))
        else:
            fast.append(bound)
    item_sources = [text for text, _ in dynamic if references(text).uses_item]
    bound_total = 0
    largest = 0
    sample_bound = 0
    sample_expected = 0
    seen = 0
    step_id = source.step_id
    try:
        for index, item in enumerate(_items(source)):
            seen += 1
            try:
                bytes_ = 0
                for part in fast:
                    bytes_ += part.bytes(item)
                for text, framing in slow:
                    rendered = utf8_len(render(text, ctx.context("bound", item)))
                    rendered += ctx.extra(text, item, "bound")
                    bytes_ += rendered + (framing if rendered else 0)
                bound_total += bytes_
                largest = max(largest, bytes_)
                if index % stride == 0:
                    sample_bound += bytes_
                    estimate = 0
                    for text in item_sources:
                        estimate += _render_size(ctx, text, item).expected
                    sample_expected += min(estimate, bytes_)
                    if keep_samples and len(profile.samples) < EXACT_SAMPLES:
                        profile.samples.append(_sample_params(source, ctx, item))
            except KeyError as exc:
                raise DatasetError(
                    f"{path}: item {index + 1}: step '{step_id}' reads item.{exc.args[0]},"
                    " which the item lacks"
                ) from None
            except TemplateError as exc:
                raise DatasetError(
                    f"{path}: item {index + 1}: step '{step_id}' cannot render it: {exc}"
                ) from None
    except DatasetError:
        raise
    expected_total = (
        sample_expected if stride == 1 else (bound_total * sample_expected) // max(1, sample_bound)
    )
    profile.requests = seen
    profile.rest = static_rest.scaled(seen) + Size(bound_total, min(expected_total, bound_total))
    profile.largest_rest = static_rest.bound + largest
    how = "from the item fields' bytes" if not slow else "from each rendered item"
    sampled = "every item" if stride == 1 else f"every {stride}th item"
    profile.notes.append(
        f"{seen} request(s), one per item of {path.name}"
        + (f" (limit {limit})" if limit else "")
        + f"; upper bound {how}; estimate from {sampled}"
    )
