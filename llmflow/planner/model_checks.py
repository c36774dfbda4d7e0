"""Each step checked against the model it resolves to, before anything is sent.

For every step the request it would send is described as a
:class:`~llmflow.catalog.rules.RequestShape` and checked with
:func:`~llmflow.catalog.rules.check_request` (the same rules the emulator enforces), on
the step's tier and on its route's ``downgrade_to`` tier. Each violation becomes a
diagnostic at the YAML key that set the value at fault (see :mod:`.setting_origins`).
Every tier's model is checked for its lifecycle: retired is an error, deprecated a
warning.
"""

from __future__ import annotations

import datetime as dt
from collections import defaultdict
from collections.abc import Mapping
from dataclasses import dataclass, field

from llmflow.catalog import Catalog, ModelInfo
from llmflow.catalog.rules import (
    SAMPLING_PARAMS,
    RequestShape,
    Violation,
    check_request,
    lifecycle_violation,
    strict_schema,
)
from llmflow.errors import Diagnostic, PlanError
from llmflow.planner.requests import structured_via
from llmflow.planner.setting_origins import SettingOrigins
from llmflow.planner.static_prompt import StaticPrompt, StaticPrompts, text_inputs
from llmflow.spec.loader import PipelineFile, PolicyFile
from llmflow.spec.pipeline import Step
from llmflow.spec.routing import RouteDecision, resolve_route

#: Rules about the model itself, reported once per tier rather than per step.
_LIFECYCLE_RULES = ("retired", "deprecated")


@dataclass(slots=True)
class ModelCheckReport:
    """What the checks found: errors refuse the configuration, warnings do not."""

    errors: list[Diagnostic] = field(default_factory=list)
    warnings: list[Diagnostic] = field(default_factory=list)


@dataclass(frozen=True, slots=True)
class _Target:
    """One model a step's requests may go to: its tier, or its route's downgrade tier."""

    tier: str
    model: ModelInfo
    downgrade: bool = False

    def label(self) -> str:
        return f"downgrade_to tier {self.tier}" if self.downgrade else f"tier {self.tier}"


@dataclass(slots=True)
class _Findings:
    """Violations grouped by where they are reported, so one route setting that several
    steps inherit is one diagnostic naming them all."""

    #: (diagnostic, target label, model note, severity) → the steps it applies to.
    groups: dict[tuple[Diagnostic, str, str, str], list[str]] = field(
        default_factory=lambda: defaultdict(list)
    )

    def add(self, where: Diagnostic, severity: str, target: _Target, step_id: str) -> None:
        model = "" if target.model.id in where.message else f" ({target.model.id})"
        steps = self.groups[(where, target.label(), model, severity)]
        if step_id not in steps:
            steps.append(step_id)

    def report_into(self, report: ModelCheckReport) -> None:
        for (where, label, model, severity), steps in self.groups.items():
            noun = "step" if len(steps) == 1 else "steps"
            message = f"{where.message} [{noun} {', '.join(steps)} → {label}{model}]"
            found = Diagnostic(where.file, where.line, where.col, where.key, message)
            (report.warnings if severity == "warning" else report.errors).append(found)


def check_models(
    pipeline_file: PipelineFile,
    policy_file: PolicyFile,
    catalog: Catalog,
    *,
    today: dt.date,
    inputs: Mapping[str, str] | None = None,
) -> ModelCheckReport:
    """Check every step against its model (and its downgrade model), and every tier's
    model for its lifecycle. Unknown tiers, models and routes are skipped: the loader
    reports them."""
    report = ModelCheckReport()
    findings = _Findings()
    used_by: dict[str, list[str]] = defaultdict(list)
    namespace = text_inputs(pipeline_file, inputs or {})
    prompts = StaticPrompts(namespace) if namespace is not None else None
    for step_id, step in pipeline_file.pipeline.steps.items():
        decision = _decision(policy_file, step)
        if decision is None:
            continue
        origins = SettingOrigins(pipeline_file, policy_file, step_id, step)
        prompt = prompts.of(step_id, step) if prompts is not None else None
        for target in _targets(policy_file, catalog, decision):
            used_by[target.tier].append(step_id)
            shape = request_shape(step, decision, target.model, prompt)
            for violation in check_request(target.model, shape, today=today):
                if violation.rule in _LIFECYCLE_RULES:
                    continue
                where = _locate(origins, violation, target, prompt)
                findings.add(where, violation.severity, target, step_id)
    findings.report_into(report)
    _check_tiers(policy_file, catalog, today, used_by, report)
    return report


