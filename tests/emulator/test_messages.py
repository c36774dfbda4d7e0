"""POST /v1/messages through the official SDK: plain, streamed, errors, headers."""

from __future__ import annotations

from typing import Any

import anthropic
import httpx2
import pytest

MODEL = "claude-haiku-4-5"
HELLO: list[Any] = [{"role": "user", "content": "Hello there, emulator."}]


async def test_create_returns_full_message(aclient: anthropic.AsyncAnthropic, emu: Any) -> None:
    raw = await aclient.messages.with_raw_response.create(
        model=MODEL, max_tokens=400, messages=HELLO
    )
    body = raw.http_response.json()
    message = await raw.parse()
    assert message.type == "message" and message.role == "assistant"
    assert message.stop_reason == "end_turn"
    assert message.content[0].type == "text" and message.content[0].text
    for key in (
        "id",
        "type",
        "role",
        "content",
        "model",
        "stop_reason",
        "stop_sequence",
        "stop_details",
        "usage",
        "container",
    ):
        assert key in body
    usage = body["usage"]
    assert usage["service_tier"] == "standard"
    assert usage["cache_creation"] == {
        "ephemeral_5m_input_tokens": 0,
        "ephemeral_1h_input_tokens": 0,
    }
    assert usage["cache_read_input_tokens"] == 0 and usage["cache_creation_input_tokens"] == 0
    assert 20 <= usage["output_tokens"] <= 300
    assert raw.http_response.headers["request-id"].startswith("req_")
    assert emu.checked.checked >= 1


async def test_deterministic_content_and_usage(aclient: anthropic.AsyncAnthropic) -> None:
    a = await aclient.messages.create(model=MODEL, max_tokens=400, messages=HELLO)
    b = await aclient.messages.create(model=MODEL, max_tokens=400, messages=HELLO)
    assert a.content == b.content and a.usage == b.usage and a.id != b.id


async def test_max_tokens_cuts_output(aclient: anthropic.AsyncAnthropic) -> None:
    message = await aclient.messages.create(model=MODEL, max_tokens=5, messages=HELLO)
    assert message.stop_reason == "max_tokens"
    assert message.usage.output_tokens == 5


async def test_max_tokens_zero_is_a_prewarm(aclient: anthropic.AsyncAnthropic) -> None:
    message = await aclient.messages.create(model=MODEL, max_tokens=0, messages=HELLO)
    assert message.content == [] and message.usage.output_tokens == 0
    assert message.stop_reason == "max_tokens"


async def test_output_tokens_are_exact(aclient: anthropic.AsyncAnthropic) -> None:
    from llmflow.emulator.tokenizer import count_tokens

    for max_tokens in (1, 7, 50, 1000):
        message = await aclient.messages.create(
            model=MODEL,
            max_tokens=max_tokens,
            messages=[{"role": "user", "content": f"n{max_tokens}"}],
        )
        block = message.content[0]
        assert block.type == "text"
        assert count_tokens(block.text) == message.usage.output_tokens <= max_tokens


async def test_stop_sequence(aclient: anthropic.AsyncAnthropic) -> None:
    first = await aclient.messages.create(model=MODEL, max_tokens=400, messages=HELLO)
    assert first.content[0].type == "text"
    word = first.content[0].text.split()[3]
    cut = await aclient.messages.create(
        model=MODEL, max_tokens=400, messages=HELLO, stop_sequences=[" " + word]
    )
    assert cut.stop_reason == "stop_sequence" and cut.stop_sequence == " " + word
    assert cut.content[0].type == "text" and " " + word not in cut.content[0].text


def test_sync_client_over_http(http_server: Any) -> None:
    client = anthropic.Anthropic(api_key="k", base_url=http_server.url, max_retries=0)
    message = client.messages.create(model=MODEL, max_tokens=30, messages=HELLO)
    assert message.usage.output_tokens <= 30
    with client.messages.stream(model=MODEL, max_tokens=30, messages=HELLO) as stream:
        text = "".join(stream.text_stream)
        final = stream.get_final_message()
    assert final.content[0].type == "text" and final.content[0].text == text
    assert final.usage == message.usage
    count = client.messages.count_tokens(model=MODEL, messages=HELLO)
    assert count.input_tokens == message.usage.input_tokens
    client.close()
    assert http_server.checked.checked >= 3


async def test_async_client_over_http(http_server: Any) -> None:
    client = anthropic.AsyncAnthropic(api_key="k", base_url=http_server.url, max_retries=0)
    message = await client.messages.create(model=MODEL, max_tokens=30, messages=HELLO)
    stream = await client.messages.create(model=MODEL, max_tokens=30, messages=HELLO, stream=True)
    names = [event.type async for event in stream]
    assert names[0] == "message_start" and names[-1] == "message_stop"
    assert message.usage.output_tokens == 30
    await client.close()


