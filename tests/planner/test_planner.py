"""Whole plans: hand-computed costs, break-even edges, overrides, sharing, properties."""

from __future__ import annotations

import json
from collections.abc import Mapping
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from llmflow.catalog import load_catalog
from llmflow.errors import DatasetError
from llmflow.planner import build_plan, make_plan
from llmflow.planner.plan import Plan
from llmflow.planner.tokens import params_size, utf8_len
from llmflow.spec._yaml import Positions
from llmflow.spec.loader import PipelineFile, load_pair
from llmflow.spec.pipeline import Pipeline

FIXTURES = Path(__file__).parents[1] / "fixtures" / "planner"
PairMaker = Any

DOC = "abcd " * 5000  # 5000 estimated tokens, 25000 bytes

POLICY: dict[str, Any] = {
    "name": "p",
    "tiers": {"haiku": {"model": "claude-haiku-4-5"}, "sonnet": {"model": "claude-sonnet-4-6"}},
    "routes": {"label": {"tier": "haiku", "mode": "sync", "expected_output_tokens": 4}},
    "default_route": {"tier": "sonnet"},
    "cache": {"ttl": "5m"},
}


def doc_pipeline(**step: Any) -> dict[str, Any]:
    return {
        "name": "t",
        "inputs": {
            "doc": {"type": "text", "path": "doc.txt"},
            "items": {"type": "jsonl", "path": "items.jsonl"},
        },
        "steps": {
            "label": {
                "task": "label",
                "for_each": "inputs.items",
                "system": ["{{ inputs.doc }}"],
                "prompt": "{{ item.x }}",
                "max_tokens": 10,
                **step,
            }
        },
    }


def plan_of(make_pair: PairMaker, n: int, policy: Mapping[str, Any] = POLICY) -> Plan:
    pf, pol = make_pair(
        doc_pipeline(), dict(policy), files={"doc.txt": DOC}, items=[{"x": "abcd"}] * n
    )
    return make_plan(pf, pol)


def test_hand_computed_step(make_pair: PairMaker) -> None:
    step = plan_of(make_pair, 3).step("label")
    # prefix: 5000 + 1 block framing; rest per request: 3 + 3 + 1 framing + 1 ("abcd")
    assert step.cache.model_dump() == {
        "enabled": True,
        "ttl": "5m",
        "breakpoints": 1,
        "prefix_tokens": 5001,
        "expected_writes": 1,
        "expected_reads": 2,
    }
    assert step.tokens.model_dump() == {
        "input": 24,
        "cache_write": 5001,
        "cache_read": 10002,
        "output_expected": 12,
        "thinking_expected": 0,
        "output_max": 30,
    }
    # 5001·1.25 + 10002·0.1 + 24 + 12·5 = 7335.45 µ$ (haiku 1/5)
    assert step.cost.expected == "0.00733545"
    # baseline sonnet 3/15: (15003 + 24)·3 + 12·15 = 45261 µ$
    assert step.cost.baseline == "0.045261"
    # max: prefix bound 25008 written by all 3 at 1.25; rest bound 64+8+8+4 = 84 each; 30 out
    assert step.cost.max == "0.094182"


@pytest.mark.parametrize(
    ("n", "ttl", "cached"), [(1, "5m", False), (2, "5m", True), (2, "1h", False), (3, "1h", True)]
)
def test_break_even_edges(make_pair: PairMaker, n: int, ttl: str, cached: bool) -> None:
    policy = {**POLICY, "cache": {"ttl": ttl}}
    step = plan_of(make_pair, n, policy).step("label")
    assert step.cache.enabled is cached
    if not cached:
        assert step.tokens.input == n * (5001 + 8)
        assert any("does not pay" in note for note in step.notes)


def test_policy_overrides_catalog_prices(make_pair: PairMaker) -> None:
    policy = {
        **POLICY,
        "tiers": {
            **POLICY["tiers"],
            "haiku": {
                "model": "claude-haiku-4-5",
                "input_usd_per_mtok": "2",
                "output_usd_per_mtok": "10",
            },
        },
    }
    step = plan_of(make_pair, 3, policy).step("label")
    assert step.cost.expected == "0.0146709"  # twice 7335.45 µ$
    assert step.cost.baseline == "0.045261"  # the baseline tier is untouched


