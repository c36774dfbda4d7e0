"""From a loaded pipeline and policy to a priced plan (``make_plan``).

Three phases, each usable on its own:

1. :func:`resolve` — the waves of the loaded pipeline's graph (built once, when the
   loader checked it for cycles); per step the route, the model (with the policy's
   overrides), the request template and the sizes of every request (streaming
   datasets).
2. :func:`count_exact` (``--exact-tokens`` only) — count_tokens on each step's
   prefix and a few sample requests, to calibrate the estimate.
3. :func:`price` — cache placement (breakpoints shared across steps on one model, TTL
   as a priced decision, reads of an earlier step's prefix when it is still warm) and
   costs: expected, max and baseline per step and in total; the budget check.
"""

from __future__ import annotations

import asyncio
import hashlib
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

from llmflow.catalog import Catalog, ModelInfo, TokenUsage, cost, format_usd, load_catalog
from llmflow.catalog.rules import ThinkingMode, effective_effort, thinking_mode
from llmflow.errors import DatasetError
from llmflow.planner.budget_check import budget_plan, policy_limits
from llmflow.planner.cache import (
    BATCH_SECONDS,
    MAX_BREAKPOINTS,
    TTL_SECONDS,
    CacheChoice,
    CacheQuestion,
    choose_cache,
    request_seconds,
)
from llmflow.planner.costing import baseline_cost, max_cost, savings_pct, tier_model
from llmflow.planner.measure import StepProfile, StepSource, Upstream, profile_step
from llmflow.planner.plan import (
    BudgetPlan,
    CachePlan,
    CostPlan,
    Plan,
    StepPlan,
    TokenPlan,
    TotalPlan,
)
from llmflow.planner.requests import (
    CacheMarks,
    RequestOptions,
    RequestTemplate,
    build_params,
    inputs_namespace,
)
from llmflow.planner.tokens import (
    Size,
    TokenCounter,
    injected_tokens,
    params_size,
    scale_estimate,
)
from llmflow.spec.dag import waves
from llmflow.spec.loader import PipelineFile, PolicyFile
from llmflow.spec.pipeline import DatasetInput, Pipeline
from llmflow.spec.routing import RouteDecision, resolve_route

#: SDK 2.10.0 refuses non-streaming calls above this max_tokens with the default timeout.
SDK_NON_STREAMING_MAX_TOKENS = 21_333
_EXACT_CONCURRENCY = 4


@dataclass(slots=True)
class ResolvedStep:
    """One step after resolution, before pricing."""

    step_id: str
    route: RouteDecision
    model: ModelInfo
    max_tokens: int
    profile: StepProfile
    notes: list[str]
    output: OutputExpectation
    chain: list[str] = field(default_factory=list)  # prefix identity at each boundary


@dataclass(frozen=True, slots=True)
class OutputExpectation:
    """Expected output tokens of one request: the answer and the thinking before it."""

    text: int
    thinking: int
    effort: str | None
    thinking_mode: ThinkingMode

    @property
    def total(self) -> int:
        """Billed output tokens (thinking is billed as output)."""
        return self.text + self.thinking


def expect_output(route: RouteDecision, model: ModelInfo, max_tokens: int) -> OutputExpectation:
    """Expected thinking (the step's ``expected_thinking_tokens``, else the catalog's
    estimate for the model and effort) and answer, together within ``max_tokens``."""
    effort = effective_effort(model, route.effort)
    mode = thinking_mode(model, route.thinking.type if route.thinking else None)
    if route.expected_thinking_tokens is not None:
        thinking = route.expected_thinking_tokens
    elif mode == "off":
        thinking = 0
    else:
        thinking = model.thinking_estimate(effort)
        budget = route.thinking.budget_tokens if route.thinking else None
        if mode == "enabled" and budget is not None:
            thinking = min(thinking, budget)
    thinking = min(thinking, max_tokens)
    text = min(route.expected_output_tokens, max_tokens - thinking)
    return OutputExpectation(text, thinking, effort, mode)


