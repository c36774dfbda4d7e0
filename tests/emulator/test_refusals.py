"""The request rules of today's API, each refused (or accepted) through the SDK."""

from __future__ import annotations

import datetime as dt
from typing import Any

import anthropic
import pytest

pytestmark = [
    pytest.mark.filterwarnings("ignore:The model .* is deprecated:DeprecationWarning"),
    pytest.mark.filterwarnings("ignore:Using Claude with .* is deprecated:UserWarning"),
]

HELLO: list[Any] = [{"role": "user", "content": "Hello there."}]
PREFILL: list[Any] = [*HELLO, {"role": "assistant", "content": "The answer is"}]
TOOL: Any = {
    "name": "record",
    "description": "Record it.",
    "input_schema": {"type": "object", "properties": {"x": {"type": "string"}}, "required": ["x"]},
}
SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {"label": {"type": "string"}},
    "required": ["label"],
    "additionalProperties": False,
}


def _ts(day: dt.date) -> float:
    return dt.datetime.combine(day, dt.time(12), dt.UTC).timestamp()


async def refused(client: anthropic.AsyncAnthropic, **kw: Any) -> str:
    """The 400 message of a request the emulator refuses."""
    kw.setdefault("max_tokens", 16_000)
    kw.setdefault("messages", HELLO)
    with pytest.raises(anthropic.BadRequestError) as info:
        await client.messages.create(**kw)
    body: Any = info.value.body
    assert body["error"]["type"] == "invalid_request_error"
    return str(body["error"]["message"])


async def accepted(client: anthropic.AsyncAnthropic, **kw: Any) -> Any:
    kw.setdefault("max_tokens", 16_000)
    kw.setdefault("messages", HELLO)
    return await client.messages.create(**kw)


@pytest.mark.parametrize("model", ["claude-opus-4-7", "claude-opus-5-5", "claude-haiku-5-5"])
@pytest.mark.parametrize("param", [{"temperature": 0.2}, {"top_p": 0.9}, {"top_k": 5}])
async def test_sampling_refused_on_4_7_and_later(
    aclient: anthropic.AsyncAnthropic, model: str, param: dict[str, Any]
) -> None:
    message = await refused(aclient, model=model, extra_body=param)
    assert message.startswith(next(iter(param)))


@pytest.mark.parametrize("model", ["claude-haiku-4-5", "claude-sonnet-4-6", "claude-opus-4-6"])
async def test_sampling_accepted_on_older_models(
    aclient: anthropic.AsyncAnthropic, model: str
) -> None:
    message = await accepted(aclient, model=model, extra_body={"temperature": 0.2, "top_k": 5})
    assert message.stop_reason in ("end_turn", "max_tokens")


@pytest.mark.parametrize(
    "model", ["claude-opus-5-5", "claude-sonnet-5-5", "claude-fable-5-1", "claude-fable-5-2"]
)
@pytest.mark.parametrize("choice", [{"type": "any"}, {"type": "tool", "name": "record"}])
async def test_forced_tool_refused(
    aclient: anthropic.AsyncAnthropic, model: str, choice: dict[str, Any]
) -> None:
    message = await refused(aclient, model=model, tools=[TOOL], tool_choice=choice)
    assert message.startswith("tool_choice:") and "structured outputs" in message
    auto = await accepted(aclient, model=model, tools=[TOOL], tool_choice={"type": "auto"})
    assert auto.stop_reason == "end_turn"


@pytest.mark.parametrize("model", ["claude-haiku-5-5", "claude-opus-5", "claude-sonnet-5"])
async def test_forced_tool_still_works_where_offered(
    aclient: anthropic.AsyncAnthropic, model: str
) -> None:
    message = await accepted(
        aclient, model=model, tools=[TOOL], tool_choice={"type": "tool", "name": "record"}
    )
    assert message.stop_reason == "tool_use" and message.content[-1].type == "tool_use"


ENABLED: Any = {"type": "enabled", "budget_tokens": 1024}


@pytest.mark.parametrize(
    ("model", "thinking"),
    [
        ("claude-opus-5-5", ENABLED),
        ("claude-opus-5-5", {"type": "disabled"}),
        ("claude-fable-5-2", {"type": "disabled"}),
        ("claude-fable-5-1", ENABLED),
        ("claude-fable-5", {"type": "disabled"}),
        ("claude-sonnet-5-5", {"type": "disabled"}),
        ("claude-sonnet-5-5", ENABLED),
        ("claude-haiku-5-5", ENABLED),
        ("claude-sonnet-5", ENABLED),
        ("claude-opus-5", ENABLED),
        ("claude-opus-4-8", ENABLED),
        ("claude-opus-4-7", ENABLED),
        ("claude-haiku-4-5", {"type": "adaptive"}),
        ("claude-sonnet-4-5", {"type": "adaptive"}),
        ("claude-opus-4-5", {"type": "adaptive"}),
        ("claude-opus-5-5", {"type": "between_tools"}),
    ],
)
async def test_thinking_types_refused(
    aclient: anthropic.AsyncAnthropic, model: str, thinking: Any
) -> None:
    message = await refused(aclient, model=model, thinking=thinking)
    assert message.startswith("thinking.type:")


