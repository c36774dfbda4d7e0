"""`llmflow validate` checks every step against the model it resolves to (API rules of
late 2026): each refused setting is reported at the key that set it, all at once."""

from __future__ import annotations

import datetime as dt

import pytest
from typer.testing import CliRunner

from llmflow.cli import app

runner = CliRunner()
DIR = "tests/fixtures/model_checks"
POLICY = "policy.yaml"
SAMPLING = "(sampling parameters are refused on Opus 4.7 and every later model); remove it"
NO_RESIDENCY = "does not offer data residency (inference_geo needs a 4.6 or later model)"


def pin_today(monkeypatch: pytest.MonkeyPatch, day: dt.date) -> None:
    monkeypatch.setattr("llmflow.cli._config.clock", lambda: day)


@pytest.fixture(autouse=True)
def _catalog_day(monkeypatch: pytest.MonkeyPatch) -> None:
    """Rules that depend on the date (fast mode removal, retirement) see 2026-11-30."""
    pin_today(monkeypatch, dt.date(2026, 11, 30))


def validate(pipeline: str, policy: str = POLICY) -> tuple[int, list[str], list[str]]:
    """Exit code, error lines and warning lines of `llmflow validate`."""
    result = runner.invoke(app, ["validate", f"{DIR}/{pipeline}", "--policy", f"{DIR}/{policy}"])
    assert "Traceback" not in result.output
    lines = result.stderr.splitlines()
    warnings = [line for line in lines if line.startswith("warning: ")]
    errors = [line for line in lines if not line.startswith("warning: ")]
    if errors:
        count = len(errors) - 1
        assert errors[-1] == f"{count} error{'s' if count != 1 else ''}"
        errors = errors[:-1]
    return result.exit_code, errors, warnings


def test_sampling_is_refused_on_opus_4_7_and_later_only() -> None:
    code, errors, _ = validate("sampling.yaml")
    assert code == 2
    assert errors == [
        f"{DIR}/sampling.yaml:6:18: steps.on_opus55.temperature: claude-opus-5-5 does not"
        f" accept temperature {SAMPLING} [step on_opus55 → tier opus55]",
        f"{DIR}/sampling.yaml:10:12: steps.on_fable52.top_p: claude-fable-5-2 does not accept"
        f" top_p {SAMPLING} [step on_fable52 → tier fable52]",
        f"{DIR}/sampling.yaml:11:12: steps.on_fable52.top_k: claude-fable-5-2 does not accept"
        f" top_k {SAMPLING} [step on_fable52 → tier fable52]",
        f"{DIR}/sampling.yaml:15:18: steps.on_opus47.temperature: claude-opus-4-7 does not"
        f" accept temperature {SAMPLING} [step on_opus47 → tier opus47]",
    ]