async def test_stream_helper_matches_plain(aclient: anthropic.AsyncAnthropic) -> None:
    plain = await aclient.messages.create(model=MODEL, max_tokens=200, messages=HELLO)
    async with aclient.messages.stream(model=MODEL, max_tokens=200, messages=HELLO) as stream:
        deltas = [text async for text in stream.text_stream]
        final = await stream.get_final_message()
    assert final.content == plain.content or final.content[0].text == plain.content[0].text  # type: ignore[union-attr]
    assert "".join(deltas) == final.content[0].text  # type: ignore[union-attr]
    assert final.usage.model_dump() == plain.usage.model_dump()
    assert final.stop_reason == plain.stop_reason


async def test_sse_event_sequence(emu: Any, spec: Any) -> None:
    async with emu.raw() as client:
        response = await client.post(
            "/v1/messages",
            headers={"x-api-key": "k"},
            json={"model": MODEL, "max_tokens": 40, "messages": HELLO, "stream": True},
        )
    assert response.headers["content-type"].startswith("text/event-stream")
    events = spec.parse_sse(response.text)
    names = [name for name, _ in events]
    assert names[:3] == ["message_start", "content_block_start", "ping"]
    assert names[-3:] == ["content_block_stop", "message_delta", "message_stop"]
    assert set(names[3:-3]) == {"content_block_delta"}
    start = events[0][1]["message"]
    assert start["stop_reason"] is None and start["content"] == []
    delta = events[-2][1]
    assert delta["usage"]["output_tokens"] == 40
    assert delta["usage"]["input_tokens"] == start["usage"]["input_tokens"]
    assert delta["delta"]["stop_reason"] == "max_tokens"


async def test_create_stream_true_through_sdk(aclient: anthropic.AsyncAnthropic) -> None:
    stream = await aclient.messages.create(model=MODEL, max_tokens=60, messages=HELLO, stream=True)
    text, output = "", 0
    async for event in stream:
        if event.type == "content_block_delta" and event.delta.type == "text_delta":
            text += event.delta.text
        if event.type == "message_delta":
            output = event.usage.output_tokens
    plain = await aclient.messages.create(model=MODEL, max_tokens=60, messages=HELLO)
    assert plain.content[0].type == "text" and text == plain.content[0].text
    assert output == plain.usage.output_tokens


@pytest.mark.parametrize(
    ("body", "status", "error_type"),
    [
        ({"model": "claude-nope-9", "max_tokens": 5, "messages": HELLO}, 404, "not_found_error"),
        ({"model": MODEL, "max_tokens": 5, "messages": []}, 400, "invalid_request_error"),
        (
            {"model": MODEL, "max_tokens": 5, "messages": [{"role": "system", "content": "x"}]},
            400,
            "invalid_request_error",
        ),
        ({"model": MODEL, "messages": HELLO}, 400, "invalid_request_error"),
        ({"model": MODEL, "max_tokens": -1, "messages": HELLO}, 400, "invalid_request_error"),
        ({"model": MODEL, "max_tokens": 10**7, "messages": HELLO}, 400, "invalid_request_error"),
        (
            {"model": MODEL, "max_tokens": 5, "messages": HELLO, "bogus": 1},
            400,
            "invalid_request_error",
        ),
        (
            {
                "model": MODEL,
                "max_tokens": 5,
                "messages": [
                    {
                        "role": "user",
                        "content": [
                            {"type": "text", "text": "a", "cache_control": {"type": "persistent"}}
                        ],
                    }
                ],
            },
            400,
            "invalid_request_error",
        ),
        (
            {
                "model": MODEL,
                "max_tokens": 5,
                "messages": [
                    {
                        "role": "user",
                        "content": [
                            {
                                "type": "text",
                                "text": "a",
                                "cache_control": {"type": "ephemeral", "ttl": "2h"},
                            }
                        ],
                    }
                ],
            },
            400,
            "invalid_request_error",
        ),
        (
            {
                "model": MODEL,
                "max_tokens": 5,
                "messages": [
                    {
                        "role": "user",
                        "content": [
                            {"type": "text", "text": str(i), "cache_control": {"type": "ephemeral"}}
                            for i in range(5)
                        ],
                    }
                ],
            },
            400,
            "invalid_request_error",
        ),
        (
            {
                "model": MODEL,
                "max_tokens": 5,
                "system": [
                    {
                        "type": "text",
                        "text": "a",
                        "cache_control": {"type": "ephemeral", "ttl": "5m"},
                    },
                    {
                        "type": "text",
                        "text": "b",
                        "cache_control": {"type": "ephemeral", "ttl": "1h"},
                    },
                ],
                "messages": HELLO,
            },
            400,
            "invalid_request_error",
        ),
        (
            {
                "model": MODEL,
                "max_tokens": 5,
                "messages": HELLO,
                "tool_choice": {"type": "tool", "name": "missing"},
            },
            400,
            "invalid_request_error",
        ),
    ],
)
async def test_validation_errors(
    emu: Any, body: dict[str, Any], status: int, error_type: str
) -> None:
    async with emu.raw() as client:
        response = await client.post("/v1/messages", headers={"x-api-key": "k"}, json=body)
    assert response.status_code == status
    payload = response.json()
    assert payload["type"] == "error" and payload["error"]["type"] == error_type
    assert payload["request_id"] == response.headers["request-id"]


