"""Every error class the loader reports, with its exact file:line:col and message."""

from __future__ import annotations

from pathlib import Path

import pytest

from llmflow.catalog import load_catalog
from llmflow.errors import ConfigError
from llmflow.spec.loader import load_pair
from llmflow.spec.routing import resolve_route

PIPELINES = "tests/fixtures/pipelines"
POLICIES = "tests/fixtures/policies"
CATALOG = load_catalog()


def diagnostics(
    pipeline: str, policy: str | None = f"{POLICIES}/basic.yaml", **kw: object
) -> list[str]:
    with pytest.raises(ConfigError) as caught:
        load_pair(
            pipeline,
            policy,
            is_known_model=lambda m: CATALOG.get(m) is not None,
            model_ids=CATALOG.ids(),
            **kw,  # type: ignore[arg-type]
        )
    return [str(d) for d in caught.value.diagnostics]


def test_yaml_syntax_error_names_its_position() -> None:
    f = f"{PIPELINES}/invalid/yaml_syntax.yaml"
    assert diagnostics(f) == [f"{f}:6:4: YAML syntax error: expected ',' or ']', but got ':'"]


def test_unknown_keys_suggest_the_right_one() -> None:
    f = f"{PIPELINES}/invalid/unknown_keys.yaml"
    assert diagnostics(f) == [
        f"{f}:3:52: inputs.tickets.limt: unknown key 'limt' (did you mean 'limit'?)",
        f"{f}:6:5: steps.classify.tsk: unknown key 'tsk' (did you mean 'task'?)",
        f"{f}:10:5: steps.classify.max_token: unknown key 'max_token' (did you mean 'max_tokens'?)",
    ]


def test_wrong_types_are_all_reported_without_union_noise() -> None:
    f = f"{PIPELINES}/invalid/wrong_types.yaml"
    assert diagnostics(f) == [
        f"{f}:4:19: inputs.mystery.type: unknown type 'parquet'"
        " (expected one of 'text', 'jsonl', 'csv', 'scalar')",
        f"{f}:10:17: steps.classify.max_tokens: input should be a valid integer,"
        " unable to parse string as an integer, got 'eight'",
        f"{f}:11:12: steps.classify.needs: input should be a valid list, got 'classify_first'",
        f"{f}:13:16: steps.classify.system[0].text: input should be a valid string, got 42",
        f"{f}:13:27: steps.classify.system[0].cache: input should be a valid boolean,"
        " unable to interpret input, got 'maybe'",
    ]


def test_references_to_missing_steps_and_inputs() -> None:
    f = f"{PIPELINES}/invalid/unknown_refs.yaml"
    assert diagnostics(f) == [
        f"{f}:8:15: steps.classify.for_each: unknown input 'tikets' (did you mean 'tickets'?)",
        f"{f}:12:13: steps.digest.needs[0]: unknown step 'clasify' (did you mean 'classify'?)"
        " (steps: classify, digest)",
        f"{f}:13:14: steps.digest.system[0]: unknown input 'inputs.giude' (did you mean 'guide'?)",
        f"{f}:14:13: steps.digest.prompt: input 'tickets' is a dataset:"
        " iterate it with `for_each: inputs.tickets` and use `item`",
        f"{f}:14:13: steps.digest.prompt: unknown step 'steps.clasify' (did you mean 'classify'?)",
        f"{f}:14:13: steps.digest.prompt: `item` is only defined in steps with `for_each`",
        f"{f}:14:13: steps.digest.prompt: unknown name 'guide' (templates know inputs, steps, item)",
    ]


def test_cycle_is_named_step_by_step() -> None:
    f = f"{PIPELINES}/invalid/cycle.yaml"
    assert diagnostics(f) == [
        f"{f}:5:12: steps.draft.needs: dependency cycle: draft → review → draft"
    ]