def _output_notes(route: RouteDecision, out: OutputExpectation, max_tokens: int) -> list[str]:
    notes: list[str] = []
    if out.thinking_mode == "off":
        return notes
    source = (
        "set by expected_thinking_tokens"
        if route.expected_thinking_tokens is not None
        else "catalog estimate, not a published figure"
    )
    at = f" at effort {out.effort}" if out.effort else ""
    notes.append(
        f"thinking {out.thinking_mode}{at}: ~{out.thinking:,} thinking tokens per request"
        f" ({source}), billed as output"
    )
    if out.text < route.expected_output_tokens:
        notes.append(
            f"max_tokens {max_tokens} bounds thinking and answer together: ~{out.text:,} of the"
            f" {route.expected_output_tokens:,} expected answer tokens fit; raise max_tokens,"
            " lower effort or disable thinking where the model allows"
        )
    return notes


@dataclass(frozen=True, slots=True)
class ExactCounts:
    """count_tokens results of a step: its prefix and its sample requests."""

    prefix: int | None
    samples: tuple[int, ...]


@dataclass(slots=True)
class Resolution:
    """The resolved pipeline, ready to be priced."""

    pipeline_name: str
    policy_name: str
    waves: list[list[str]]
    steps: dict[str, ResolvedStep]
    baseline: ModelInfo
    policy_file: PolicyFile
    pipeline: Pipeline


@dataclass(frozen=True, slots=True)
class PlanResult:
    """The plan and, per step, the request template the executor renders and sends."""

    plan: Plan
    templates: dict[str, RequestTemplate]


def resolve(
    pipeline_file: PipelineFile,
    policy_file: PolicyFile,
    *,
    inputs: Mapping[str, str] | None = None,
    catalog: Catalog | None = None,
    keep_samples: bool = False,
) -> Resolution:
    """Route every step and size its requests (phase 1)."""
    catalog = catalog or load_catalog()
    pipeline = pipeline_file.pipeline
    policy = policy_file.policy
    layers = waves(pipeline_file.graph)
    try:
        namespace = inputs_namespace(pipeline_file, inputs or {})
    except (OSError, UnicodeDecodeError) as exc:
        raise DatasetError(f"cannot read a text input: {exc}") from exc
    upstream: dict[str, Upstream] = {}
    steps: dict[str, ResolvedStep] = {}
    for step_id in (s for layer in layers for s in layer):
        step = pipeline.steps[step_id]
        route = resolve_route(policy, step)
        model = tier_model(policy, route.tier, catalog)
        notes = list(route.notes)
        max_tokens = route.max_tokens
        if max_tokens > model.max_output_tokens:
            notes.append(
                f"max_tokens {max_tokens} capped to {model.id}'s maximum output"
                f" {model.max_output_tokens}"
            )
            max_tokens = model.max_output_tokens
        if route.mode == "sync" and not step.stream and max_tokens > SDK_NON_STREAMING_MAX_TOKENS:
            notes.append(
                f"max_tokens {max_tokens} > {SDK_NON_STREAMING_MAX_TOKENS}: the SDK needs"
                " `stream: true` (or a longer timeout) for such calls"
            )
        if route.mode == "batch" and step.stream:
            notes.append("stream: true has no effect in batch mode")
        options = RequestOptions.of(step, route, model)
        dataset = None
        fan_out_over = None
        source = step.for_each_source
        if source is not None and source[0] == "inputs":
            spec = pipeline.inputs[source[1]]
            assert isinstance(spec, DatasetInput)
            dataset = (pipeline_file.input_path(source[1]), spec.type, spec.limit)
        elif source is not None:
            fan_out_over = source[1]
        profile = profile_step(
            StepSource(step_id, step, model.id, max_tokens, dataset, fan_out_over, options),
            namespace,
            upstream,
            keep_samples=keep_samples,
        )
        notes += profile.notes
        injected = injected_tokens(
            build_params(model=model.id, max_tokens=1, system=(), prompt="", options=options),
            model,
        )
        if injected:
            profile.rest += Size(injected, injected).scaled(profile.requests)
            profile.largest_rest += injected
            notes.append(
                f"+{injected} input tokens per request: the system prompt the API adds for"
                " structured output or tools"
            )
        output = expect_output(route, model, max_tokens)
        notes += _output_notes(route, output, max_tokens)
        fields = len((step.output_schema or {}).get("properties") or {})
        upstream[step_id] = Upstream(profile.requests, output.text, max_tokens, fields)
        steps[step_id] = ResolvedStep(step_id, route, model, max_tokens, profile, notes, output)
    baseline = tier_model(policy, policy.baseline_tier, catalog)
    return Resolution(pipeline.name, policy.name, layers, steps, baseline, policy_file, pipeline)


