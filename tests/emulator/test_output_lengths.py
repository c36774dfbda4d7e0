"""Output lengths by the kind of ask (:mod:`llmflow.emulator.lengths`), unit and through the SDK."""

from __future__ import annotations

import json
from statistics import mean
from typing import Any

import anthropic
import pytest

from llmflow.emulator import EmulatorConfig
from llmflow.emulator.content import Output, generate
from llmflow.emulator.ids import IdFactory
from llmflow.emulator.lengths import DEFAULT_RULE, INSTRUCTION_CHARS, ask_rule
from llmflow.emulator.validation import parse_request

OLD = "claude-haiku-4-5"  # old tokenizer, no thinking unless asked
NEW = "claude-haiku-5-5"  # new tokenizer; thinking turned off below

SHORT_ASKS = (
    "Reply with exactly one label from the taxonomy.",
    "Answer yes or no: is this ticket about billing?",
    "Which product is this about? Reply with one word.",
    "Classify this ticket.",
    "Pick one of the following: low, medium, high. Nothing else.",
)


def body(
    system: str | list[Any] | None,
    user: str,
    *,
    model: str = OLD,
    max_tokens: int = 4096,
    **extra: Any,
) -> dict[str, Any]:
    out: dict[str, Any] = {
        "model": model,
        "max_tokens": max_tokens,
        "messages": [{"role": "user", "content": user}],
        **extra,
    }
    if system is not None:
        out["system"] = system
    if model == NEW:
        out["thinking"] = {"type": "disabled"}
        out["output_config"] = {"effort": "low", **out.get("output_config", {})}
    return out


def answer(request: dict[str, Any], seed: int = 0, scale: float = 1.0) -> Output:
    return generate(parse_request(request), seed, IdFactory(seed), scale)


def text(output: Output) -> str:
    return "".join(block["text"] for block in output.content if block["type"] == "text")


