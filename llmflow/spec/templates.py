"""Prompt templates: Jinja2 in a sandbox with strict undefined; references found statically.

Dataset values are data, never templates: they are passed in the render context and
never compiled. The namespace of a template is ``inputs.<name>`` (text and scalar
inputs), ``item`` (the current item of a ``for_each`` step), ``steps.<id>.output`` and
``steps.<id>.outputs`` (upstream results).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from functools import cache
from typing import Any

from jinja2 import StrictUndefined, Template, TemplateSyntaxError, nodes
from jinja2.sandbox import ImmutableSandboxedEnvironment

NAMESPACES = ("inputs", "steps", "item")
#: Names Jinja itself defines inside templates (loops, macros) besides its globals.
_JINJA_NAMES = frozenset({"loop", "caller", "varargs", "kwargs", "self", "super"})


@dataclass(frozen=True, slots=True)
class TemplateReferences:
    """What a template reads: input names, step ids, and whether it uses ``item``."""

    inputs: frozenset[str]
    steps: frozenset[str]
    uses_item: bool
    unknown_names: frozenset[str]

    @property
    def is_static(self) -> bool:
        """True when the text is the same for every request of the step."""
        return not self.steps and not self.uses_item


@dataclass(frozen=True, slots=True)
class TemplateProblem:
    """A template syntax error: its 1-based line inside the template, and the message."""

    line: int
    message: str


@cache
def environment() -> ImmutableSandboxedEnvironment:
    """The one sandboxed environment every template is compiled in."""
    return ImmutableSandboxedEnvironment(
        undefined=StrictUndefined, autoescape=False, keep_trailing_newline=True
    )


def check_syntax(source: str) -> TemplateProblem | None:
    """None when ``source`` compiles, else where and why it does not."""
    try:
        environment().parse(source)
    except TemplateSyntaxError as exc:
        return TemplateProblem(exc.lineno or 1, exc.message or "template syntax error")
    return None


@cache
def references(source: str) -> TemplateReferences:
    """The inputs, steps and item a (syntactically valid) template reads."""
    tree = environment().parse(source)
    inputs: set[str] = set()
    steps: set[str] = set()
    uses_item = False
    assigned = {n.name for n in tree.find_all(nodes.Name) if n.ctx in ("store", "param")}
    assigned |= _JINJA_NAMES | set(environment().globals)
    unknown: set[str] = set()
    for node in tree.find_all(nodes.Name):
        if node.ctx != "load" or node.name in assigned:
            continue
        if node.name == "item":
            uses_item = True
        elif node.name not in ("inputs", "steps"):
            unknown.add(node.name)
    for access in tree.find_all((nodes.Getattr, nodes.Getitem)):
        assert isinstance(access, nodes.Getattr | nodes.Getitem)
        base = access.node
        if not isinstance(base, nodes.Name) or base.name not in ("inputs", "steps"):
            continue
        attr = _attribute(access)
        if attr is None:
            continue
        (inputs if base.name == "inputs" else steps).add(attr)
    return TemplateReferences(frozenset(inputs), frozenset(steps), uses_item, frozenset(unknown))


def _attribute(node: nodes.Getattr | nodes.Getitem) -> str | None:
    if isinstance(node, nodes.Getattr):
        return node.attr
    if isinstance(node.arg, nodes.Const) and isinstance(node.arg.value, str):
        return node.arg.value
    return None


@cache
def compile_template(source: str) -> Template:
    """The compiled template for ``source`` (compiled once per process)."""
    return environment().from_string(source)


def render(source: str, context: Mapping[str, Any]) -> str:
    """Render ``source`` with ``context``; undefined names raise jinja2's UndefinedError."""
    return compile_template(source).render(context)