def request_shape(
    step: Step, decision: RouteDecision, model: ModelInfo, prompt: StaticPrompt | None = None
) -> RequestShape:
    """What the rules look at in the requests ``step`` sends to ``model``.

    A step's output schema goes as ``output_config.format`` wherever the model supports
    structured outputs, else as a forced tool.
    """
    schema = step.output_schema
    structured = structured_via(model) == "format"
    if schema is not None and schema.get("type") != "object":
        schema = None  # the loader refuses it already: its problems would only repeat
    thinking = decision.thinking
    return RequestShape(
        batch=decision.mode == "batch",
        max_tokens=decision.max_tokens,
        sampling=tuple(name for name in SAMPLING_PARAMS if getattr(step, name) is not None),
        effort=decision.effort,
        thinking=thinking.type if thinking is not None else None,
        thinking_budget=thinking.budget_tokens if thinking is not None else None,
        speed=decision.speed,
        inference_geo=decision.inference_geo,
        forced_tool=step.output_schema is not None and not structured,
        output_schema=strict_schema(schema) if schema is not None and structured else None,
        stream=step.stream,
        prompt_tokens=prompt.tokens(model) if prompt is not None else None,
    )


def _decision(policy_file: PolicyFile, step: Step) -> RouteDecision | None:
    try:
        return resolve_route(policy_file.policy, step)
    except (PlanError, KeyError):
        return None  # no route, a gate refused, or an unknown tier: the loader says so


def _targets(policy_file: PolicyFile, catalog: Catalog, decision: RouteDecision) -> list[_Target]:
    targets: list[_Target] = []
    for tier, downgrade in ((decision.tier, False), (decision.downgrade_to, True)):
        model = _tier_model(policy_file, catalog, tier)
        if tier is not None and model is not None:
            targets.append(_Target(tier, model, downgrade))
    return targets


def _tier_model(policy_file: PolicyFile, catalog: Catalog, tier: str | None) -> ModelInfo | None:
    spec = policy_file.policy.tiers.get(tier) if tier is not None else None
    if spec is None:
        return None
    return catalog.resolve(spec.model, spec.model_dump())


def _locate(
    origins: SettingOrigins, violation: Violation, target: _Target, prompt: StaticPrompt | None
) -> Diagnostic:
    """The violation's message at the key that set the value at fault."""
    if violation.rule == "context_window" and prompt is not None:
        return origins.pipeline_file.diagnostic(prompt.largest(target.model), violation.message)
    return origins.diagnostic(violation.param, violation.message, tier=target.tier)


def _check_tiers(
    policy_file: PolicyFile,
    catalog: Catalog,
    today: dt.date,
    used_by: Mapping[str, list[str]],
    report: ModelCheckReport,
) -> None:
    for name in policy_file.policy.tiers:
        model = _tier_model(policy_file, catalog, name)
        found = lifecycle_violation(model, today) if model is not None else None
        if found is None:
            continue
        steps = sorted(set(used_by.get(name, ())))
        usage = f", used by step{'s' if len(steps) > 1 else ''} {', '.join(steps)}" if steps else ""
        where = policy_file.diagnostic(
            ("tiers", name, "model"), f"{found.message} [tier {name}{usage}]"
        )
        (report.warnings if found.severity == "warning" else report.errors).append(where)