def test_every_thinking_rule() -> None:
    code, errors, _ = validate("thinking.yaml")
    assert code == 2
    f = f"{DIR}/thinking.yaml"
    assert errors == [
        # Opus 5.5: adaptive only, always on.
        f"{f}:7:22: steps.opus55_enabled.thinking.type: thinking 'enabled' is not accepted by"
        " claude-opus-5-5 (accepted: adaptive) [step opus55_enabled → tier opus55]",
        f"{f}:11:15: steps.opus55_disabled.thinking: thinking 'disabled' is not accepted by"
        " claude-opus-5-5 (accepted: adaptive) [step opus55_disabled → tier opus55]",
        # Sonnet 5.5: no disabled; between_tools only at low-high effort.
        f"{f}:20:15: steps.sonnet55_disabled.thinking: thinking 'disabled' is not accepted by"
        " claude-sonnet-5-5 (accepted: adaptive, between_tools)"
        " [step sonnet55_disabled → tier sonnet55]",
        f"{f}:25:15: steps.sonnet55_between_tools_xhigh.thinking: thinking 'between_tools' is"
        " accepted by claude-sonnet-5-5 only at effort low, medium, high (this request runs at"
        " xhigh) [step sonnet55_between_tools_xhigh → tier sonnet55]",
        # Haiku 5.5: disabled only at low-high effort; enabled refused.
        f"{f}:36:22: steps.haiku55_disabled_max.thinking.type: thinking 'disabled' is accepted"
        " by claude-haiku-5-5 only at effort low, medium, high (this request runs at max)"
        " [step haiku55_disabled_max → tier haiku55]",
        f"{f}:44:22: steps.haiku55_enabled.thinking.type: thinking 'enabled' is not accepted by"
        " claude-haiku-5-5 (accepted: adaptive, disabled) [step haiku55_enabled → tier haiku55]",
        # Sonnet 5, Opus 5, Opus 4.8, Opus 4.7: enabled refused.
        f"{f}:49:22: steps.sonnet5_enabled.thinking.type: thinking 'enabled' is not accepted by"
        " claude-sonnet-5 (accepted: adaptive, disabled) [step sonnet5_enabled → tier sonnet5]",
        f"{f}:53:22: steps.opus5_enabled.thinking.type: thinking 'enabled' is not accepted by"
        " claude-opus-5 (accepted: adaptive, disabled) [step opus5_enabled → tier opus5]",
        f"{f}:57:22: steps.opus48_enabled.thinking.type: thinking 'enabled' is not accepted by"
        " claude-opus-4-8 (accepted: adaptive, disabled) [step opus48_enabled → tier opus48]",
        f"{f}:61:22: steps.opus47_enabled.thinking.type: thinking 'enabled' is not accepted by"
        " claude-opus-4-7 (accepted: adaptive, disabled) [step opus47_enabled → tier opus47]",
        # Sonnet 4.6: enabled needs a budget of at least 1024, below max_tokens.
        f"{f}:79:46: steps.sonnet46_small_budget.thinking.budget_tokens: thinking 'enabled'"
        " needs budget_tokens >= 1024 [step sonnet46_small_budget → tier sonnet46"
        " (claude-sonnet-4-6)]",
        f"{f}:84:46: steps.sonnet46_budget_over_max_tokens.thinking.budget_tokens:"
        " budget_tokens 4096 must be less than max_tokens 2048"
        " [step sonnet46_budget_over_max_tokens → tier sonnet46 (claude-sonnet-4-6)]",
        # Opus 4.5 (and Haiku/Sonnet 4.5): enabled only.
        f"{f}:89:15: steps.opus45_adaptive.thinking: thinking 'adaptive' is not accepted by"
        " claude-opus-4-5 (accepted: enabled, disabled) [step opus45_adaptive → tier opus45]",
    ]


def test_effort_levels_a_model_does_not_offer() -> None:
    code, errors, _ = validate("effort.yaml")
    assert code == 2
    assert errors == [
        f"{DIR}/effort.yaml:6:13: steps.sonnet46_xhigh.effort: effort 'xhigh' is not offered on"
        " claude-sonnet-4-6 (offered: low, medium, high) [step sonnet46_xhigh → tier sonnet46]",
        f"{DIR}/effort.yaml:10:13: steps.opus46_max.effort: effort 'max' is not offered on"
        " claude-opus-4-6 (offered: low, medium, high) [step opus46_max → tier opus46]",
        f"{DIR}/effort.yaml:14:13: steps.haiku45_low.effort: claude-haiku-4-5 does not support"
        " effort [step haiku45_low → tier haiku45]",
    ]


def test_fast_mode_not_offered_in_batch_or_after_removal() -> None:
    code, errors, _ = validate("fast.yaml")
    assert code == 2
    in_batch = "speed is not accepted in batches (fast mode is sync only)"
    assert errors == [
        f"{DIR}/fast.yaml:10:12: steps.opus55_batch_fast.speed: {in_batch}"
        " [step opus55_batch_fast → tier opus55 (claude-opus-5-5)]",
        f"{DIR}/fast.yaml:14:12: steps.sonnet55_fast.speed: fast mode is not offered on"
        " claude-sonnet-5-5 [step sonnet55_fast → tier sonnet55]",
        f"{DIR}/fast.yaml:18:12: steps.haiku55_fast.speed: fast mode is not offered on"
        " claude-haiku-5-5 [step haiku55_fast → tier haiku55]",
        f"{DIR}/fast.yaml:22:12: steps.opus47_fast.speed: fast mode is not offered on"
        " claude-opus-4-7 [step opus47_fast → tier opus47]",
        f"{DIR}/fast.yaml:26:12: steps.opus48_fast.speed: fast mode on claude-opus-4-8 was"
        " removed on 2026-11-30 [step opus48_fast → tier opus48]",
        f"{DIR}/fast.yaml:35:12: steps.opus55_batch_standard.speed: {in_batch}"
        " [step opus55_batch_standard → tier opus55 (claude-opus-5-5)]",
    ]


