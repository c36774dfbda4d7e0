"""Thinking through the SDK: blocks, display, tokens by effort, max_tokens, streaming."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import anthropic
import pytest

from llmflow.catalog import TokenUsage, load_catalog, request_cost
from llmflow.emulator.ledger import entry_cost, entry_usage
from llmflow.emulator.tokenizer import count_tokens

pytestmark = pytest.mark.filterwarnings("ignore:Using Claude with .* is deprecated:UserWarning")

HELLO: list[Any] = [{"role": "user", "content": "Walk me through the plan."}]
CATALOG = load_catalog()


def thinking_tokens(message: Any) -> int:
    details = message.usage.output_tokens_details
    return int(details.thinking_tokens) if details is not None else 0


async def test_adaptive_by_default_omitted_on_new_models(
    aclient: anthropic.AsyncAnthropic,
) -> None:
    message = await aclient.messages.create(
        model="claude-opus-5-5", max_tokens=16_000, messages=HELLO
    )
    thinking, text = message.content
    assert thinking.type == "thinking" and thinking.thinking == "" and thinking.signature
    assert text.type == "text" and message.stop_reason == "end_turn"
    spent = thinking_tokens(message)
    estimate = CATALOG.models["claude-opus-5-5"].thinking_estimate("medium")  # its default
    assert estimate // 2 <= spent <= estimate * 3 // 2
    assert message.usage.output_tokens == spent + count_tokens(text.text, "new")


async def test_summarized_when_asked_or_on_older_models(aclient: anthropic.AsyncAnthropic) -> None:
    shown = await aclient.messages.create(
        model="claude-opus-5-5",
        max_tokens=16_000,
        messages=HELLO,
        thinking={"type": "adaptive", "display": "summarized"},
    )
    block = shown.content[0]
    assert block.type == "thinking" and block.thinking and block.signature
    assert count_tokens(block.thinking, "new") < thinking_tokens(shown)
    older = await aclient.messages.create(
        model="claude-sonnet-4-6", max_tokens=16_000, messages=HELLO, thinking={"type": "adaptive"}
    )
    assert older.content[0].type == "thinking" and older.content[0].thinking
    omitted = await aclient.messages.create(
        model="claude-sonnet-4-6",
        max_tokens=16_000,
        messages=HELLO,
        thinking={"type": "adaptive", "display": "omitted"},
    )
    assert omitted.content[0].type == "thinking" and omitted.content[0].thinking == ""


@pytest.mark.parametrize("model", ["claude-opus-4-7", "claude-haiku-4-5", "claude-sonnet-4-6"])
async def test_off_by_default_means_no_thinking(
    aclient: anthropic.AsyncAnthropic, model: str
) -> None:
    message = await aclient.messages.create(model=model, max_tokens=2000, messages=HELLO)
    assert [b.type for b in message.content] == ["text"]
    assert message.usage.output_tokens_details is None


async def test_thinking_rises_with_effort(aclient: anthropic.AsyncAnthropic) -> None:
    model = CATALOG.models["claude-opus-4-7"]
    spent = []
    for effort in ("low", "medium", "high", "xhigh", "max"):
        message = await aclient.messages.create(
            model=model.id,
            max_tokens=20_000,
            messages=HELLO,
            thinking={"type": "adaptive"},
            output_config={"effort": effort},
        )
        n = thinking_tokens(message)
        estimate = model.thinking_estimate(effort)
        assert estimate // 2 <= n <= estimate * 3 // 2, effort
        spent.append(n)
    assert spent == sorted(spent) and len(set(spent)) == 5
    default = await aclient.messages.create(
        model=model.id, max_tokens=20_000, messages=HELLO, thinking={"type": "adaptive"}
    )
    assert thinking_tokens(default) == spent[2]  # high is the default


async def test_thinking_varies_with_the_request_but_is_deterministic(
    aclient: anthropic.AsyncAnthropic,
) -> None:
    seen = set()
    for i in range(6):
        kw: Any = {
            "model": "claude-sonnet-5",
            "max_tokens": 16_000,
            "messages": [{"role": "user", "content": f"question {i}"}],
        }
        a = await aclient.messages.create(**kw)
        b = await aclient.messages.create(**kw)
        assert a.content == b.content and a.usage == b.usage
        seen.add(thinking_tokens(a))
    assert len(seen) > 3


async def test_enabled_is_capped_by_budget(aclient: anthropic.AsyncAnthropic) -> None:
    message = await aclient.messages.create(
        model="claude-haiku-4-5",
        max_tokens=4000,
        messages=HELLO,
        thinking={"type": "enabled", "budget_tokens": 1024},
    )
    assert thinking_tokens(message) == 1024  # the high estimate is at least 1280
    assert message.content[0].type == "thinking" and message.content[0].thinking
    assert message.usage.output_tokens == 1024 + count_tokens(message.content[1].text)  # type: ignore[union-attr]


async def test_max_tokens_bounds_thinking_and_text(aclient: anthropic.AsyncAnthropic) -> None:
    kw: Any = {"model": "claude-opus-5-5", "messages": HELLO}
    full = await aclient.messages.create(max_tokens=16_000, **kw)
    spent = thinking_tokens(full)
    cut = await aclient.messages.create(max_tokens=100, **kw)
    assert [b.type for b in cut.content] == ["thinking"]
    assert cut.stop_reason == "max_tokens"
    assert cut.usage.output_tokens == 100 == thinking_tokens(cut)
    exact = await aclient.messages.create(max_tokens=spent, **kw)
    assert [b.type for b in exact.content] == ["thinking"]
    assert exact.stop_reason == "max_tokens" and thinking_tokens(exact) == spent
    tight = await aclient.messages.create(max_tokens=spent + 5, **kw)
    assert thinking_tokens(tight) == spent and tight.stop_reason == "max_tokens"
    assert tight.content[1].type == "text" and count_tokens(tight.content[1].text, "new") == 5
    assert tight.usage.output_tokens == spent + 5
    warm = await aclient.messages.create(max_tokens=0, **kw)
    assert warm.content == [] and warm.usage.output_tokens == 0
    assert warm.usage.output_tokens_details is None


async def test_text_after_thinking_is_cut_by_the_remainder(
    aclient: anthropic.AsyncAnthropic,
) -> None:
    for max_tokens in range(1100, 1800, 50):
        message = await aclient.messages.create(
            model="claude-haiku-4-5",
            max_tokens=max_tokens,
            messages=HELLO,
            thinking={"type": "enabled", "budget_tokens": 1024},
        )
        assert thinking_tokens(message) == 1024
        text = message.content[1]
        assert text.type == "text"
        assert message.usage.output_tokens == 1024 + count_tokens(text.text) <= max_tokens
        if message.stop_reason == "max_tokens":
            assert message.usage.output_tokens == max_tokens


@pytest.mark.parametrize(
    ("model", "thinking"),
    [
        ("claude-opus-5-5", None),
        ("claude-sonnet-4-6", {"type": "adaptive"}),
        ("claude-haiku-4-5", {"type": "enabled", "budget_tokens": 2048}),
    ],
)
async def test_stream_reassembles_thinking(
    aclient: anthropic.AsyncAnthropic, model: str, thinking: Any
) -> None:
    kw: Any = {"model": model, "max_tokens": 8000, "messages": HELLO}
    if thinking is not None:
        kw["thinking"] = thinking
    plain = await aclient.messages.create(**kw)
    kinds: list[str] = []
    async with aclient.messages.stream(**kw) as stream:
        async for event in stream:
            if event.type == "content_block_delta":
                kinds.append(event.delta.type)
        final = await stream.get_final_message()
    assert [b.model_dump(exclude={"parsed_output"}) for b in final.content] == [
        b.model_dump() for b in plain.content
    ]
    assert final.usage.model_dump() == plain.usage.model_dump()
    assert final.usage.output_tokens_details is not None
    assert final.stop_reason == plain.stop_reason
    assert kinds.count("signature_delta") == 1
    shown = plain.content[0].type == "thinking" and plain.content[0].thinking != ""
    assert ("thinking_delta" in kinds) == shown
    assert kinds.index("signature_delta") < kinds.index("text_delta")


async def test_thinking_sse_sequence(emu: Any, spec: Any) -> None:
    async with emu.raw() as client:
        response = await client.post(
            "/v1/messages",
            headers={"x-api-key": "k"},
            json={
                "model": "claude-opus-5-5",
                "max_tokens": 8000,
                "messages": HELLO,
                "stream": True,
            },
        )
    events = spec.parse_sse(response.text)
    names = [name for name, _ in events]
    assert names[:3] == ["message_start", "content_block_start", "ping"]
    start = events[1][1]["content_block"]
    assert start == {"type": "thinking", "thinking": "", "signature": ""}
    assert events[3][1]["delta"]["type"] == "signature_delta"
    assert names[4] == "content_block_stop"
    assert events[5][1]["content_block"]["type"] == "text"
    delta_usage = events[-2][1]["usage"]
    assert delta_usage["output_tokens_details"]["thinking_tokens"] > 0
    assert events[0][1]["message"]["usage"]["output_tokens_details"] is None


async def test_thinking_block_passed_back_is_accepted(aclient: anthropic.AsyncAnthropic) -> None:
    first = await aclient.messages.create(
        model="claude-opus-5-5", max_tokens=16_000, messages=HELLO
    )
    history: Any = [
        *HELLO,
        {"role": "assistant", "content": [b.model_dump(exclude_none=True) for b in first.content]},
        {"role": "user", "content": "And then?"},
    ]
    second = await aclient.messages.create(
        model="claude-opus-5-5", max_tokens=16_000, messages=history
    )
    assert second.content[0].type == "thinking"
    counted = await aclient.messages.count_tokens(model="claude-opus-5-5", messages=history)
    assert counted.input_tokens == second.usage.input_tokens


async def test_ledger_prices_thinking_as_output(
    aclient: anthropic.AsyncAnthropic, emu: Any
) -> None:
    message = await aclient.messages.create(
        model="claude-opus-5-5", max_tokens=16_000, messages=HELLO
    )
    ledger = await emu.ledger()
    (entry,) = ledger["requests"]
    assert ledger["totals"]["thinking_tokens"] == thinking_tokens(message) > 0
    usage = entry_usage(entry)
    assert usage.thinking == thinking_tokens(message)
    assert usage.output == message.usage.output_tokens
    model = CATALOG.models["claude-opus-5-5"]
    expected = (message.usage.input_tokens * Decimal(4) + usage.output * Decimal(20)) / 10**6
    assert entry_cost(entry) == expected == request_cost(usage, model)
    assert request_cost(TokenUsage(output=usage.output - usage.thinking), model) < expected
