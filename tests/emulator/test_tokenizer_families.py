"""The two tokenizer families: invariants, the new/old ratio, and count_tokens by model."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import anthropic
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from llmflow.emulator.tokenizer import count_tokens, tokenize
from llmflow.emulator.validation import parse_request

DATA = Path(__file__).resolve().parents[2] / "pipelines" / "data"
PROSE = sorted(DATA.glob("*.md"))


@given(st.text())
def test_new_family_covers_text_and_every_token_has_a_byte(text: str) -> None:
    tokens = tokenize(text, "new")
    assert "".join(tokens) == text
    assert all(len(t.encode()) >= 1 for t in tokens)
    assert count_tokens(text, "new") == len(tokens) <= len(text.encode())


@given(st.text())
def test_new_family_never_counts_fewer_than_old(text: str) -> None:
    assert count_tokens(text, "new") >= count_tokens(text, "old")


def test_word_pieces() -> None:
    assert tokenize("international", "old") == ["inte", "rnat", "iona", "l"]
    assert tokenize("international", "new") == ["int", "er", "na", "ti", "on", "al"]
    assert tokenize(" the cat.", "new") == [" the", " cat", "."]
    with pytest.raises(ValueError, match="tokenizer family"):
        count_tokens("x", "newer")


@pytest.mark.parametrize("path", PROSE, ids=[p.name for p in PROSE])
def test_new_counts_about_thirty_percent_more_on_prose(path: Path) -> None:
    text = path.read_text("utf-8")
    ratio = count_tokens(text, "new") / count_tokens(text, "old")
    assert 1.25 <= ratio <= 1.4, f"{path.name}: {ratio:.3f}"


def test_mean_ratio_over_the_prose_is_about_1_3() -> None:
    ratios = [
        count_tokens(t, "new") / count_tokens(t, "old")
        for t in (p.read_text("utf-8") for p in PROSE)
    ]
    assert len(ratios) >= 3
    assert 1.28 <= sum(ratios) / len(ratios) <= 1.36


async def test_count_tokens_uses_the_models_tokenizer(aclient: anthropic.AsyncAnthropic) -> None:
    text = (DATA / "summary_style_guide.md").read_text("utf-8")
    messages: Any = [{"role": "user", "content": text}]
    old = await aclient.messages.count_tokens(model="claude-opus-4-6", messages=messages)
    new = await aclient.messages.count_tokens(model="claude-opus-4-7", messages=messages)
    framing = 3 + 3 + 1  # request, message, block
    assert old.input_tokens == count_tokens(text, "old") + framing
    assert new.input_tokens == count_tokens(text, "new") + framing
    billed = await aclient.messages.create(model="claude-opus-4-7", max_tokens=5, messages=messages)
    assert billed.usage.input_tokens == new.input_tokens


async def test_output_tokens_are_exact_in_the_new_family(
    aclient: anthropic.AsyncAnthropic,
) -> None:
    for max_tokens in (1, 2, 7, 50, 1000):
        message = await aclient.messages.create(
            model="claude-opus-4-7",
            max_tokens=max_tokens,
            messages=[{"role": "user", "content": f"n{max_tokens}"}],
        )
        block = message.content[0]
        assert block.type == "text"
        assert count_tokens(block.text, "new") == message.usage.output_tokens <= max_tokens


_text = st.text(min_size=1, max_size=40)
_message = st.fixed_dictionaries({"role": st.sampled_from(["user", "assistant"]), "content": _text})


@settings(max_examples=150, deadline=None)
@given(messages=st.lists(_message, min_size=1, max_size=4), system=_text)
def test_new_family_within_planner_bound(messages: list[Any], system: str) -> None:
    body = {"model": "claude-opus-4-7", "max_tokens": 1, "system": system, "messages": messages}
    parsed = parse_request(body)
    size = len(system.encode()) + sum(len(m["content"].encode()) for m in messages)
    bound = size + 64 + 8 * len(messages) + 8 * (len(messages) + 1)
    assert parsed.total_input_tokens <= bound
    assert (
        parsed.total_input_tokens
        >= parse_request({**body, "model": "claude-opus-4-6"}).total_input_tokens
    )
