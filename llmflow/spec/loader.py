"""Loading pipeline and policy files and checking them together.

Every problem found becomes a :class:`~llmflow.errors.Diagnostic` naming
``file:line:col`` and the dotted key; all of a file's problems are raised at once in
one :class:`~llmflow.errors.ConfigError`.
"""

from __future__ import annotations

import copy
import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from pydantic import BaseModel, ValidationError

from llmflow.errors import ConfigError, Diagnostic, PlanError
from llmflow.spec._yaml import NodePath, Positions, load_yaml
from llmflow.spec._yaml import dotted as _dotted
from llmflow.spec.diagnostics import (
    did_you_mean,
    from_validation_error,
    known,
    near_miss,
    resolve_loc,
)
from llmflow.spec.pipeline import DatasetInput, Pipeline, ScalarInput, TextInput
from llmflow.spec.policy import Policy
from llmflow.spec.routing import resolve_route

if TYPE_CHECKING:
    import networkx as nx

ModelT = TypeVar("ModelT", bound=BaseModel)


@dataclass(frozen=True)
class PipelineFile:
    """A loaded pipeline with where it came from and where each node stands."""

    path: Path
    display: str
    pipeline: Pipeline
    positions: Positions

    @cached_property
    def graph(self) -> nx.DiGraph[str]:
        """The step graph, built once (the loader checks it for cycles, the planner
        takes its waves)."""
        from llmflow.spec import dag  # networkx: pipelines only

        return dag.build_graph(self.pipeline)

    @property
    def base_dir(self) -> Path:
        """Directory that input paths are relative to."""
        return self.path.parent

    def input_path(self, name: str) -> Path:
        """Absolute path of a text or dataset input."""
        spec = self.pipeline.inputs[name]
        if not isinstance(spec, TextInput | DatasetInput):
            raise KeyError(f"input '{name}' has no path")
        return (self.base_dir / spec.path).resolve()

    def diagnostic(self, path: NodePath, message: str) -> Diagnostic:
        """A diagnostic positioned on the value at ``path``."""
        pos = self.positions.value(path)
        return Diagnostic(self.display, pos.line, pos.col, _dotted(path), message)


@dataclass(frozen=True, slots=True)
class PolicyFile:
    """A loaded policy with where it came from and where each node stands."""

    path: Path
    display: str
    policy: Policy
    positions: Positions

    def diagnostic(self, path: NodePath, message: str) -> Diagnostic:
        """A diagnostic positioned on the value at ``path``."""
        pos = self.positions.value(path)
        return Diagnostic(self.display, pos.line, pos.col, _dotted(path), message)


#: An extra check of a loaded pair (see :func:`load_pair`): the problems it finds.
PairCheck = Callable[[PipelineFile, PolicyFile], list[Diagnostic]]


def display_path(path: Path) -> str:
    """The path as the user would write it: relative to the working directory when inside it."""
    try:
        return os.path.relpath(path)
    except ValueError:
        return str(path)


def load_pipeline(path: Path | str) -> PipelineFile:
    """Load and check one pipeline file on its own (structure, references, cycles, paths)."""
    loaded, problems = _read_pipeline(Path(path))
    if problems:
        raise ConfigError(problems)
    return loaded


def _read_pipeline(path: Path) -> tuple[PipelineFile, list[Diagnostic]]:
    display = display_path(path)
    pipeline, positions, problems = _load_model(path, display, Pipeline)
    loaded = PipelineFile(path.resolve(), display, pipeline, positions)
    return loaded, problems + _check_pipeline(loaded)


def load_policy(
    path: Path | str,
    is_known_model: Callable[[str], bool] | None = None,
    model_ids: Sequence[str] = (),
) -> PolicyFile:
    """Load and check one policy file.

    ``is_known_model`` checks tier models against a catalog whose ids (``model_ids``)
    are suggested for a misspelt one.
    """
    loaded, problems = _read_policy(Path(path), is_known_model, model_ids)
    if problems:
        raise ConfigError(problems)
    return loaded


def _read_policy(
    path: Path, is_known_model: Callable[[str], bool] | None, model_ids: Sequence[str]
) -> tuple[PolicyFile, list[Diagnostic]]:
    display = display_path(path)
    policy, positions, problems = _load_model(path, display, Policy)
    loaded = PolicyFile(path.resolve(), display, policy, positions)
    return loaded, problems + _check_policy(loaded, is_known_model, model_ids)


