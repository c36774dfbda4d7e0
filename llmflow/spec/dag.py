"""The step graph: explicit ``needs``, template references and ``for_each`` over steps.

A loaded pipeline's graph is built once, by :attr:`~llmflow.spec.loader.PipelineFile.graph`
(:func:`build_graph`, the one builder); the loader's cycle check and the planner's
waves both read that one graph.
"""

from __future__ import annotations

import networkx as nx

from llmflow.spec.pipeline import Pipeline
from llmflow.spec.templates import parse_template


def step_dependencies(pipeline: Pipeline, step_id: str) -> set[str]:
    """Every step ``step_id`` reads from: needs, template references and for_each source."""
    step = pipeline.steps[step_id]
    deps = set(step.needs)
    source = step.for_each_source
    if source is not None and source[0] == "steps":
        deps.add(source[1])
    for text in [step.prompt, *(block.text for block in step.system_blocks)]:
        refs = parse_template(text).refs
        if refs is not None:  # a syntax error is reported by the loader
            deps |= refs.steps
    return deps


def build_graph(pipeline: Pipeline) -> nx.DiGraph[str]:
    """Edges point from a dependency to the step that needs it; unknown ids are skipped."""
    graph: nx.DiGraph[str] = nx.DiGraph()
    graph.add_nodes_from(pipeline.steps)
    for step_id in pipeline.steps:
        for dep in step_dependencies(pipeline, step_id):
            if dep in pipeline.steps:
                graph.add_edge(dep, step_id)
    return graph


def find_cycle(graph: nx.DiGraph[str]) -> list[str] | None:
    """The steps of one cycle, in order, closing on the first (``[a, b, a]``); None if acyclic."""
    try:
        edges = nx.find_cycle(graph)
    except nx.NetworkXNoCycle:
        return None
    cycle = [edge[0] for edge in edges]
    start = min(range(len(cycle)), key=lambda i: cycle[i])  # stable: start at the smallest id
    cycle = cycle[start:] + cycle[:start]
    return [*cycle, cycle[0]]


def waves(graph: nx.DiGraph[str]) -> list[list[str]]:
    """Topological layers: every step's dependencies stand in earlier waves."""
    return [sorted(layer) for layer in nx.topological_generations(graph)]