def test_template_syntax_errors_map_to_file_lines() -> None:
    f = f"{PIPELINES}/invalid/template_syntax.yaml"
    assert diagnostics(f) == [
        f"{f}:5:13: steps.one_line.prompt: template syntax error (template line 1): unexpected '}}'",
        f"{f}:13:1: steps.block.system[1]: template syntax error (template line 3): Unexpected end"
        " of template. Jinja was looking for the following tags: 'endfor' or 'else'. The innermost"
        " block that needs to be closed is 'for'.",
    ]


def test_missing_dataset_and_text_files() -> None:
    f = f"{PIPELINES}/invalid/missing_dataset.yaml"
    where = f"{PIPELINES}/invalid/"
    assert diagnostics(f) == [
        f"{f}:3:32: inputs.tickets.path: file not found: data/no-such-file.jsonl (relative to {where})",
        f"{f}:4:29: inputs.guide.path: file not found: ../nowhere/guide.md (relative to {where})",
    ]


def test_task_types_a_policy_without_default_cannot_route() -> None:
    f = f"{PIPELINES}/invalid/unroutable.yaml"
    knows = "(policy strict.yaml knows: classification, extraction, summarization)"
    assert diagnostics(f, f"{POLICIES}/strict.yaml") == [
        f"{f}:4:11: steps.classify.task: unknown task type 'clasify' {knows}"
        " (did you mean 'classification'?)",
        f"{f}:7:11: steps.plan.task: unknown task type 'complex_reasoning' {knows}",
        f"{f}:10:11: steps.sketch.task: unknown task type 'multi_step_planning' {knows}",
    ]


def test_gated_tier_without_the_flag_and_a_near_miss_task_type_despite_a_default_route() -> None:
    f = f"{PIPELINES}/invalid/unroutable.yaml"
    knows = "(policy basic.yaml knows: classification, complex_reasoning, extraction, multi_step_planning, summarization)"
    # basic.yaml has a default route, but 'clasify' is a near miss of a routed task type:
    # silently running it on the default route would hide a typo. multi_step_planning has
    # a fallback tier; only complex_reasoning is strictly gated.
    assert diagnostics(f) == [
        f"{f}:4:11: steps.classify.task: unknown task type 'clasify' {knows}"
        " (did you mean 'classification'?); fix the name, or give the policy a route for it",
        f"{f}:7:11: steps.plan.task: task 'complex_reasoning' routes to tier 'opus', gated by"
        " requires: deep_analysis; set deep_analysis: true on the step, or give the route a"
        " fallback_tier",
    ]


def test_a_task_type_unlike_any_route_uses_the_default_route(tmp_path: Path) -> None:
    pipeline = tmp_path / "p.yaml"
    pipeline.write_text("name: p\nsteps:\n  t:\n    task: translation\n    prompt: Hola\n")
    pipeline_file, policy_file = load_pair(pipeline, f"{POLICIES}/basic.yaml")
    assert policy_file is not None
    decision = resolve_route(policy_file.policy, pipeline_file.pipeline.steps["t"])
    assert decision.tier == "sonnet"
    assert "no route for task 'translation': using default_route" in decision.notes


def test_tier_naming_no_model_and_unknown_tiers() -> None:
    p = f"{POLICIES}/invalid/bad_refs.yaml"
    assert diagnostics(f"{PIPELINES}/valid/triage.yaml", p) == [
        f"{p}:4:19: tiers.sonnet.model: tier 'sonnet' names no known model: 'claude-sonet-4-6'"
        " (did you mean 'claude-sonnet-4-6'?) (catalog: claude-fable-5, claude-fable-5-1,"
        " claude-fable-5-2, claude-haiku-4-5, claude-haiku-5-5, claude-opus-4-1, claude-opus-4-5,"
        " claude-opus-4-6, claude-opus-4-7, claude-opus-4-8, claude-opus-5, claude-opus-5-5, ...)",
        f"{p}:7:22: routes.extraction.tier: unknown tier 'haikuu' (did you mean 'haiku'?)"
        " (tiers: haiku, sonnet)",
        f"{p}:9:16: baseline_tier: unknown tier 'sonet' (did you mean 'sonnet'?) (tiers: haiku, sonnet)",
    ]


