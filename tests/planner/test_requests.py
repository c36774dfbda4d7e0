"""The request builder: exact params the executor will send."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from llmflow.planner.requests import (
    CacheMarks,
    RequestTemplate,
    build_params,
    count_params,
    steps_namespace,
)
from llmflow.planner.tokens import estimate_text, params_size, utf8_len
from llmflow.spec.pipeline import Step


def test_forced_tool_and_breakpoints() -> None:
    schema = {"type": "object", "properties": {"a": {"type": "string"}}}
    params = build_params(
        model="claude-haiku-4-5",
        max_tokens=50,
        system=["one", "", "two"],
        prompt="p",
        output_schema=schema,
        temperature=0.0,
        cache=CacheMarks("1h", tool=True, system=(2,)),
    )
    assert params["tools"] == [
        {
            "name": "emit_output",
            "description": "Emit the step's output as structured data.",
            "input_schema": schema,
            "cache_control": {"type": "ephemeral", "ttl": "1h"},
        }
    ]
    assert params["tool_choice"] == {"type": "tool", "name": "emit_output"}
    assert params["system"] == [
        {"type": "text", "text": "one"},
        {"type": "text", "text": "two", "cache_control": {"type": "ephemeral", "ttl": "1h"}},
    ]
    assert params["messages"] == [{"role": "user", "content": [{"type": "text", "text": "p"}]}]
    assert params["temperature"] == 0.0
    assert set(count_params(params)) == {"model", "tools", "tool_choice", "system", "messages"}


def test_template_renders_items_and_upstream_outputs() -> None:
    step = Step(
        task="t",
        prompt="{{ item.x }} / {{ steps.a.outputs | join(',') }}",
        system=["S {{ inputs.k }}"],
    )
    template = RequestTemplate.for_step("s", step, model="m", max_tokens=5)
    ctx = {"inputs": {"k": "v"}, "item": {"x": 1}, "steps": steps_namespace({"a": ["p", "q"]})}
    params = template.params(ctx)
    assert params["system"] == [{"type": "text", "text": "S v"}]
    assert params["messages"][0]["content"][0]["text"] == "1 / p,q"


@given(st.text())
def test_estimate_never_exceeds_bound(text: str) -> None:
    assert estimate_text(text) <= utf8_len(text)
    params = build_params(model="m", max_tokens=1, system=[text], prompt=text)
    size = params_size(params)
    assert size.expected <= size.bound


@given(st.text(max_size=400))
def test_bound_covers_the_emulator_tokenizer(text: str) -> None:
    from llmflow.emulator.tokenizer import count_tokens

    assert count_tokens(text) <= utf8_len(text)