@pytest.mark.parametrize(
    ("model", "thinking"),
    [
        ("claude-opus-5-5", {"type": "adaptive"}),
        ("claude-sonnet-5-5", {"type": "between_tools"}),
        ("claude-haiku-5-5", {"type": "disabled"}),
        ("claude-sonnet-5", {"type": "disabled"}),
        ("claude-opus-4-8", {"type": "adaptive"}),
        ("claude-opus-4-6", ENABLED),
        ("claude-sonnet-4-6", {"type": "adaptive"}),
        ("claude-haiku-4-5", ENABLED),
        ("claude-opus-4-5", ENABLED),
    ],
)
async def test_thinking_types_accepted(
    aclient: anthropic.AsyncAnthropic, model: str, thinking: Any
) -> None:
    message = await accepted(aclient, model=model, thinking=thinking)
    thinks = thinking["type"] in ("adaptive", "enabled")
    assert (message.content[0].type == "thinking") == thinks


@pytest.mark.parametrize(
    ("model", "thinking", "ok", "refused_at"),
    [
        ("claude-haiku-5-5", "disabled", ("low", "medium", "high"), ("xhigh", "max")),
        ("claude-sonnet-5-5", "between_tools", ("low", "medium", "high"), ("xhigh", "max")),
    ],
)
async def test_thinking_off_only_at_low_to_high_effort(
    aclient: anthropic.AsyncAnthropic,
    model: str,
    thinking: str,
    ok: tuple[str, ...],
    refused_at: tuple[str, ...],
) -> None:
    for effort in ok:
        message = await accepted(
            aclient, model=model, thinking={"type": thinking}, output_config={"effort": effort}
        )
        assert message.content[0].type == "text"
    for effort in refused_at:
        text = await refused(
            aclient, model=model, thinking={"type": thinking}, output_config={"effort": effort}
        )
        assert text.startswith("thinking.type:") and effort in text


async def test_enabled_budget_rules(aclient: anthropic.AsyncAnthropic) -> None:
    small = await refused(
        aclient, model="claude-haiku-4-5", thinking={"type": "enabled", "budget_tokens": 1000}
    )
    assert small.startswith("thinking.budget_tokens:") and "1024" in small
    over = await refused(
        aclient,
        model="claude-haiku-4-5",
        max_tokens=1500,
        thinking={"type": "enabled", "budget_tokens": 1500},
    )
    assert over.startswith("thinking.budget_tokens:") and "max_tokens" in over


@pytest.mark.parametrize(
    ("model", "effort"),
    [
        ("claude-sonnet-4-6", "xhigh"),
        ("claude-opus-4-6", "max"),
        ("claude-opus-4-5", "xhigh"),
        ("claude-haiku-4-5", "low"),
        ("claude-sonnet-4-5", "high"),
    ],
)
async def test_effort_levels_not_offered(
    aclient: anthropic.AsyncAnthropic, model: str, effort: str
) -> None:
    message = await refused(aclient, model=model, output_config={"effort": effort})
    assert message.startswith("output_config.effort:")


async def test_effort_levels_offered(aclient: anthropic.AsyncAnthropic) -> None:
    for effort in ("low", "medium", "high", "xhigh", "max"):
        await accepted(aclient, model="claude-opus-4-7", output_config={"effort": effort})
    await accepted(aclient, model="claude-sonnet-4-6", output_config={"effort": "high"})
    with pytest.raises(anthropic.BadRequestError, match=r"output_config\.effort"):
        await aclient.messages.create(
            model="claude-opus-4-7",
            max_tokens=10,
            messages=HELLO,
            output_config={"effort": "extreme"},  # type: ignore[typeddict-item]
        )


@pytest.mark.parametrize(
    "model", ["claude-opus-4-6", "claude-sonnet-4-6", "claude-opus-4-7", "claude-sonnet-5-5"]
)
async def test_prefill_refused_on_4_6_and_later(
    aclient: anthropic.AsyncAnthropic, model: str
) -> None:
    message = await refused(aclient, model=model, messages=PREFILL)
    assert message.startswith("messages:") and "prefill" in message


@pytest.mark.parametrize("model", ["claude-haiku-4-5", "claude-opus-4-5"])
async def test_prefill_accepted_on_older_models(
    aclient: anthropic.AsyncAnthropic, model: str
) -> None:
    message = await accepted(aclient, model=model, messages=PREFILL)
    assert message.content[0].type == "text"


@pytest.mark.parametrize("model", ["claude-sonnet-5-5", "claude-haiku-5-5", "claude-opus-4-7"])
async def test_fast_not_offered(aclient: anthropic.AsyncAnthropic, model: str) -> None:
    message = await refused(aclient, model=model, speed="fast")
    assert message.startswith("speed:") and "not offered" in message


@pytest.mark.parametrize("model", ["claude-opus-5-5", "claude-opus-5", "claude-fable-5-2"])
async def test_fast_where_offered(aclient: anthropic.AsyncAnthropic, model: str) -> None:
    message = await accepted(aclient, model=model, speed="fast")
    assert message.usage.speed == "fast"
    standard = await accepted(aclient, model=model, speed="standard")
    assert standard.usage.speed == "standard"