def test_budget_fits(make_pair: PairMaker) -> None:
    plan = plan_of(make_pair, 3, {**POLICY, "budget": {"per_run_usd": "0.05"}})
    assert plan.budget.model_dump() == {
        "limits": [
            {"name": "run", "key": "budget.per_run_usd", "limit": "0.05", "spent": "0",
             "reserved": "0", "resets_at": None}
        ],
        "fits_expected": True,
        "fits_max": False,
    }  # fmt: skip
    assert plan.total.savings_pct == "83.8"


def test_later_step_reads_the_prefix_an_earlier_step_wrote(make_pair: PairMaker) -> None:
    pipeline = doc_pipeline()
    pipeline["steps"]["again"] = {
        **pipeline["steps"]["label"],
        "needs": ["label"],
        "system": ["{{ inputs.doc }}", "Be brief."],
    }
    pf, pol = make_pair(pipeline, POLICY, files={"doc.txt": DOC}, items=[{"x": "abcd"}] * 3)
    plan = make_plan(pf, pol)
    again = plan.step("again")
    assert plan.waves == [["label"], ["again"]]
    assert again.cache.breakpoints == 2  # the shared doc block, then its own end
    assert again.cache.expected_writes == 1 and again.cache.expected_reads == 3
    assert again.tokens.cache_write == 5  # only "Be" "brie" "f" "." + 1 framing is new
    assert any("step 'label' wrote" in note for note in again.notes)
    templates = build_plan(pf, pol).templates
    params = templates["again"].params({"inputs": {"doc": DOC}, "item": {"x": "q"}})
    assert [b.get("cache_control") for b in params["system"]] == [
        {"type": "ephemeral", "ttl": "5m"}
    ] * 2


def test_json_contract_fields(make_pair: PairMaker) -> None:
    data = json.loads(plan_of(make_pair, 2).to_json())
    assert list(data) == ["pipeline", "policy", "currency", "waves", "steps", "total", "budget"]
    step = data["steps"][0]
    assert list(step) == [
        "id",
        "task",
        "tier",
        "model",
        "mode",
        "effort",
        "thinking",
        "speed",
        "inference_geo",
        "requests",
        "max_tokens",
        "cache",
        "tokens",
        "cost",
        "notes",
    ]
    assert list(data["total"]) == ["cost_expected", "cost_max", "cost_baseline", "savings_pct"]
    assert all(isinstance(v, str) for v in step["cost"].values())
    assert Plan.model_validate(data) == Plan.model_validate_json(json.dumps(data))


def test_fixture_pair_plans_deterministically() -> None:
    catalog = load_catalog()
    pf, pol = load_pair(
        FIXTURES / "triage.yaml",
        FIXTURES / "policy.yaml",
        is_known_model=lambda m: catalog.get(m) is not None,
    )
    assert pol is not None
    first = make_plan(pf, pol).to_json()
    assert first == make_plan(pf, pol).to_json()
    plan = Plan.model_validate_json(first)
    assert plan.waves == [["classify", "extract"], ["digest"]]
    assert plan.step("classify").requests == 25 and plan.step("digest").requests == 1
    for step in plan.steps:
        assert Decimal(step.cost.max) >= Decimal(step.cost.expected)


def test_bound_holds_for_every_item_fast_and_slow_path(make_pair: PairMaker) -> None:
    """Sum of real request bounds == planned bound, on both the field and render paths."""
    items = [{"id": i, "body": "é" * i + '\n"q"', "n": 1e15} for i in range(40)]
    pipeline = {
        "name": "t",
        "inputs": {"items": {"type": "jsonl", "path": "items.jsonl"}},
        "steps": {
            "fast": {
                "task": "label",
                "for_each": "inputs.items",
                "prompt": "{{ item.id }}: {{ item.body }} {{ item['n'] }} {{ item.body }}",
            },
            "slow": {
                "task": "label",
                "for_each": "inputs.items",
                "prompt": "{{ item.body | upper }}{% if item.id %}!{% endif %}",
            },
        },
    }
    pf, pol = make_pair(pipeline, {**POLICY, "cache": {"enabled": False}}, items=items)
    result = build_plan(pf, pol)
    for step_id in ("fast", "slow"):
        template = result.templates[step_id]
        bound = sum(params_size(template.params({"inputs": {}, "item": i})).bound for i in items)
        expected = Decimal(bound) / Decimal(10**6) + Decimal(40 * 1024 * 5) / Decimal(10**6)
        assert Decimal(result.plan.step(step_id).cost.max) == expected
        assert (
            "from each rendered item" in " ".join(result.plan.step(step_id).notes)
            or step_id == "fast"
        )


