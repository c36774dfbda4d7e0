"""One plan parses each template once, compiles it once, and builds the step graph once."""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Any

import networkx as nx
import pytest

from llmflow.cli._config import load_config
from llmflow.planner import build_plan
from llmflow.spec import dag
from llmflow.spec.templates import environment, parse_template

FIXTURES = Path(__file__).parents[1] / "fixtures" / "planner"


def test_one_plan_parses_and_compiles_each_template_once_and_builds_the_graph_once(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    parse_template.cache_clear()  # other tests parsed some of these sources already
    env = environment()
    parsed: Counter[str] = Counter()
    generated: list[int] = []
    graphs: list[int] = []
    builds: list[int] = []
    real_parse, real_generate = env._parse, env._generate
    real_build, real_init = dag.build_graph, nx.DiGraph.__init__

    def parse(source: str, *args: Any, **kwargs: Any) -> Any:
        parsed[source] += 1
        return real_parse(source, *args, **kwargs)

    def generate(tree: Any, *args: Any, **kwargs: Any) -> Any:
        generated.append(id(tree))
        return real_generate(tree, *args, **kwargs)

    def build(pipeline: Any) -> Any:
        builds.append(1)
        return real_build(pipeline)

    def init(self: Any, *args: Any, **kwargs: Any) -> None:
        graphs.append(1)
        real_init(self, *args, **kwargs)

    # the lowest level of jinja2: every parse and every code generation of this environment
    monkeypatch.setattr(env, "_parse", parse)
    monkeypatch.setattr(env, "_generate", generate)
    monkeypatch.setattr(dag, "build_graph", build)
    monkeypatch.setattr(nx.DiGraph, "__init__", init)

    # what `llmflow plan` does: load and check both files (model checks included), plan
    pipeline_file, policy_file, catalog = load_config(
        FIXTURES / "dag.yaml", FIXTURES / "policy.yaml", {}
    )
    assert policy_file is not None
    plan = build_plan(pipeline_file, policy_file, inputs={}, catalog=catalog).plan

    steps = pipeline_file.pipeline.steps
    sources = Counter(
        t for s in steps.values() for t in [s.prompt, *(b.text for b in s.system_blocks)]
    )
    assert max(sources.values()) > 1  # shared system blocks: one source, several steps
    assert parsed == Counter(set(sources))  # each distinct source parsed exactly once
    assert len(generated) == len(set(generated)) == len(sources)  # each compiled once
    assert len(builds) == 1 and len(graphs) == 1
    assert plan.waves == [["classify", "extract"], ["labels", "per_fact"], ["digest"], ["review"]]
    assert sum(step.requests for step in plan.steps) > len(steps)


def test_model_checks_render_and_estimate_a_shared_block_once(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from llmflow.planner import static_prompt, tokens

    estimated: Counter[tuple[str, str]] = Counter()
    rendered: Counter[str] = Counter()
    real_estimate, real_rendered = tokens.estimate_text, static_prompt._rendered

    def estimate(text: str, tokenizer: str = "old") -> int:
        estimated[(text, tokenizer)] += 1
        return real_estimate(text, tokenizer)

    def render(source: str, inputs: Any) -> str:
        rendered[source] += 1
        return real_rendered(source, inputs)

    monkeypatch.setattr(static_prompt, "estimate_text", estimate)
    monkeypatch.setattr(static_prompt, "_rendered", render)
    load_config(FIXTURES / "dag.yaml", FIXTURES / "policy.yaml", {})
    guide = (FIXTURES / "data" / "guide.md").read_text(encoding="utf-8")
    assert rendered["{{ inputs.guide }}"] == 1 and set(rendered.values()) == {1}
    assert any(text == guide for text, _ in estimated) and set(estimated.values()) == {1}
