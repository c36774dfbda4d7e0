"""The request builder: exact params the executor will send."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from llmflow.catalog import load_catalog
from llmflow.planner.requests import (
    CacheMarks,
    RequestOptions,
    RequestTemplate,
    build_params,
    count_params,
    retarget,
    split_sdk_params,
    steps_namespace,
)
from llmflow.planner.tokens import estimate_text, params_size, utf8_len
from llmflow.spec.pipeline import Step
from llmflow.spec.policy import ThinkingConfig
from llmflow.spec.routing import RouteDecision

CATALOG = load_catalog()
SCHEMA = {"type": "object", "properties": {"a": {"type": "string"}}}


def test_forced_tool_and_breakpoints_on_a_model_without_structured_outputs() -> None:
    options = RequestOptions(
        output_schema=SCHEMA, structured_via="tool", sampling=(("temperature", 0.0),)
    )
    params = build_params(
        model="claude-haiku-4-5",
        max_tokens=50,
        system=["one", "", "two"],
        prompt="p",
        options=options,
        cache=CacheMarks("1h", tool=True, system=(2,)),
    )
    assert params["tools"] == [
        {
            "name": "emit_output",
            "description": "Emit the step's output as structured data.",
            "input_schema": SCHEMA,
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
    sdk, extra = split_sdk_params(params)
    assert extra == {"temperature": 0.0} and "temperature" not in sdk


def test_structured_output_goes_through_output_config_format() -> None:
    step = Step(task="t", prompt="p", output_schema=SCHEMA, effort="low")
    model = CATALOG.models["claude-sonnet-5-5"]
    route = RouteDecision("t", "sonnet", model.id, "sync", 64, 8, None, (), effort="low")
    params = RequestTemplate.for_step("s", step, model=model, route=route, max_tokens=64).params(
        {"inputs": {}, "steps": {}}
    )
    assert "tools" not in params and "tool_choice" not in params
    assert params["output_config"] == {
        "format": {"type": "json_schema", "schema": {**SCHEMA, "additionalProperties": False}},
        "effort": "low",
    }
    sdk, extra = split_sdk_params(params)
    assert extra is None and sdk == params


def test_request_settings_are_sent_as_the_route_says() -> None:
    thinking = ThinkingConfig(type="enabled", budget_tokens=2048)
    options = RequestOptions(effort="high", thinking=thinking, speed="fast", inference_geo="us")
    params = build_params(model="m", max_tokens=4096, system=[], prompt="p", options=options)
    assert params["output_config"] == {"effort": "high"}
    assert params["thinking"] == {"type": "enabled", "budget_tokens": 2048}
    assert params["speed"] == "fast" and params["inference_geo"] == "us"
    assert "inference_geo" not in count_params(params)


def test_a_downgrade_asks_for_structured_output_the_new_model_s_way() -> None:
    haiku4, sonnet5 = CATALOG.models["claude-haiku-4-5"], CATALOG.models["claude-sonnet-5-5"]
    haiku4 = haiku4.model_copy(
        update={
            "capabilities": haiku4.capabilities.model_copy(update={"structured_outputs": False})
        }
    )
    on_format = build_params(
        model=sonnet5.id, max_tokens=9, system=[], prompt="p",
        options=RequestOptions(output_schema=SCHEMA),
    )  # fmt: skip
    on_tool = retarget(on_format, haiku4)
    assert on_tool["model"] == haiku4.id and "output_config" not in on_tool
    assert on_tool["tools"][0]["input_schema"] == {**SCHEMA, "additionalProperties": False}
    assert retarget(on_tool, sonnet5) == on_format


def test_template_renders_items_and_upstream_outputs() -> None:
    step = Step(
        task="t",
        prompt="{{ item.x }} / {{ steps.a.outputs | join(',') }}",
        system=["S {{ inputs.k }}"],
    )
    model = CATALOG.models["claude-haiku-5-5"]
    route = RouteDecision("t", "haiku", model.id, "sync", 5, 5, None, ())
    template = RequestTemplate.for_step("s", step, model=model, route=route, max_tokens=5)
    ctx = {"inputs": {"k": "v"}, "item": {"x": 1}, "steps": steps_namespace({"a": ["p", "q"]})}
    params = template.params(ctx)
    assert params["system"] == [{"type": "text", "text": "S v"}]
    assert params["messages"][0]["content"][0]["text"] == "1 / p,q"
    assert set(params) == {"model", "max_tokens", "system", "messages"}


@given(st.text())
def test_estimate_never_exceeds_bound(text: str) -> None:
    assert estimate_text(text) <= utf8_len(text)
    assert estimate_text(text) <= estimate_text(text, "new") <= utf8_len(text)
    params = build_params(model="m", max_tokens=1, system=[text], prompt=text)
    size = params_size(params)
    assert size.expected <= size.bound


@given(st.text(max_size=400))
def test_bound_covers_the_emulator_tokenizer(text: str) -> None:
    from llmflow.emulator.tokenizer import count_tokens

    assert count_tokens(text) <= utf8_len(text)
