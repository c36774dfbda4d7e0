"""Which YAML key set each setting of a step's requests, for positioned diagnostics.

A request setting (``effort``, ``thinking``, ``speed``, ``inference_geo``,
``max_tokens``) comes from the step, else its task's route, else ``default_route``;
sampling, ``stream`` and ``output_schema`` only from the step. A rule about the model
itself (it is retired, or nothing above set the value) points at the tier's ``model``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

from llmflow.errors import Diagnostic
from llmflow.spec._yaml import NodePath
from llmflow.spec.loader import PipelineFile, PolicyFile
from llmflow.spec.pipeline import Step
from llmflow.spec.policy import RequestSettings, Route, ThinkingConfig

#: Request parameter (as :class:`~llmflow.catalog.rules.Violation` names it) → the
#: setting of a step or route that decides it.
SETTING_OF_PARAM: Final[dict[str, str]] = {
    "temperature": "temperature",
    "top_p": "top_p",
    "top_k": "top_k",
    "output_config.effort": "effort",
    "thinking.type": "thinking",
    "thinking.budget_tokens": "thinking",
    "speed": "speed",
    "inference_geo": "inference_geo",
    "max_tokens": "max_tokens",
    "stream": "stream",
    "tool_choice": "output_schema",
    "output_config.format": "output_schema",
    "output_config.format.schema": "output_schema",
    "messages": "prompt",
}
#: Settings a route or default_route may also give (the step's own wins).
LAYERED: Final = ("effort", "thinking", "speed", "inference_geo", "max_tokens")


@dataclass(frozen=True, slots=True)
class SettingOrigins:
    """Where the settings of one step's requests were written."""

    pipeline_file: PipelineFile
    policy_file: PolicyFile
    step_id: str
    step: Step

    def diagnostic(self, param: str, message: str, *, tier: str) -> Diagnostic:
        """``message`` at the key that set request parameter ``param`` (the tier's
        ``model`` when no key did)."""
        setting = SETTING_OF_PARAM.get(param)
        if setting is None:
            return self.policy_file.diagnostic(("tiers", tier, "model"), message)
        sub = param.split(".", 1)[1] if param.startswith("thinking.") else None
        if setting not in LAYERED or getattr(self.step, setting, None) is not None:
            node = _node(("steps", self.step_id, setting), self.step, sub)
            return self.pipeline_file.diagnostic(node, message)
        for path, layer in self._policy_layers():
            if getattr(layer, setting, None) is not None:
                return self.policy_file.diagnostic(_node((*path, setting), layer, sub), message)
        return self.policy_file.diagnostic(("tiers", tier, "model"), message)

    def _policy_layers(self) -> list[tuple[NodePath, Route]]:
        policy = self.policy_file.policy
        layers: list[tuple[NodePath, Route]] = []
        route = policy.routes.get(self.step.task)
        if route is not None:
            layers.append((("routes", self.step.task), route))
        if policy.default_route is not None:
            layers.append((("default_route",), policy.default_route))
        return layers


def _node(path: NodePath, layer: RequestSettings, sub: str | None) -> NodePath:
    """``thinking.type`` / ``thinking.budget_tokens`` when thinking was written as a
    mapping that has the key, else the setting itself."""
    thinking = layer.thinking
    if sub is None or not isinstance(thinking, ThinkingConfig):
        return path
    if sub == "budget_tokens" and thinking.budget_tokens is None:
        return path
    return (*path, sub)
