"""Which tier, mode and output cap a step gets from a policy, and why."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from llmflow.errors import PlanError
from llmflow.spec.pipeline import Step
from llmflow.spec.policy import Policy, RequestSettings, Route, ThinkingConfig


@dataclass(frozen=True, slots=True)
class RouteDecision:
    """The resolved route of one step; ``notes`` say why each choice was made."""

    task: str
    tier: str
    model: str
    mode: Literal["sync", "batch"]
    max_tokens: int
    expected_output_tokens: int
    downgrade_to: str | None
    notes: tuple[str, ...]
    effort: str | None = None
    thinking: ThinkingConfig | None = None
    speed: str | None = None
    inference_geo: str | None = None
    expected_thinking_tokens: int | None = None

    @property
    def settings_source(self) -> dict[str, str]:
        """Which request settings are set (for notes)."""
        found = {
            "effort": self.effort,
            "thinking": self.thinking.type if self.thinking else None,
            "speed": self.speed,
            "inference_geo": self.inference_geo,
        }
        return {k: v for k, v in found.items() if v is not None}


def _setting(name: str, *layers: RequestSettings | None) -> object:
    for layer in layers:
        value = getattr(layer, name, None) if layer is not None else None
        if value is not None:
            return value
    return None


def request_settings(step: Step, route: Route | None, default: Route | None) -> dict[str, object]:
    """effort, thinking, speed, inference_geo and expected_thinking_tokens, each from the
    step, else the task's route, else ``default_route`` (None: the model's default)."""
    names = ("effort", "thinking", "speed", "inference_geo", "expected_thinking_tokens")
    found = {name: _setting(name, step, route, default) for name in names}
    thinking = found["thinking"]
    if isinstance(thinking, str):
        found["thinking"] = ThinkingConfig.model_validate({"type": thinking})
    return found


def resolve_route(policy: Policy, step: Step) -> RouteDecision:
    """Merge the task's route with ``default_route`` and the step's overrides.

    Raises PlanError when the task has no route and the policy no default, or when the
    tier is gated and the step lacks the flag and the route offers no fallback.
    """
    notes: list[str] = []
    route = policy.routes.get(step.task)
    default = policy.default_route
    settings = request_settings(step, route, default)
    if route is None:
        if default is None:
            raise PlanError(
                f"no route for task type '{step.task}' and the policy has no default_route"
            )
        notes.append(f"no route for task '{step.task}': using default_route")
        route = Route()
    tier = route.tier or (default.tier if default else None)
    if tier is None:
        raise PlanError(f"route for '{step.task}' names no tier and default_route has none")
    mode = route.mode or (default.mode if default else None) or "sync"
    max_tokens = step.max_tokens or route.max_tokens or (default.max_tokens if default else None)
    max_tokens = max_tokens or 1024
    expected = (
        step.expected_output_tokens
        or route.expected_output_tokens
        or (default.expected_output_tokens if default else None)
        or policy.default_expected_output_tokens
    )
    tier = _apply_gate(policy, step, route, tier, notes)
    source = "route" if step.task in policy.routes else "default_route"
    notes.append(f"task '{step.task}' → tier {tier} ({policy.tiers[tier].model}) by {source}")
    why = "non-urgent work at 0.5x via the Batches API" if mode == "batch" else "results needed now"
    notes.append(f"mode {mode}: {why}")
    if step.max_tokens:
        notes.append(f"max_tokens {max_tokens} set by the step")
    return RouteDecision(
        task=step.task,
        tier=tier,
        model=policy.tiers[tier].model,
        mode=mode,
        max_tokens=max_tokens,
        expected_output_tokens=min(expected, max_tokens),
        downgrade_to=route.downgrade_to,
        notes=tuple(notes),
        **settings,  # type: ignore[arg-type]
    )


def gate_of(policy: Policy, route: Route, tier: str) -> str | None:
    """The flag a step needs for this route and tier, if any."""
    return route.requires or (policy.tiers[tier].requires if tier in policy.tiers else None)


def _apply_gate(policy: Policy, step: Step, route: Route, tier: str, notes: list[str]) -> str:
    if tier not in policy.tiers:
        raise PlanError(f"tier '{tier}' is not defined in the policy's tiers")
    gate = gate_of(policy, route, tier)
    if gate is None or gate in step.active_flags:
        if gate is not None:
            notes.append(f"gate '{gate}' satisfied: the step opts in to tier {tier}")
        return tier
    fallback = route.fallback_tier
    if fallback is None:
        raise PlanError(
            f"task '{step.task}' routes to tier '{tier}', gated by requires: {gate}; set "
            f"{gate}: true on the step"
            + (" (or flags: [" + gate + "])" if gate != "deep_analysis" else "")
            + ", or give the route a fallback_tier"
        )
    if fallback not in policy.tiers:
        raise PlanError(f"fallback_tier '{fallback}' is not defined in the policy's tiers")
    fallback_gate = policy.tiers[fallback].requires
    if fallback_gate is not None and fallback_gate not in step.active_flags:
        raise PlanError(f"fallback_tier '{fallback}' is itself gated by requires: {fallback_gate}")
    notes.append(f"gate refused tier {tier}: step lacks '{gate}'; using fallback_tier {fallback}")
    return fallback