async def count_exact(
    resolution: Resolution, counter: TokenCounter, *, concurrency: int = _EXACT_CONCURRENCY
) -> dict[str, ExactCounts]:
    """Exact counts of each step's prefix and sample requests (phase 2, ``--exact-tokens``)."""
    gate = asyncio.Semaphore(concurrency)

    async def count(params: Mapping[str, Any]) -> int:
        async with gate:
            return await counter.count(params)

    async def one(rs: ResolvedStep) -> ExactCounts:
        samples = rs.profile.samples
        prefix: int | None = None
        if samples and rs.profile.prefix:
            with_prefix, without = _prefix_probes(samples[0], rs.profile)
            full, bare = await asyncio.gather(count(with_prefix), count(without))
            prefix = max(0, full - bare)
        counted = await asyncio.gather(*(count(p) for p in samples))
        return ExactCounts(prefix, tuple(counted))

    ids = [s for layer in resolution.waves for s in layer]
    results = await asyncio.gather(*(one(resolution.steps[s]) for s in ids))
    return dict(zip(ids, results, strict=True))


def _prefix_probes(
    sample: Mapping[str, Any], profile: StepProfile
) -> tuple[dict[str, Any], dict[str, Any]]:
    message = [{"role": "user", "content": [{"type": "text", "text": "."}]}]
    bare: dict[str, Any] = {"model": sample["model"], "messages": message}
    with_prefix = dict(bare)
    if any(seg.kind == "tool" for seg in profile.prefix):
        with_prefix["tools"] = sample["tools"]
    systems = sum(1 for seg in profile.prefix if seg.kind == "system")
    if systems:
        with_prefix["system"] = sample["system"][:systems]
    return with_prefix, bare


@dataclass(slots=True)
class _Expected:
    """Expected sizes after optional calibration by exact counts."""

    cumulative: list[int]  # expected prefix tokens at each boundary
    rest: int
    note: str | None = None