async def test_sdk_maps_errors(aclient: anthropic.AsyncAnthropic) -> None:
    with pytest.raises(anthropic.NotFoundError) as excinfo:
        await aclient.messages.create(model="claude-nope-9", max_tokens=5, messages=HELLO)
    assert excinfo.value.request_id and excinfo.value.request_id.startswith("req_")
    with pytest.raises(anthropic.BadRequestError):
        await aclient.messages.create(model=MODEL, max_tokens=5, messages=[])


async def test_empty_messages_and_final_assistant_prefill(
    aclient: anthropic.AsyncAnthropic,
) -> None:
    with pytest.raises(anthropic.BadRequestError):
        await aclient.messages.create(
            model=MODEL, max_tokens=5, messages=[{"role": "user", "content": ""}]
        )
    ok = await aclient.messages.create(
        model=MODEL,
        max_tokens=5,
        messages=[{"role": "user", "content": "hi"}, {"role": "assistant", "content": ""}],
    )
    assert ok.usage.output_tokens == 5


async def test_auth_required_and_both_headers_accepted(emu: Any) -> None:
    body = {"model": MODEL, "max_tokens": 3, "messages": HELLO}
    async with emu.raw() as client:
        none = await client.post("/v1/messages", json=body)
        key = await client.post("/v1/messages", json=body, headers={"x-api-key": "k"})
        bearer = await client.post("/v1/messages", json=body, headers={"authorization": "Bearer k"})
    assert none.status_code == 401 and none.json()["error"]["type"] == "authentication_error"
    assert key.status_code == 200 and bearer.status_code == 200
    with pytest.raises(anthropic.AuthenticationError):
        http = httpx2.AsyncClient(
            transport=httpx2.ASGITransport(app=emu.checked), base_url="http://x"
        )
        client2 = anthropic.AsyncAnthropic(
            api_key="k",
            base_url="http://x",
            http_client=http,
            max_retries=0,
            default_headers={"Authorization": "Basic not-a-bearer"},
        )
        await client2.messages.create(model=MODEL, max_tokens=1, messages=HELLO)


async def test_rate_limit_headers(emu: Any) -> None:
    async with emu.raw() as client:
        first = await client.post(
            "/v1/messages",
            headers={"x-api-key": "k"},
            json={"model": MODEL, "max_tokens": 3, "messages": HELLO},
        )
        second = await client.post(
            "/v1/messages",
            headers={"x-api-key": "k"},
            json={"model": MODEL, "max_tokens": 3, "messages": HELLO},
        )
    for kind in ("requests", "tokens", "input-tokens", "output-tokens"):
        for part in ("limit", "remaining", "reset"):
            assert f"anthropic-ratelimit-{kind}-{part}" in first.headers
    assert (
        int(second.headers["anthropic-ratelimit-requests-remaining"])
        == int(first.headers["anthropic-ratelimit-requests-remaining"]) - 1
    )
    assert first.headers["request-id"] != second.headers["request-id"]


async def test_unknown_route_is_an_api_error(emu: Any) -> None:
    async with emu.raw() as client:
        response = await client.get("/v1/nothing", headers={"x-api-key": "k"})
    assert response.status_code == 404
    assert response.json()["error"]["type"] == "not_found_error"


async def test_snapshot_model_id_is_accepted(aclient: anthropic.AsyncAnthropic) -> None:
    message = await aclient.messages.create(
        model="claude-haiku-4-5-20251001", max_tokens=3, messages=HELLO
    )
    assert message.model == "claude-haiku-4-5-20251001"


async def test_in_process_backend_client() -> None:
    """`--backend emulator`: the backend's client over an ASGI transport, no socket."""
    from llmflow.cli._backend import client_for
    from llmflow.emulator import EmulatorConfig

    client = client_for("emulator", emulator=EmulatorConfig(seed=1))
    message = await client.messages.create(model=MODEL, max_tokens=4, messages=HELLO)
    assert message.usage.output_tokens == 4
    await client.close()


async def test_unrouted_request_has_request_id(emu: Any) -> None:
    async with emu.raw() as client:
        response = await client.delete("/v1/messages")
    assert response.status_code == 405
    assert response.json()["request_id"] == response.headers["request-id"]
