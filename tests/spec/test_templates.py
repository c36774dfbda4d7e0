"""Templates: one parse per source gives the syntax check, the analysis and the compiled
form; the sandbox and the errors are those of jinja2 itself."""

from __future__ import annotations

import pytest
from jinja2 import TemplateSyntaxError, UndefinedError
from jinja2.exceptions import SecurityError

from llmflow.spec.templates import (
    check_syntax,
    environment,
    parse_template,
    references,
    render,
)


def test_a_source_is_parsed_once_and_compiled_once() -> None:
    source = "Hello {{ inputs.name }} from the one-parse test"
    parse_template.cache_clear()
    first = parse_template(source)
    assert check_syntax(source) is None and references(source).inputs == {"name"}
    assert render(source, {"inputs": {"name": "Ada"}}) == "Hello Ada from the one-parse test"
    compiled = first.compiled
    assert compiled is not None and first.tree is None  # the tree is dropped once compiled
    render(source, {"inputs": {"name": "Bob"}})
    assert parse_template(source) is first and first.compiled is compiled


def test_syntax_errors_are_jinja2s_each_time() -> None:
    source = "line one\n{{ steps.a.output "
    problem = check_syntax(source)
    with pytest.raises(TemplateSyntaxError) as direct:
        environment().parse(source)
    assert problem is not None and problem.line == direct.value.lineno == 2
    assert problem.message == direct.value.message
    for _ in range(2):
        with pytest.raises(TemplateSyntaxError) as again:
            render(source, {})
        assert str(again.value) == str(direct.value)
        assert again.value is not parse_template(source).error
    with pytest.raises(TemplateSyntaxError):
        references(source)


def test_item_fields_are_direct_interpolations_only() -> None:
    assert references("{{ item.a }} {{ item['b'] }} {{ item.a }}").item_fields == ("a", "b", "a")
    assert references("{{ inputs.x }}").item_fields == ()
    assert references("{{ item.a | upper }}").item_fields is None
    assert references("{% if item.a %}x{% endif %}").item_fields is None
    assert references("{{ item.keys }}").item_fields is None  # a dict method, not a field


def test_analysis_is_fixed_before_compiling_folds_constants() -> None:
    source = "{{ item['a' ~ 'b'] }}"
    before = references(source)
    assert render(source, {"item": {"ab": "x"}}) == "x"
    assert references(source) == before and before.item_fields is None


def test_templates_compiled_from_their_tree_stay_sandboxed_and_strict() -> None:
    with pytest.raises(SecurityError):
        render("{{ inputs.xs.append(1) }}", {"inputs": {"xs": [1]}})
    with pytest.raises(UndefinedError):
        render("{{ inputs.missing }}", {"inputs": {}})
    assert render("a\n", {}) == "a\n"  # keep_trailing_newline