def load_pair(
    pipeline_path: Path | str,
    policy_path: Path | str | None,
    *,
    is_known_model: Callable[[str], bool] | None = None,
    model_ids: Sequence[str] = (),
    inputs: Mapping[str, str] | None = None,
    check_pair: PairCheck | None = None,
) -> tuple[PipelineFile, PolicyFile | None]:
    """Load both files and check them together; every diagnostic of both is raised at once.

    ``inputs`` (from ``--input key=value``) are checked against the pipeline's scalar
    inputs when given; a scalar without a default then needs a value. ``check_pair``
    adds checks this layer cannot make (each step against its model): it runs whenever
    both files could be read, and its diagnostics are raised with the rest.
    """
    problems: list[Diagnostic] = []
    pipeline_file: PipelineFile | None = None
    policy_file: PolicyFile | None = None
    policy_ok = False
    try:
        pipeline_file, found = _read_pipeline(Path(pipeline_path))
        problems += found
    except ConfigError as exc:
        problems += exc.diagnostics
    if policy_path is not None:
        try:
            policy_file, found = _read_policy(Path(policy_path), is_known_model, model_ids)
            problems += found
            policy_ok = not found
        except ConfigError as exc:
            problems += exc.diagnostics
    if pipeline_file is not None and policy_file is not None and policy_ok:
        problems += _check_routes(pipeline_file, policy_file)
    if pipeline_file is not None and policy_file is not None and check_pair is not None:
        problems += check_pair(pipeline_file, policy_file)
    if pipeline_file is not None and inputs is not None:
        problems += _check_inputs(pipeline_file, inputs)
    if problems:
        raise ConfigError(problems)
    assert pipeline_file is not None
    return pipeline_file, policy_file


def scalar_values(pipeline_file: PipelineFile, given: Mapping[str, str]) -> dict[str, Any]:
    """Scalar input values: the given ones, else each input's default."""
    values: dict[str, Any] = {}
    for name, spec in pipeline_file.pipeline.inputs.items():
        if isinstance(spec, ScalarInput):
            values[name] = given.get(name, spec.default)
    return values


def _load_model(
    path: Path, display: str, model: type[ModelT]
) -> tuple[ModelT, Positions, list[Diagnostic]]:
    """The model of a file, and the structural problems found on the way.

    When the file is malformed only in fields that can be dropped (an unknown key, a
    wrong-typed optional value), those fields are left out and the rest is returned, so
    the semantic checks can report their problems in the same pass: every error of a
    file at once. Otherwise ConfigError carries the structural problems alone.
    """
    data, positions = load_yaml(path, display)
    if not isinstance(data, dict):
        raise ConfigError([Diagnostic(display, 1, 1, "", "the file must be a YAML mapping")])
    try:
        return model.model_validate(data), positions, []
    except ValidationError as exc:
        problems = from_validation_error(exc, model, data, display, positions)
        lenient = _without_bad_fields(model, data, exc)
        if lenient is None:
            raise ConfigError(problems) from None
        return lenient, positions, problems


def _without_bad_fields(
    model: type[ModelT], data: dict[str, Any], exc: ValidationError
) -> ModelT | None:
    """``data`` validated with every offending mapping field removed, if that is enough.

    Only fields inside a named entity (a step's ``max_tokens``, not the step) are
    dropped, and never list items, so no reference to the entity breaks and every
    position stays right. None when that does not make the data valid.
    """
    pruned = copy.deepcopy(data)
    for detail in exc.errors(include_url=False):
        if detail["type"] in ("missing", "union_tag_invalid"):
            return None
        path, _ = resolve_loc(detail["loc"], data, missing=False)
        if len(path) < 3 or not all(isinstance(part, str) for part in path):
            return None
        parent: Any = pruned
        for part in path[:-1]:
            parent = parent.get(part) if isinstance(parent, dict) else None
        if not isinstance(parent, dict):
            return None
        parent.pop(path[-1], None)
    try:
        return model.model_validate(pruned)
    except ValidationError:
        return None