async def test_opus_4_8_fast_removed_on_2026_11_30(make_emu: Any, clock: Any) -> None:
    client = make_emu(clock=clock).async_client()
    clock.now = _ts(dt.date(2026, 11, 29))
    before = await accepted(client, model="claude-opus-4-8", speed="fast")
    assert before.usage.speed == "fast"
    clock.now = _ts(dt.date(2026, 11, 30))
    message = await refused(client, model="claude-opus-4-8", speed="fast")
    assert "removed on 2026-11-30" in message
    await client.close()


async def test_inference_geo(aclient: anthropic.AsyncAnthropic) -> None:
    for model in ("claude-haiku-4-5", "claude-opus-4-5", "claude-sonnet-4-5"):
        message = await refused(aclient, model=model, inference_geo="us")
        assert message.startswith("inference_geo:")
    regional = await accepted(aclient, model="claude-opus-4-6", inference_geo="us")
    assert regional.usage.inference_geo == "us"
    default = await accepted(aclient, model="claude-haiku-4-5")
    assert default.usage.inference_geo == "global"
    assert (await refused(aclient, model="claude-opus-5-5", inference_geo="eu")).startswith(
        "inference_geo:"
    )


@pytest.mark.parametrize(
    ("schema", "needle"),
    [
        ({**SCHEMA, "additionalProperties": True}, "additionalProperties"),
        ({**SCHEMA, "properties": {"label": {"type": "integer", "minimum": 1}}}, "minimum"),
        ({**SCHEMA, "properties": {"label": {"type": "string", "maxLength": 9}}}, "maxLength"),
        (
            {
                "type": "object",
                "properties": {"next": {"$ref": "#"}},
                "additionalProperties": False,
            },
            "recursive",
        ),
        (
            {
                "type": "object",
                "properties": {f"p{i}": {"type": "string"} for i in range(30)},
                "additionalProperties": False,
            },
            "optional",
        ),
        ({"type": "array", "items": {"type": "string"}}, "type: object"),
    ],
)
async def test_structured_output_schema_limits(
    aclient: anthropic.AsyncAnthropic, schema: dict[str, Any], needle: str
) -> None:
    message = await refused(
        aclient,
        model="claude-sonnet-5-5",
        output_config={"format": {"type": "json_schema", "schema": schema}},
    )
    assert message.startswith("output_config.format.schema:") and needle in message


async def test_max_tokens_limit_and_context_window(aclient: anthropic.AsyncAnthropic) -> None:
    over = await refused(aclient, model="claude-haiku-4-5", max_tokens=64_001, stream=True)
    assert over.startswith("max_tokens:") and "64000" in over
    fits = await accepted(aclient, model="claude-haiku-5-5", max_tokens=20_000)
    assert fits.usage.output_tokens <= 20_000
    big = " ".join(["word"] * 199_995)
    window = await refused(
        aclient,
        model="claude-haiku-4-5",
        max_tokens=10,
        messages=[{"role": "user", "content": big}],
    )
    assert window.startswith("messages: prompt is too long")


async def test_count_tokens_applies_the_rules(aclient: anthropic.AsyncAnthropic) -> None:
    with pytest.raises(anthropic.BadRequestError, match=r"thinking\.type"):
        await aclient.messages.count_tokens(
            model="claude-opus-5-5", messages=HELLO, thinking={"type": "disabled"}
        )
    with pytest.raises(anthropic.BadRequestError, match="temperature"):
        await aclient.messages.count_tokens(
            model="claude-haiku-4-5", messages=HELLO, extra_body={"temperature": 0.5}
        )


def _item(custom_id: str, **params: Any) -> dict[str, Any]:
    body = {"model": "claude-opus-5-5", "max_tokens": 50, "messages": HELLO, **params}
    return {"custom_id": custom_id, "params": body}


async def test_batch_items_breaking_a_rule_come_back_errored(
    aclient: anthropic.AsyncAnthropic, emu: Any
) -> None:
    batch = await aclient.messages.batches.create(
        requests=[
            _item("ok"),
            _item("fast", speed="fast"),
            _item("stream", stream=True),
            _item("warm", max_tokens=0),
            _item("sampling", temperature=0.3),
            _item("forced", tools=[TOOL], tool_choice={"type": "any"}),
        ]
    )
    assert batch.request_counts.succeeded == 1 and batch.request_counts.errored == 5
    results = {
        r.custom_id: r.result async for r in await aclient.messages.batches.results(batch.id)
    }
    assert results["ok"].type == "succeeded"
    expected = {
        "fast": "speed:",
        "stream": "stream:",
        "warm": "max_tokens:",
        "sampling": "temperature:",
        "forced": "tool_choice:",
    }
    for custom_id, prefix in expected.items():
        result = results[custom_id]
        assert result.type == "errored", custom_id
        assert result.error.error.type == "invalid_request_error"
        assert result.error.error.message.startswith(prefix), result.error.error.message
    ledger = await emu.ledger()
    assert [e["custom_id"] for e in ledger["requests"]] == ["ok"]