def test_missing_item_field_is_a_dataset_error(make_pair: PairMaker) -> None:
    pf, pol = make_pair(
        doc_pipeline(), POLICY, files={"doc.txt": DOC}, items=[{"x": "a"}, {"y": "b"}]
    )
    with pytest.raises(DatasetError, match=r"item 2: step 'label' reads item\.x"):
        make_plan(pf, pol)


class FakeCounter:
    """Counts like the estimator, times two: calibration must follow it."""

    def __init__(self) -> None:
        self.calls: list[Mapping[str, Any]] = []

    async def count(self, params: Mapping[str, Any]) -> int:
        self.calls.append(params)
        assert "max_tokens" not in params
        return 2 * params_size(params).expected


def test_exact_tokens_calibrate_expected(make_pair: PairMaker) -> None:
    pf, pol = make_pair(doc_pipeline(), POLICY, files={"doc.txt": DOC}, items=[{"x": "abcd"}] * 3)
    counter = FakeCounter()
    step = make_plan(pf, pol, token_counter=counter).step("label")
    assert len(counter.calls) == 2 + 3  # prefix probe pair, then the 3 requests
    # prefix: (2·(5001+7)) − 2·7 = 10002; rest scaled ×2: 48 tokens
    assert step.cache.prefix_tokens == 10002
    assert step.tokens.input == 48
    assert any("exact tokens" in n for n in step.notes)


def test_upstream_outputs_are_sized_from_expected_output(make_pair: PairMaker) -> None:
    pipeline = doc_pipeline()
    pipeline["steps"]["digest"] = {"task": "sum", "prompt": "{{ steps.label.outputs | join(',') }}"}
    pf, pol = make_pair(pipeline, POLICY, files={"doc.txt": DOC}, items=[{"x": "abcd"}] * 100)
    digest = make_plan(pf, pol).step("digest")
    # 100 outputs × 4 expected tokens + 99 commas + 7 framing
    assert digest.tokens.input == 400 + 99 + 7


# -- properties over random DAGs ------------------------------------------------------


@st.composite
def dags(draw: st.DrawFn) -> dict[str, list[str]]:
    n = draw(st.integers(1, 12))
    names = [f"s{i}" for i in range(n)]
    order = draw(st.permutations(names))
    return {
        name: sorted(draw(st.sets(st.sampled_from(order[:i]), max_size=3))) if i else []
        for i, name in enumerate(order)
    }


@settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(dags())
def test_waves_respect_every_edge_and_plans_are_deterministic(
    tmp_path: Path, graph: dict[str, list[str]]
) -> None:
    steps = {
        name: {
            "task": "label",
            "needs": needs,
            "prompt": "x" + "".join(f"{{{{ steps.{d}.output }}}}" for d in needs[:1]),
        }
        for name, needs in graph.items()
    }
    pipeline = Pipeline.model_validate({"name": "g", "steps": steps})
    pf = PipelineFile(tmp_path / "g.yaml", "g.yaml", pipeline, Positions())
    from llmflow.spec.loader import PolicyFile
    from llmflow.spec.policy import Policy

    pol = PolicyFile(tmp_path / "p.yaml", "p.yaml", Policy.model_validate(POLICY), Positions())
    plan = make_plan(pf, pol)
    position = {s: i for i, wave in enumerate(plan.waves) for s in wave}
    assert sorted(position) == sorted(graph)
    for name, needs in graph.items():
        for dep in needs:
            assert position[dep] < position[name]
    assert [s.id for s in plan.steps] == [s for wave in plan.waves for s in wave]
    assert plan.to_json() == make_plan(pf, pol).to_json()
    assert utf8_len(plan.to_json()) > 0