def _check_pipeline(loaded: PipelineFile) -> list[Diagnostic]:
    from llmflow.spec.dag import find_cycle  # networkx: pipelines only

    pipeline = loaded.pipeline
    problems: list[Diagnostic] = []
    for name, spec in pipeline.inputs.items():
        if isinstance(spec, TextInput | DatasetInput) and not loaded.input_path(name).is_file():
            problems.append(
                loaded.diagnostic(
                    ("inputs", name, "path"),
                    f"file not found: {spec.path} (relative to {display_path(loaded.base_dir)}/)",
                )
            )
    step_ids = list(pipeline.steps)
    for step_id, step in pipeline.steps.items():
        base: NodePath = ("steps", step_id)
        for index, dep in enumerate(step.needs):
            if dep not in pipeline.steps:
                problems.append(
                    loaded.diagnostic(
                        (*base, "needs", index),
                        f"unknown step '{dep}'{did_you_mean(dep, step_ids)}"
                        f" (steps: {known(step_ids)})",
                    )
                )
        source = step.for_each_source
        if source is not None:
            problems += _check_for_each(loaded, step_id, source)
        templates: list[tuple[NodePath, str]] = [((*base, "prompt"), step.prompt)]
        for index, entry in enumerate(step.system):
            block_path: NodePath = (*base, "system", index)
            templates.append(
                (
                    block_path if isinstance(entry, str) else (*block_path, "text"),
                    entry if isinstance(entry, str) else entry.text,
                )
            )
        for node_path, text in templates:
            problems += _check_template(loaded, step_id, node_path, text)
        schema = step.output_schema
        if schema is not None and schema.get("type") != "object":
            problems.append(
                loaded.diagnostic(
                    (*base, "output_schema"),
                    "must be a JSON Schema with `type: object` (structured outputs need an object)",
                )
            )
        if step.abort_after_tokens is not None and not step.stream:
            problems.append(
                loaded.diagnostic(
                    (*base, "abort_after_tokens"),
                    "needs `stream: true` (early abort reads a stream)",
                )
            )
    cycle = find_cycle(loaded.graph)
    if cycle is not None:
        first = cycle[0]
        where: NodePath = (
            ("steps", first, "needs") if pipeline.steps[first].needs else ("steps", first)
        )
        problems.append(loaded.diagnostic(where, "dependency cycle: " + " → ".join(cycle)))
    return problems


def _check_for_each(
    loaded: PipelineFile, step_id: str, source: tuple[str, str]
) -> list[Diagnostic]:
    kind, name = source
    path: NodePath = ("steps", step_id, "for_each")
    pipeline = loaded.pipeline
    if kind == "inputs":
        datasets = [n for n, s in pipeline.inputs.items() if isinstance(s, DatasetInput)]
        if name not in pipeline.inputs:
            return [
                loaded.diagnostic(path, f"unknown input '{name}'{did_you_mean(name, datasets)}")
            ]
        if name not in datasets:
            return [loaded.diagnostic(path, f"input '{name}' is not a dataset (jsonl or csv)")]
        return []
    if name not in pipeline.steps:
        hint = did_you_mean(name, pipeline.steps)
        return [loaded.diagnostic(path, f"unknown step '{name}'{hint}")]
    if name == step_id:
        return [loaded.diagnostic(path, "a step cannot fan out over its own outputs")]
    return []


def _check_template(
    loaded: PipelineFile, step_id: str, node_path: NodePath, text: str
) -> list[Diagnostic]:
    from llmflow.spec.templates import parse_template  # jinja2: pipelines only

    pipeline = loaded.pipeline
    parsed = parse_template(text)
    problem = parsed.problem
    if problem is not None:
        pos = loaded.positions.value(node_path)
        line = pos.line + problem.line if pos.block else pos.line + problem.line - 1
        col = pos.col if problem.line == 1 and not pos.block else 1
        message = f"template syntax error (template line {problem.line}): {problem.message}"
        return [Diagnostic(loaded.display, line, col, _dotted(node_path), message)]
    refs = parsed.references
    problems: list[Diagnostic] = []
    for name in sorted(refs.inputs):
        spec = pipeline.inputs.get(name)
        if spec is None:
            hint = did_you_mean(name, pipeline.inputs)
            problems.append(loaded.diagnostic(node_path, f"unknown input 'inputs.{name}'{hint}"))
        elif isinstance(spec, DatasetInput):
            problems.append(
                loaded.diagnostic(
                    node_path,
                    f"input '{name}' is a dataset: iterate it with `for_each: inputs.{name}`"
                    " and use `item`",
                )
            )
    for name in sorted(refs.steps):
        if name not in pipeline.steps:
            hint = did_you_mean(name, pipeline.steps)
            problems.append(loaded.diagnostic(node_path, f"unknown step 'steps.{name}'{hint}"))
        elif name == step_id:
            problems.append(loaded.diagnostic(node_path, "a step cannot read its own outputs"))
    if refs.uses_item and pipeline.steps[step_id].for_each is None:
        problems.append(
            loaded.diagnostic(node_path, "`item` is only defined in steps with `for_each`")
        )
    for name in sorted(refs.unknown_names):
        hint = did_you_mean(name, ("inputs", "steps", "item"))
        problems.append(
            loaded.diagnostic(
                node_path, f"unknown name '{name}' (templates know inputs, steps, item){hint}"
            )
        )
    return problems