def test_policy_value_errors_come_with_the_policys_other_errors() -> None:
    p = f"{POLICIES}/invalid/bad_tiers.yaml"
    tiers = "(tiers: haiku, opus, sonnet)"
    assert diagnostics(f"{PIPELINES}/valid/triage.yaml", p) == [
        f"{p}:4:19: tiers.sonnet.model: tier 'sonnet' names no known model: 'claude-sonet-4-6'"
        " (did you mean 'claude-sonnet-4-6'?) (catalog: claude-fable-5, claude-fable-5-1,"
        " claude-fable-5-2, claude-haiku-4-5, claude-haiku-5-5, claude-opus-4-1, claude-opus-4-5,"
        " claude-opus-4-6, claude-opus-4-7, claude-opus-4-8, claude-opus-5, claude-opus-5-5, ...)",
        f"{p}:5:54: tiers.opus.input_usd_per_mtok: input should be greater than or equal to 0, got -1",
        f"{p}:7:39: routes.classification.mode: input should be 'sync' or 'batch', got 'bulk'",
        f"{p}:8:43: routes.extraction.downgrade_to: unknown tier 'haikuu' (did you mean 'haiku'?) {tiers}",
        f"{p}:10:16: baseline_tier: unknown tier 'sonet' (did you mean 'sonnet'?) {tiers}",
    ]


def test_structural_and_semantic_errors_of_a_pipeline_come_together() -> None:
    f = f"{PIPELINES}/invalid/mixed.yaml"
    assert diagnostics(f) == [
        f"{f}:5:13: steps.draft.prompt: template syntax error (template line 1): unexpected '}}'",
        f"{f}:6:5: steps.draft.max_token: unknown key 'max_token' (did you mean 'max_tokens'?)",
        f"{f}:9:13: steps.review.needs[0]: unknown step 'critic' (steps: draft, review)",
        f"{f}:11:18: steps.review.temperature: input should be a valid number, unable to parse"
        " string as a number, got 'hot'",
    ]


def test_errors_of_both_files_come_together() -> None:
    f = f"{PIPELINES}/invalid/cycle.yaml"
    p = f"{POLICIES}/invalid/bad_tiers.yaml"
    found = diagnostics(f, p)
    assert len(found) == 6  # the cycle, and the policy's five
    assert {line.split(":")[0] for line in found} == {f, p}


def test_scalar_inputs_need_a_value_and_unknown_inputs_are_refused() -> None:
    f = f"{PIPELINES}/invalid/scalars.yaml"
    assert diagnostics(f, inputs={"wek": "2026-W47"}) == [
        f"{f}:3:3: inputs: --input wek: unknown scalar input (did you mean 'week'?)"
        " (scalar inputs: team, week)",
        f"{f}:3:9: inputs.week: scalar input 'week' has no default: pass --input week=VALUE",
    ]


def test_valid_pipeline_loads_with_both_policies_meant_for_it() -> None:
    pipeline_file, policy_file = load_pair(
        f"{PIPELINES}/valid/triage.yaml", f"{POLICIES}/basic.yaml"
    )
    assert policy_file is not None
    assert list(pipeline_file.pipeline.steps) == [
        "classify",
        "extract",
        "digest",
        "per_doc",
        "deep",
    ]
    assert pipeline_file.input_path("tickets").name == "tickets.jsonl"


def test_jinja_builtins_are_not_unknown_names() -> None:
    from llmflow.spec.templates import references

    refs = references(
        "{% for x in steps.a.outputs %}{{ loop.index }}. {{ x }} {{ range(2) | list }}"
        "{% set ns = namespace(n=0) %}{% endfor %}{{ dict(a=1) }} {{ lipsum(1) }} {{ bogus }}"
    )
    assert refs.steps == {"a"}
    assert refs.unknown_names == {"bogus"}