def test_fast_mode_on_opus_4_8_is_fine_the_day_before_its_removal(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    pin_today(monkeypatch, dt.date(2026, 11, 29))
    _, errors, _ = validate("fast.yaml")
    assert not any("opus48_fast" in line for line in errors)
    assert len(errors) == 5


def test_data_residency_needs_a_4_6_or_later_model() -> None:
    code, errors, _ = validate("residency.yaml")
    assert code == 2
    assert errors == [
        f"{DIR}/residency.yaml:6:20: steps.haiku45_us.inference_geo: claude-haiku-4-5"
        f" {NO_RESIDENCY} [step haiku45_us → tier haiku45]",
        f"{DIR}/residency.yaml:10:20: steps.opus45_us.inference_geo: claude-opus-4-5"
        f" {NO_RESIDENCY} [step opus45_us → tier opus45]",
        f"{DIR}/residency.yaml:18:20: steps.sonnet55_eu.inference_geo: inference_geo 'eu' is not"
        " offered (offered: global, us) [step sonnet55_eu → tier sonnet55 (claude-sonnet-5-5)]",
    ]


def test_output_schemas_outside_the_structured_output_limits() -> None:
    code, errors, _ = validate("schema.yaml")
    assert code == 2
    f = f"{DIR}/schema.yaml"
    assert errors == [
        f"{f}:15:7: steps.bounded.output_schema: /properties/score: `minimum` is not supported"
        " in structured outputs [step bounded → tier opus55 (claude-opus-5-5)]",
        f"{f}:15:7: steps.bounded.output_schema: /properties/score: `maximum` is not supported"
        " in structured outputs [step bounded → tier opus55 (claude-opus-5-5)]",
        f"{f}:15:7: steps.bounded.output_schema: /properties/name: `maxLength` is not supported"
        " in structured outputs [step bounded → tier opus55 (claude-opus-5-5)]",
        f"{f}:24:7: steps.open.output_schema: /: structured outputs need `additionalProperties:"
        " false` [step open → tier sonnet55 (claude-sonnet-5-5)]",
        f"{f}:32:7: steps.recursive.output_schema: /$defs/node/properties/children/items:"
        " recursive schemas are not supported ($ref #/$defs/node)"
        " [step recursive → tier haiku55 (claude-haiku-5-5)]",
        f"{f}:32:7: steps.recursive.output_schema: /: recursive schemas are not supported"
        " (#/$defs/node) [step recursive → tier haiku55 (claude-haiku-5-5)]",
        f"{f}:44:7: steps.optional.output_schema: 25 optional properties; structured outputs"
        " allow at most 24 (list them in `required`) [step optional → tier haiku55"
        " (claude-haiku-5-5)]",
    ]


def test_static_prompt_and_max_tokens_must_fit_the_context_window() -> None:
    code, errors, _ = validate("context.yaml", "context_policy.yaml")
    assert code == 2
    # The new tokenizer (Haiku 5.5) counts the same guide as more tokens than the old one.
    assert errors == [
        f"{DIR}/context.yaml:10:44: steps.answer.system[1]: prompt is too long: 4537 tokens +"
        " max_tokens 1024 > 3000, the context window of claude-haiku-5-5 [step answer → tier"
        " small]",
        f"{DIR}/context.yaml:16:44: steps.answer_old.system[1]: prompt is too long: 3491 tokens"
        " + max_tokens 1024 > 3000, the context window of claude-haiku-4-5 [step answer_old →"
        " tier old_small]",
    ]


def test_settings_are_reported_where_the_route_set_them() -> None:
    code, errors, _ = validate("origins.yaml", "origins_policy.yaml")
    assert code == 2
    p = f"{DIR}/origins_policy.yaml"
    assert errors == [
        f"{DIR}/origins.yaml:25:13: steps.streamed_in_batch.stream: stream is not accepted in"
        " batches [step streamed_in_batch → tier sonnet55 (claude-sonnet-5-5)]",
        # One route setting inherited by two steps: one diagnostic naming both;
        # own_effort sets its own effort and is not named.
        f"{p}:11:13: routes.summarize.effort: effort 'xhigh' is not offered on claude-sonnet-4-6"
        " (offered: low, medium, high) [steps first_summary, second_summary → tier sonnet46]",
        # Valid on the route's tier, refused on its downgrade_to tier.
        f"{p}:14:20: routes.resident.inference_geo: claude-haiku-4-5 {NO_RESIDENCY}"
        " [step resident → downgrade_to tier haiku45]",
        f"{p}:18:17: routes.long.max_tokens: max_tokens 100000 > 64000, the maximum output of"
        " claude-haiku-4-5 [step too_long → tier haiku45]",
    ]


def test_default_route_settings_apply_where_step_and_route_say_nothing() -> None:
    code, errors, _ = validate("default_route.yaml", "default_route_policy.yaml")
    assert code == 2
    assert errors == [
        f"{DIR}/default_route_policy.yaml:10:20: default_route.thinking.type: thinking 'enabled'"
        " is not accepted by claude-opus-5-5 (accepted: adaptive) [step unrouted → tier opus55]",
    ]


def test_a_retired_model_is_an_error_naming_its_replacement() -> None:
    code, errors, warnings = validate("lifecycle.yaml", "retired_policy.yaml")
    assert code == 2
    assert errors == [
        f"{DIR}/retired_policy.yaml:3:16: tiers.old.model: claude-opus-4-1 was retired on"
        " 2026-08-05; use claude-opus-5-5 [tier old, used by step analyse]"
    ]
    assert warnings == []


def test_a_deprecated_model_is_a_warning_and_validate_succeeds() -> None:
    code, errors, warnings = validate("lifecycle.yaml", "deprecated_policy.yaml")
    assert code == 0 and errors == []
    p = f"{DIR}/deprecated_policy.yaml"
    assert warnings == [
        f"warning: {p}:3:16: tiers.dep.model: claude-sonnet-4-5 is deprecated, retires"
        " 2026-11-30 (today); use claude-sonnet-5-5 [tier dep, used by step analyse]",
        # A tier no step uses is still checked (and a dated alias is its model).
        f"warning: {p}:4:18: tiers.spare.model: claude-sonnet-4-5 is deprecated, retires"
        " 2026-11-30 (today); use claude-sonnet-5-5 [tier spare]",
    ]


def test_deprecation_says_today_only_on_the_retirement_day(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    pin_today(monkeypatch, dt.date(2026, 11, 1))
    code, _, warnings = validate("lifecycle.yaml", "deprecated_policy.yaml")
    assert code == 0
    assert warnings[0].endswith(
        "tiers.dep.model: claude-sonnet-4-5 is deprecated, retires 2026-11-30; use"
        " claude-sonnet-5-5 [tier dep, used by step analyse]"
    )


def test_model_errors_come_with_the_files_other_errors() -> None:
    result = runner.invoke(
        app,
        ["validate", f"{DIR}/invalid_mixed.yaml", "--policy", f"{DIR}/retired_policy.yaml"],
    )
    assert result.exit_code == 2
    assert result.stderr.splitlines() == [
        f"{DIR}/invalid_mixed.yaml:5:13: steps.analyse.needs[0]: unknown step 'nowhere'"
        " (did you mean 'answer'?)"
        " (steps: analyse, answer)",
        f"{DIR}/invalid_mixed.yaml:10:18: steps.answer.temperature: claude-opus-5-5 does not"
        f" accept temperature {SAMPLING} [step answer → tier current]",
        f"{DIR}/retired_policy.yaml:3:16: tiers.old.model: claude-opus-4-1 was retired on"
        " 2026-08-05; use claude-opus-5-5 [tier old, used by step analyse]",
        "3 errors",
    ]


@pytest.mark.parametrize("command", ["plan", "run"])
def test_plan_and_run_refuse_the_same_steps(command: str) -> None:
    args = [command, f"{DIR}/sampling.yaml", "--policy", f"{DIR}/{POLICY}"]
    if command == "run":
        args += ["--backend", "emulator", "--state-dir", "/nonexistent/never-created"]
    result = runner.invoke(app, args)
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output
    assert result.stderr.splitlines()[-1] == "4 errors"
    assert f"{DIR}/sampling.yaml:6:18: steps.on_opus55.temperature:" in result.stderr


def test_plan_prints_deprecation_warnings_and_succeeds() -> None:
    result = runner.invoke(
        app,
        [
            "plan",
            f"{DIR}/lifecycle.yaml",
            "-p",
            f"{DIR}/deprecated_policy.yaml",
            "--format",
            "json",
        ],
    )
    assert result.exit_code == 0, result.output
    assert result.stderr.startswith(
        f"warning: {DIR}/deprecated_policy.yaml:3:16: tiers.dep.model: claude-sonnet-4-5 is"
        " deprecated"
    )
    assert result.stdout.lstrip().startswith("{")  # stdout stays machine-readable