def _check_policy(
    loaded: PolicyFile, is_known_model: Callable[[str], bool] | None, model_ids: Sequence[str]
) -> list[Diagnostic]:
    policy = loaded.policy
    tiers = list(policy.tiers)
    problems: list[Diagnostic] = []

    def tier_ref(path: NodePath, name: str | None) -> None:
        if name is not None and name not in policy.tiers:
            problems.append(
                loaded.diagnostic(
                    path,
                    f"unknown tier '{name}'{did_you_mean(name, tiers)} (tiers: {known(tiers)})",
                )
            )

    if is_known_model is not None:
        for name, tier in policy.tiers.items():
            if not is_known_model(tier.model):
                problems.append(
                    loaded.diagnostic(
                        ("tiers", name, "model"),
                        f"tier '{name}' names no known model: '{tier.model}'"
                        f"{did_you_mean(tier.model, model_ids)}"
                        + (f" (catalog: {known(model_ids)})" if model_ids else ""),
                    )
                )
    for task, route in policy.routes.items():
        for field in ("tier", "fallback_tier", "downgrade_to"):
            tier_ref(("routes", task, field), getattr(route, field))
    if policy.default_route is not None:
        if policy.default_route.tier is None:
            problems.append(loaded.diagnostic(("default_route",), "default_route needs a tier"))
        for field in ("tier", "fallback_tier", "downgrade_to"):
            tier_ref(("default_route", field), getattr(policy.default_route, field))
    for task, route in policy.routes.items():
        if route.tier is None and (
            policy.default_route is None or policy.default_route.tier is None
        ):
            problems.append(
                loaded.diagnostic(
                    ("routes", task), "route names no tier and there is no default_route tier"
                )
            )
    tier_ref(("baseline_tier",), policy.baseline_tier)
    return problems


def _check_routes(pipeline_file: PipelineFile, policy_file: PolicyFile) -> list[Diagnostic]:
    policy = policy_file.policy
    problems: list[Diagnostic] = []
    for step_id, step in pipeline_file.pipeline.steps.items():
        if step.task not in policy.routes:
            tasks = list(policy.routes)
            hint = did_you_mean(step.task, tasks)
            message = (
                f"unknown task type '{step.task}' (policy {policy_file.path.name} knows: "
                f"{known(tasks)}){hint}"
            )
            if policy.default_route is None:
                problems.append(pipeline_file.diagnostic(("steps", step_id, "task"), message))
                continue
            if near_miss(step.task, tasks):  # it would silently fall to default_route
                message += "; fix the name, or give the policy a route for it"
                problems.append(pipeline_file.diagnostic(("steps", step_id, "task"), message))
                continue
        try:
            resolve_route(policy, step)
        except PlanError as exc:
            problems.append(pipeline_file.diagnostic(("steps", step_id, "task"), str(exc)))
        except KeyError:
            continue  # an unknown tier: already reported against the policy file
    return problems


def _check_inputs(pipeline_file: PipelineFile, given: Mapping[str, str]) -> list[Diagnostic]:
    inputs = pipeline_file.pipeline.inputs
    scalars = [n for n, s in inputs.items() if isinstance(s, ScalarInput)]
    problems: list[Diagnostic] = []
    for name in sorted(given):
        if name not in scalars:
            hint = did_you_mean(name, scalars)
            listing = (
                f" (scalar inputs: {known(scalars)})" if scalars else " (it has no scalar inputs)"
            )
            problems.append(
                pipeline_file.diagnostic(
                    ("inputs",), f"--input {name}: unknown scalar input{hint}{listing}"
                )
            )
    for name in scalars:
        spec = inputs[name]
        assert isinstance(spec, ScalarInput)
        if spec.default is None and name not in given:
            problems.append(
                pipeline_file.diagnostic(
                    ("inputs", name),
                    f"scalar input '{name}' has no default: pass --input {name}=VALUE",
                )
            )
    return problems