def ticket(i: int, words: int = 60) -> str:
    """A ticket of about ``words`` words that itself says "explain" and "summary"."""
    filler = " ".join(["disk", "slow", "since", "deploy"] * (words // 4))
    return f"Ticket {i}: please explain the summary on my invoice {i}. {filler}"


def document(tokens: int) -> str:
    """A document of about ``tokens`` tokens in the old tokenizer (four a sentence)."""
    return "the plan is safe. " * (tokens // 5)


@pytest.mark.parametrize("ask", SHORT_ASKS)
@pytest.mark.parametrize("model", [OLD, NEW])
def test_short_asks_answer_in_a_few_tokens(ask: str, model: str) -> None:
    outputs = [answer(body(ask, ticket(i), model=model, max_tokens=8)) for i in range(40)]
    assert {o.stop_reason for o in outputs} == {"end_turn"}
    assert all(2 <= o.output_tokens <= 4 for o in outputs)
    assert not any(text(o).endswith(".") for o in outputs)  # a label, not a sentence


def test_short_ask_from_the_user_message_alone() -> None:
    output = answer(body(None, "Is the sky green? Answer yes or no.", max_tokens=8))
    assert output.stop_reason == "end_turn" and output.output_tokens <= 4


def test_system_prompt_ask_wins_over_words_in_the_data() -> None:
    """A ticket saying "explain ... summary" does not lengthen a label; a document saying
    "nothing else" does not shorten its summary."""
    label = body("Reply with one label.", ticket(1))
    assert ask_rule(label).kind == "short"
    summary = body("Summarise the document.", "Use this and nothing else. " + document(300))
    assert ask_rule(summary).kind == "long"
    assert answer(summary).output_tokens > 50


def test_long_system_blocks_are_reference_not_instructions() -> None:
    guide = "Reply with one word when asked for a label. " * (INSTRUCTION_CHARS // 40)
    assert len(guide) > INSTRUCTION_CHARS
    blocks = [{"type": "text", "text": "Answer the question."}, {"type": "text", "text": guide}]
    assert ask_rule(body(blocks, "How do I rotate keys?")) is DEFAULT_RULE
    short_guide = [{"type": "text", "text": "Reply with one word."}]
    assert ask_rule(body(short_guide, "How do I rotate keys?")).kind == "short"


def test_ask_at_the_end_of_a_long_user_message() -> None:
    assert ask_rule(body(None, document(2000) + "\nWrite the digest.")).kind == "long"
    assert ask_rule(body(None, "Extract the dates as JSON:\n" + document(2000))).kind == "extract"
    # The middle of a long message is data, not the ask.
    middle = document(1000) + " Reply with one word. " + document(1000)
    assert ask_rule(body(None, middle)) is DEFAULT_RULE


def test_words_as_listed_only() -> None:
    """ "Extracted facts" in a digest's data is not an extraction ask."""
    assert ask_rule(body(None, "Extracted facts: a, b. Now what?")) is DEFAULT_RULE
    assert ask_rule(body(None, "Extract the facts.")).kind == "extract"


def test_summaries_scale_with_the_input() -> None:
    sizes = (100, 400, 1600, 6400)
    means = [
        mean(answer(body(f"Summarise document {i}.", document(n))).output_tokens for i in range(30))
        for n in sizes
    ]
    assert means == sorted(means) and len(set(means)) == len(means)
    assert means[-1] > 3 * means[0]


def test_kinds_order_at_the_same_input() -> None:
    doc = document(800)
    kinds = ("Reply with one label.", "Extract the key facts.", "Hello.", "Explain this.")
    means = [mean(answer(body(k, f"{i} {doc}")).output_tokens for i in range(30)) for k in kinds]
    assert means == sorted(means) and len(set(means)) == len(means)


def test_truncation_only_when_max_tokens_is_below_the_ask() -> None:
    summaries = [
        body(f"Summarise report {i}.", document(1000), max_tokens=1024) for i in range(200)
    ]
    assert all(answer(s).stop_reason == "end_turn" for s in summaries)
    lengths = [answer(s).output_tokens for s in summaries]
    assert max(lengths) < 1024 and min(lengths) > 100
    cut = [answer({**s, "max_tokens": 100}) for s in summaries]
    assert all(o.stop_reason == "max_tokens" and o.output_tokens == 100 for o in cut)


def test_a_lower_cap_cuts_the_same_text() -> None:
    full = answer(body("Explain the plan.", document(500)))
    cut = answer(body("Explain the plan.", document(500), max_tokens=20))
    assert cut.stop_reason == "max_tokens" and full.stop_reason == "end_turn"
    assert text(full).startswith(text(cut)) and len(text(cut)) < len(text(full))


def test_deterministic_for_a_seed() -> None:
    requests = [body(f"Summarise item {i}.", document(300)) for i in range(20)]
    first = [answer(r, seed=3) for r in requests]
    again = [answer(r, seed=3) for r in requests]
    other = [answer(r, seed=4) for r in requests]
    assert [(text(a), a.output_tokens) for a in first] == [
        (text(a), a.output_tokens) for a in again
    ]
    assert [a.output_tokens for a in first] != [a.output_tokens for a in other]


@pytest.mark.parametrize("scale", [0.5, 2.0, 3.0])
def test_output_scale_multiplies_lengths(scale: float) -> None:
    for i in range(30):
        request = body(f"Write about topic {i}.", document(400))
        plain, scaled = answer(request).output_tokens, answer(request, scale=scale).output_tokens
        assert abs(scaled - plain * scale) <= scale + 1  # rounding of each


async def test_output_scale_through_the_sdk(make_emu: Any) -> None:
    params = body("Summarise the notes.", document(600))
    plain = make_emu().async_client()
    doubled = make_emu(output_scale=2.0).async_client()
    one = await plain.messages.create(**params)
    two = await doubled.messages.create(**params)
    assert one.stop_reason == two.stop_reason == "end_turn"
    assert abs(two.usage.output_tokens - 2 * one.usage.output_tokens) <= 3
    await plain.close()
    await doubled.close()


async def test_structured_outputs_keep_the_schema_length(make_emu: Any) -> None:
    schema = {
        "type": "object",
        "properties": {"label": {"type": "string"}, "score": {"type": "integer"}},
        "required": ["label", "score"],
        "additionalProperties": False,
    }
    params = body(
        "Summarise the ticket as JSON.",
        document(600),
        model=NEW,
        output_config={"format": {"type": "json_schema", "schema": schema}},
    )
    outputs = []
    for scale in (1.0, 3.0):
        client = make_emu(output_scale=scale).async_client()
        message = await client.messages.create(**params)
        await client.close()
        assert message.stop_reason == "end_turn"
        block = message.content[-1]
        assert block.type == "text"
        assert set(json.loads(block.text)) == {"label", "score"}
        outputs.append((block.text, message.usage.output_tokens))
    assert outputs[0] == outputs[1]


@pytest.mark.parametrize("scale", [0.0, -1.0, float("inf"), float("nan")])
def test_output_scale_must_be_positive(scale: float) -> None:
    with pytest.raises(ValueError, match="output_scale"):
        EmulatorConfig(output_scale=scale)


async def test_demo_like_label_is_not_truncated(aclient: anthropic.AsyncAnthropic) -> None:
    """The support-triage shape: a one-label ask, a long cached guide, max_tokens 8."""
    guide = "Section 10 lists the labels. Explain and summarise your reasoning. " * 200
    system = [
        {"type": "text", "text": "Reply with exactly one label - the label only."},
        {"type": "text", "text": guide, "cache_control": {"type": "ephemeral"}},
    ]
    for i in range(10):
        message = await aclient.messages.create(**body(system, ticket(i), model=NEW, max_tokens=8))
        assert message.stop_reason == "end_turn" and message.usage.output_tokens <= 4