def _expected_sizes(rs: ResolvedStep, exact: ExactCounts | None) -> _Expected:
    profile = rs.profile
    cumulative: list[int] = []
    running = 0
    for segment in profile.prefix:
        running += segment.size.expected
        cumulative.append(running)
    rest = profile.rest.expected
    if exact is None or not exact.samples:
        family = rs.model.tokenizer
        cumulative = [
            min(scale_estimate(c, family), b)
            for c, b in zip(cumulative, _bounds(profile), strict=True)
        ]
        rest = min(scale_estimate(rest, family), profile.rest.bound)
        return _Expected(cumulative, rest)
    prefix_bound = profile.prefix_size.bound
    if exact.prefix is not None and running:
        exact_prefix = min(exact.prefix, prefix_bound)
        cumulative = [c * exact_prefix // running for c in cumulative]
        cumulative[-1] = exact_prefix
    prefix_now = cumulative[-1] if cumulative else 0
    prefix_est = profile.prefix_size.expected
    counted = len(exact.samples)
    sample_rest = max(0, sum(exact.samples) - prefix_now * counted)
    sample_est = sum(params_size(p).expected for p in profile.samples[:counted])
    sample_est = max(0, sample_est - prefix_est * counted)
    if sample_est:
        rest = rest * sample_rest // sample_est
    rest = min(rest, profile.rest.bound)
    note = (
        f"exact tokens: count_tokens on {len(exact.samples)} of {profile.requests} request(s)"
        + (" and the prefix" if exact.prefix is not None else "")
        + ("" if len(exact.samples) >= profile.requests else "; the rest scaled")
    )
    return _Expected(cumulative, rest, note)


def _bounds(profile: StepProfile) -> list[int]:
    running, bounds = 0, []
    for segment in profile.prefix:
        running += segment.size.bound
        bounds.append(running)
    return bounds


def _chains(profile: StepProfile, model: str) -> list[str]:
    chain: list[str] = []
    previous = model
    for segment in profile.prefix:
        previous = hashlib.sha256(f"{previous}|{segment.key}".encode()).hexdigest()[:32]
        chain.append(previous)
    return chain


def _breakpoints(
    rs: ResolvedStep, cumulative: list[int], shared: Mapping[str, int], minimum: int
) -> list[int]:
    """Boundaries to mark: up to 3 prefixes shared with other steps, then the step's own end."""
    last = len(rs.chain) - 1
    candidates = [
        i for i in range(last) if shared.get(rs.chain[i], 0) > 1 and cumulative[i] >= minimum
    ]
    return [*candidates[-(MAX_BREAKPOINTS - 1) :], last]


@dataclass(slots=True)
class _Entry:
    writer: str
    wave: int
    expires: float


def price(resolution: Resolution, exact: Mapping[str, ExactCounts] | None = None) -> PlanResult:
    """Place caches and price every step (phase 3)."""
    policy = resolution.policy_file.policy
    cache_policy = policy.cache
    concurrency = policy.limits.max_concurrency
    shared: dict[str, int] = {}
    for rs in resolution.steps.values():
        rs.chain = _chains(rs.profile, rs.model.id)
        for digest in rs.chain:
            shared[digest] = shared.get(digest, 0) + 1
    entries: dict[str, _Entry] = {}
    clock = 0.0
    step_plans: list[StepPlan] = []
    templates: dict[str, RequestTemplate] = {}
    totals = [Decimal(0), Decimal(0), Decimal(0)]
    for wave_index, layer in enumerate(resolution.waves):
        ends = [clock]
        for step_id in layer:
            rs = resolution.steps[step_id]
            sizes = _expected_sizes(rs, (exact or {}).get(step_id))
            batch = rs.route.mode == "batch"
            n = rs.profile.requests
            seconds = request_seconds(rs.output.total)
            marks = _breakpoints(rs, sizes.cumulative, shared, rs.model.min_cacheable_tokens)
            marks = marks if rs.chain else []
            shared_read, writer = 0, None
            if not batch:
                for boundary in reversed(marks):
                    entry = entries.get(rs.chain[boundary])
                    if entry is not None and entry.wave < wave_index and clock < entry.expires:
                        shared_read, writer = sizes.cumulative[boundary], entry.writer
                        break
            question = CacheQuestion(
                mode=rs.route.mode,
                requests=n,
                prefix_tokens=sizes.cumulative[-1] if sizes.cumulative else 0,
                min_cacheable=rs.model.min_cacheable_tokens,
                enabled=cache_policy.enabled,
                ttl_policy=cache_policy.ttl,
                batch_hit_rate=cache_policy.batch_hit_rate,
                gap_seconds=seconds / concurrency,
                shared_read=shared_read,
            )
            choice = choose_cache(question, rs.model)
            notes = list(rs.notes)
            if sizes.note:
                notes.append(sizes.note)
            notes += choice.notes
            if choice.enabled and writer is not None and choice.read_tokens:
                notes.append(
                    f"reads the ~{shared_read:,}-token prefix step '{writer}' wrote"
                    " (same model, same tools and system prefix, still within its TTL)"
                )
            duration = BATCH_SECONDS if batch else math.ceil(n / concurrency) * seconds
            end = clock + duration
            ends.append(end)
            cache_marks = None
            if choice.ttl is not None:
                cache_marks = _cache_marks(rs, marks, choice)
                if not batch:
                    for boundary in marks:
                        if sizes.cumulative[boundary] >= rs.model.min_cacheable_tokens:
                            entries[rs.chain[boundary]] = _Entry(
                                step_id, wave_index, end + TTL_SECONDS[choice.ttl]
                            )
            step_plan, amounts, price_notes = _step_plan(rs, choice, cache_marks, sizes, resolution)
            step_plans.append(step_plan.model_copy(update={"notes": notes + price_notes}))
            totals = [t + a for t, a in zip(totals, amounts, strict=True)]
            templates[step_id] = RequestTemplate.for_step(
                step_id,
                resolution.pipeline.steps[step_id],
                model=rs.model,
                route=rs.route,
                max_tokens=rs.max_tokens,
                cache=cache_marks,
            )
        clock = max(ends)
    expected, maximum, baseline = totals
    plan = Plan(
        pipeline=resolution.pipeline_name,
        policy=resolution.policy_name,
        waves=resolution.waves,
        steps=step_plans,
        total=TotalPlan(
            cost_expected=format_usd(expected),
            cost_max=format_usd(maximum),
            cost_baseline=format_usd(baseline),
            savings_pct=format(savings_pct(baseline, expected), "f"),
        ),
        budget=BudgetPlan(limits=[], fits_expected=True, fits_max=True),
    )
    checked = budget_plan(plan, policy_limits(policy), now=datetime.now(UTC))
    return PlanResult(plan.model_copy(update={"budget": checked}), templates)


def _cache_marks(rs: ResolvedStep, marks: list[int], choice: CacheChoice) -> CacheMarks:
    assert choice.ttl is not None
    segments = [rs.profile.prefix[i] for i in marks]
    return CacheMarks(
        ttl=choice.ttl,
        tool=any(s.kind == "tool" for s in segments),
        system=tuple(s.index for s in segments if s.kind == "system"),
    )


def _step_plan(
    rs: ResolvedStep,
    choice: CacheChoice,
    marks: CacheMarks | None,
    sizes: _Expected,
    resolution: Resolution,
) -> tuple[StepPlan, tuple[Decimal, Decimal, Decimal], list[str]]:
    n = rs.profile.requests
    batch = rs.route.mode == "batch"
    route, model = rs.route, rs.model
    usage = choice.usage() + TokenUsage(
        input=sizes.rest, output=n * rs.output.total, thinking=n * rs.output.thinking
    )
    mean_prompt = usage.total_input // n if n else 0
    rates = {"speed": route.speed, "inference_geo": route.inference_geo}
    expected = cost(usage, model, batch=batch, prompt_tokens=mean_prompt, **rates)
    largest = rs.profile.largest_bound
    maximum = max_cost(
        requests=n,
        prefix_bound=rs.profile.prefix_size.bound,
        rest_bound=rs.profile.rest.bound,
        max_tokens=rs.max_tokens,
        model=model,
        batch=batch,
        ttls=() if choice.ttl is None else (choice.ttl,),
        largest_prompt=largest,
        **rates,
    )
    baseline = baseline_cost(usage, resolution.baseline)
    step = StepPlan(
        id=rs.step_id,
        task=route.task,
        tier=route.tier,
        model=model.id,
        mode=route.mode,
        effort=rs.output.effort,
        thinking=rs.output.thinking_mode,
        speed=route.speed,
        inference_geo=route.inference_geo,
        requests=n,
        max_tokens=rs.max_tokens,
        cache=CachePlan(
            enabled=choice.enabled,
            ttl=choice.ttl,
            breakpoints=marks.breakpoints if marks else 0,
            prefix_tokens=sizes.cumulative[-1] if sizes.cumulative else 0,
            expected_writes=choice.writes,
            expected_reads=choice.reads,
        ),
        tokens=TokenPlan(
            input=usage.input,
            cache_write=usage.cache_write,
            cache_read=usage.cache_read,
            output_expected=usage.output,
            thinking_expected=usage.thinking,
            output_max=n * rs.max_tokens,
        ),
        cost=CostPlan(
            expected=format_usd(expected), max=format_usd(maximum), baseline=format_usd(baseline)
        ),
        notes=[],
    )
    notes = _rate_notes(model, route, mean_prompt, largest)
    return step, (expected, maximum, baseline), notes


def _rate_notes(
    model: ModelInfo, route: RouteDecision, mean_prompt: int, largest: int
) -> list[str]:
    """Why a step is priced above its model's base rates: bands, fast mode, residency."""
    notes: list[str] = []
    band = model.band(mean_prompt)
    if band is not None and route.speed != "fast":
        notes.append(
            f"prompts of ~{mean_prompt:,} tokens exceed {model.id}'s"
            f" {band.above_prompt_tokens:,}-token band: every category, output included, is"
            f" priced at {format_usd(band.input_usd_per_mtok)}/"
            f"{format_usd(band.output_usd_per_mtok)} per MTok"
        )
    top = model.band(largest)
    if top is not None and top != band and route.speed != "fast":
        notes.append(
            f"max is priced at the >{top.above_prompt_tokens:,}-token band: the largest"
            f" request's upper bound ({largest:,} tokens) could reach it"
        )
    if route.speed == "fast" and model.fast is not None:
        notes.append(
            f"fast mode: {format_usd(model.fast.input_usd_per_mtok)}/"
            f"{format_usd(model.fast.output_usd_per_mtok)} per MTok instead of"
            f" {format_usd(model.input_usd_per_mtok)}/{format_usd(model.output_usd_per_mtok)}"
        )
    if route.inference_geo not in (None, "global"):
        notes.append(
            f"inference_geo {route.inference_geo}: every category ×"
            f" {format_usd(model.residency_multiplier)} (data residency)"
        )
    return notes


def build_plan(
    pipeline_file: PipelineFile,
    policy_file: PolicyFile,
    *,
    inputs: Mapping[str, str] | None = None,
    catalog: Catalog | None = None,
    token_counter: TokenCounter | None = None,
) -> PlanResult:
    """Resolve, optionally count exactly, and price (sync; not inside a running loop)."""
    if token_counter is not None:
        return asyncio.run(
            build_plan_async(
                pipeline_file,
                policy_file,
                inputs=inputs,
                catalog=catalog,
                token_counter=token_counter,
            )
        )
    return price(resolve(pipeline_file, policy_file, inputs=inputs, catalog=catalog), None)


async def build_plan_async(
    pipeline_file: PipelineFile,
    policy_file: PolicyFile,
    *,
    inputs: Mapping[str, str] | None = None,
    catalog: Catalog | None = None,
    token_counter: TokenCounter | None = None,
) -> PlanResult:
    """:func:`build_plan` for callers already inside an event loop."""
    resolution = resolve(
        pipeline_file,
        policy_file,
        inputs=inputs,
        catalog=catalog,
        keep_samples=token_counter is not None,
    )
    exact = None
    if token_counter is not None:
        exact = await count_exact(resolution, token_counter)
    return price(resolution, exact)


def make_plan(
    pipeline_file: PipelineFile,
    policy_file: PolicyFile,
    *,
    inputs: Mapping[str, str] | None = None,
    catalog: Catalog | None = None,
    token_counter: TokenCounter | None = None,
) -> Plan:
    """The priced plan of a pipeline under a policy."""
    return build_plan(
        pipeline_file, policy_file, inputs=inputs, catalog=catalog, token_counter=token_counter
    ).plan
