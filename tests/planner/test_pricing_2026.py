"""Plans priced by today's rules: thinking billed as output, price bands, fast mode,
data residency, the injected system prompt and tokenizer families."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from llmflow.catalog import load_catalog
from llmflow.planner import make_plan
from llmflow.planner.plan import StepPlan

from .conftest import PairMaker

CATALOG = load_catalog()
MTOK = Decimal(1_000_000)


def single_step(doc_words: int, **step: Any) -> tuple[dict[str, Any], dict[str, str]]:
    pipeline = {
        "name": "one",
        "inputs": {"doc": {"type": "text", "path": "doc.txt"}},
        "steps": {
            "read": {
                "task": "work",
                "system": [{"text": "{{ inputs.doc }}", "cache": False}],
                "prompt": "Summarise.",
                **step,
            }
        },
    }
    return pipeline, {"doc.txt": "abcd " * doc_words}


def policy(model: str, **route: Any) -> dict[str, Any]:
    return {
        "name": "p",
        "tiers": {"t": {"model": model}, "base": {"model": "claude-sonnet-5-5"}},
        "routes": {"work": {"tier": "t", "mode": "sync", **route}},
        "baseline_tier": "base",
    }


def plan_step(make_pair: PairMaker, pipeline: Any, files: Any, pol: Any) -> StepPlan:
    pf, pol_file = make_pair(pipeline, pol, files=files)
    return make_plan(pf, pol_file).step("read")


def priced(step: StepPlan, input_price: str, output_price: str) -> Decimal:
    tokens = step.tokens
    return (
        tokens.input * Decimal(input_price) + tokens.output_expected * Decimal(output_price)
    ) / MTOK


def test_a_haiku_5_5_prompt_over_100k_tokens_is_priced_at_the_higher_band(
    make_pair: PairMaker,
) -> None:
    pipeline, files = single_step(115_400)  # 115,400 old-family tokens → ~150k on the new
    route = {"max_tokens": 200, "expected_output_tokens": 100, "thinking": "disabled"}
    step = plan_step(make_pair, pipeline, files, policy("claude-haiku-5-5", **route))
    assert 149_000 < step.tokens.input < 151_000
    assert step.tokens.thinking_expected == 0
    assert Decimal(step.cost.expected) == priced(step, "0.50", "2.50")
    assert any("100,000-token band" in note for note in step.notes)


def test_below_the_band_the_base_prices_apply(make_pair: PairMaker) -> None:
    pipeline, files = single_step(20_000)
    route = {"max_tokens": 200, "expected_output_tokens": 100, "thinking": "disabled"}
    step = plan_step(make_pair, pipeline, files, policy("claude-haiku-5-5", **route))
    assert Decimal(step.cost.expected) == priced(step, "0.10", "0.50")
    assert not any("exceed" in note for note in step.notes)
    # the byte bound of 100,000+ bytes could reach the band: max is priced there
    assert any("max is priced at the >100,000-token band" in n for n in step.notes)


def test_thinking_is_expected_output_by_model_and_effort(make_pair: PairMaker) -> None:
    pipeline, files = single_step(100)
    route = {"max_tokens": 8000, "expected_output_tokens": 500, "effort": "high"}
    step = plan_step(make_pair, pipeline, files, policy("claude-opus-5-5", **route))
    thinking = CATALOG.models["claude-opus-5-5"].thinking_estimates["high"]
    assert step.effort == "high" and step.thinking == "adaptive"
    assert step.tokens.thinking_expected == thinking
    assert step.tokens.output_expected == 500 + thinking
    assert step.tokens.output_max == 8000
    assert Decimal(step.cost.expected) == priced(step, "4", "20")
    assert any("catalog estimate" in note for note in step.notes)


def test_the_model_default_effort_and_an_explicit_thinking_estimate(
    make_pair: PairMaker,
) -> None:
    pipeline, files = single_step(100, expected_thinking_tokens=700)
    route = {"max_tokens": 4000, "expected_output_tokens": 100}
    step = plan_step(make_pair, pipeline, files, policy("claude-opus-5-5", **route))
    assert step.effort == "medium"  # Opus 5.5's default
    assert step.tokens.thinking_expected == 700
    assert any("set by expected_thinking_tokens" in note for note in step.notes)


def test_models_that_think_only_when_asked_expect_no_thinking(make_pair: PairMaker) -> None:
    pipeline, files = single_step(100)
    route = {"max_tokens": 400, "expected_output_tokens": 100}
    step = plan_step(make_pair, pipeline, files, policy("claude-haiku-4-5", **route))
    assert step.effort is None and step.thinking == "off"
    assert step.tokens.thinking_expected == 0


def test_max_tokens_bounds_thinking_and_answer_together(make_pair: PairMaker) -> None:
    pipeline, files = single_step(100)
    route = {"max_tokens": 600, "expected_output_tokens": 500, "effort": "medium"}
    step = plan_step(make_pair, pipeline, files, policy("claude-sonnet-5-5", **route))
    assert step.tokens.output_expected == 600
    assert any("bounds thinking and answer together" in note for note in step.notes)


def test_fast_mode_and_data_residency_rates(make_pair: PairMaker) -> None:
    pipeline, files = single_step(100)
    base = {"max_tokens": 2000, "expected_output_tokens": 100, "expected_thinking_tokens": 0}
    fast = plan_step(make_pair, pipeline, files, policy("claude-opus-5-5", speed="fast", **base))
    assert Decimal(fast.cost.expected) == priced(fast, "8", "40")
    assert fast.speed == "fast"
    geo = plan_step(
        make_pair, pipeline, files, policy("claude-opus-5-5", inference_geo="us", **base)
    )
    assert Decimal(geo.cost.expected) == priced(geo, "4", "20") * Decimal("1.1")
    assert any("data residency" in note for note in geo.notes)


def test_structured_output_adds_the_injected_system_prompt(make_pair: PairMaker) -> None:
    schema = {"type": "object", "properties": {"a": {"type": "string"}}, "required": ["a"]}
    route = {"max_tokens": 300, "expected_output_tokens": 50, "thinking": "disabled"}
    plain_pipeline, files = single_step(100)
    schema_pipeline, _ = single_step(100, output_schema=schema)
    pol = policy("claude-haiku-5-5", **route)
    plain = plan_step(make_pair, plain_pipeline, files, pol)
    with_schema = plan_step(make_pair, schema_pipeline, files, pol)
    injected = CATALOG.models["claude-haiku-5-5"].injected_prompt_tokens.structured_output
    extra = with_schema.tokens.input - plain.tokens.input
    assert extra > injected  # the injected prompt and the schema itself
    assert any(f"+{injected} input tokens" in note for note in with_schema.notes)


def test_the_new_tokenizer_family_expects_about_30_percent_more(make_pair: PairMaker) -> None:
    pipeline, files = single_step(10_000)
    route = {"max_tokens": 100, "expected_output_tokens": 10}
    old = plan_step(make_pair, pipeline, files, policy("claude-sonnet-4-6", **route))
    new = plan_step(make_pair, pipeline, files, policy("claude-sonnet-5-5", **route))
    assert 1.29 < new.tokens.input / old.tokens.input < 1.31
