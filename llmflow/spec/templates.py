"""Prompt templates: Jinja2 in a sandbox with strict undefined; references found statically.

Dataset values are data, never templates: they are passed in the render context and
never compiled. The namespace of a template is ``inputs.<name>`` (text and scalar
inputs), ``item`` (the current item of a ``for_each`` step), ``steps.<id>.output`` and
``steps.<id>.outputs`` (upstream results).

Each distinct template source is parsed once per process (:func:`parse_template`, the
one place templates are parsed): the syntax check, the static analysis (what it reads)
and the compiled template all come from that one parse; the template is compiled from
its tree on first render.
"""

from __future__ import annotations

import copy
import threading
from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import cache
from typing import Any

from jinja2 import StrictUndefined, Template, TemplateSyntaxError, nodes
from jinja2.sandbox import ImmutableSandboxedEnvironment

NAMESPACES = ("inputs", "steps", "item")
#: Names Jinja itself defines inside templates (loops, macros) besides its globals.
_JINJA_NAMES = frozenset({"loop", "caller", "varargs", "kwargs", "self", "super"})
_COMPILING = threading.Lock()


@dataclass(frozen=True, slots=True)
class TemplateReferences:
    """What a template reads: input names, step ids, and whether it uses ``item``.

    ``item_fields`` are the item fields it interpolates directly (``{{ item.x }}``,
    ``{{ item["x"] }}``), one per interpolation; None when it uses ``item`` any other
    way (filters, conditions, loops, the whole item).
    """

    inputs: frozenset[str]
    steps: frozenset[str]
    uses_item: bool
    unknown_names: frozenset[str]
    item_fields: tuple[str, ...] | None = ()

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


@dataclass(eq=False, slots=True)
class ParsedTemplate:
    """One template source after its single parse: its syntax error, or what it reads
    and (on first use) its compiled form."""

    source: str
    error: TemplateSyntaxError | None
    refs: TemplateReferences | None
    tree: nodes.Template | None = field(default=None, repr=False)
    compiled: Template | None = field(default=None, repr=False)

    @property
    def problem(self) -> TemplateProblem | None:
        """Where and why the source does not parse; None when it does."""
        if self.error is None:
            return None
        return TemplateProblem(
            self.error.lineno or 1, self.error.message or "template syntax error"
        )

    @property
    def references(self) -> TemplateReferences:
        """What the template reads; raises the syntax error of an invalid one."""
        if self.refs is None:
            raise self._error()
        return self.refs

    def template(self) -> Template:
        """The compiled template, compiled from the parsed tree the first time."""
        compiled = self.compiled
        if compiled is None:
            with _COMPILING:
                if self.compiled is None:
                    if self.tree is None:
                        raise self._error()
                    self.compiled = environment().from_string(self.tree)
                    self.tree = None  # analysed already; only the compiled form is used now
                compiled = self.compiled
        return compiled

    def _error(self) -> TemplateSyntaxError:
        assert self.error is not None
        fresh = copy.copy(self.error)  # raised anew: the cached one keeps no traceback
        fresh.source, fresh.translated = self.error.source, self.error.translated
        return fresh


@cache
def parse_template(source: str) -> ParsedTemplate:
    """``source`` parsed, checked and analysed (once per process: the one parse of it)."""
    try:
        tree = environment().parse(source)
    except TemplateSyntaxError as exc:
        return ParsedTemplate(source, exc.with_traceback(None), None)
    # Analysed before anything compiles: compiling may fold constants inside the tree.
    return ParsedTemplate(source, None, _analyse(tree), tree)


def check_syntax(source: str) -> TemplateProblem | None:
    """None when ``source`` parses, else where and why it does not."""
    return parse_template(source).problem


def references(source: str) -> TemplateReferences:
    """The inputs, steps and item a (syntactically valid) template reads."""
    return parse_template(source).references


def _analyse(tree: nodes.Template) -> TemplateReferences:
    every = list(tree.find_all(nodes.Node))  # one walk of the tree, in document order
    names = [n for n in every if isinstance(n, nodes.Name)]
    inputs: set[str] = set()
    steps: set[str] = set()
    uses_item = False
    assigned = {n.name for n in names if n.ctx in ("store", "param")}
    assigned |= _JINJA_NAMES | set(environment().globals)
    unknown: set[str] = set()
    for node in names:
        if node.ctx != "load" or node.name in assigned:
            continue
        if node.name == "item":
            uses_item = True
        elif node.name not in ("inputs", "steps"):
            unknown.add(node.name)
    for access in every:
        if not isinstance(access, nodes.Getattr | nodes.Getitem):
            continue
        base = access.node
        if not isinstance(base, nodes.Name) or base.name not in ("inputs", "steps"):
            continue
        attr = _attribute(access)
        if attr is None:
            continue
        (inputs if base.name == "inputs" else steps).add(attr)
    fields = _item_fields(names, [n for n in every if isinstance(n, nodes.Output)])
    return TemplateReferences(
        frozenset(inputs), frozenset(steps), uses_item, frozenset(unknown), fields
    )


def _attribute(node: nodes.Getattr | nodes.Getitem) -> str | None:
    if isinstance(node, nodes.Getattr):
        return node.attr
    if isinstance(node.arg, nodes.Const) and isinstance(node.arg.value, str):
        return node.arg.value
    return None


def _item_fields(names: list[nodes.Name], outputs: list[nodes.Output]) -> tuple[str, ...] | None:
    """The fields interpolated directly from ``item``, or None (see TemplateReferences)."""
    loads = 0
    for name in names:
        if name.name == "item":
            if name.ctx != "load":
                return None
            loads += 1
    fields: list[str] = []
    for output in outputs:
        for child in output.nodes:
            found = _direct_field(child)
            if found is not None:
                fields.append(found)
    return tuple(fields) if len(fields) == loads else None


def _direct_field(node: nodes.Node) -> str | None:
    if (
        isinstance(node, nodes.Getattr)
        and isinstance(node.node, nodes.Name)
        and node.node.name == "item"
        and not hasattr(dict, node.attr)
    ):
        return node.attr
    if isinstance(node, nodes.Getitem) and isinstance(node.node, nodes.Name):
        arg = node.arg
        if node.node.name == "item" and isinstance(arg, nodes.Const) and isinstance(arg.value, str):
            return arg.value
    return None


def compile_template(source: str) -> Template:
    """The compiled template for ``source`` (compiled once per process)."""
    return parse_template(source).template()


def render(source: str, context: Mapping[str, Any]) -> str:
    """Render ``source`` with ``context``; undefined names raise jinja2's UndefinedError."""
    return compile_template(source).render(context)
