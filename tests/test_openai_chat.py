"""The OpenAI chat adapter: which texts are scanned, and restoration of bodies and streams."""

from __future__ import annotations

import copy
import itertools
import json
from typing import Any

import pytest

from sidecar.errors import InvalidBody
from sidecar.protocols.base import Part
from sidecar.protocols.openai_chat import OpenAIChatAdapter
from sidecar.redact.restore import Restorer
from sidecar.redact.vault import Vault
from sidecar.sse import SSEDecoder, encode

ADAPTER = OpenAIChatAdapter()
IMAGE = {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBORw0KGgo="}}

REQUEST: dict[str, Any] = {
    "model": "gpt-4o",
    "unknown_field": {"text": "not a message"},
    "tools": [{"type": "function", "function": {"name": "f", "description": "Ana"}}],
    "messages": [
        {"role": "developer", "content": "dev"},
        {"role": "system", "content": [{"type": "text", "text": "sys"}]},
        {"role": "user", "name": "ana", "content": [{"type": "text", "text": "u1"}, IMAGE,
                                                   {"type": "input_audio", "input_audio": {"data": "AAA", "format": "wav"}},
                                                   {"type": "text", "text": "u2"}]},
        {"role": "assistant", "content": "a1", "tool_calls": [
            {"id": "call_1", "type": "function", "function": {"name": "f", "arguments": '{"q": "t1", "n": [1, "t2"]}'}},
            {"id": "call_2", "type": "function", "function": {"name": "f", "arguments": "not json t3"}},
        ]},
        {"role": "tool", "tool_call_id": "call_1", "content": "r1"},
    ],
}


def test_collect_texts_in_message_order() -> None:
    texts = ADAPTER.collect(copy.deepcopy(REQUEST))
    assert [slot.text for slot in texts.slots] == [
        "dev", "sys", "u1", "u2", "ana", "a1", "t1", "t2", "not json t3", "r1", "Ana"
    ]


def test_collect_assigns_scope_parts() -> None:
    texts = ADAPTER.collect(copy.deepcopy(REQUEST))
    parts = [slot.part for slot in texts.slots]
    assert parts == [Part.SYSTEM, Part.SYSTEM, Part.USER, Part.USER, Part.USER, Part.ASSISTANT,
                     Part.TOOL_ARGUMENTS, Part.TOOL_ARGUMENTS, Part.TOOL_ARGUMENTS, Part.TOOL_RESULTS,
                     Part.SYSTEM]


def test_write_back_keeps_everything_else() -> None:
    body = copy.deepcopy(REQUEST)
    texts = ADAPTER.collect(body)
    texts.write_back([slot.text.upper() for slot in texts.slots])
    messages = body["messages"]
    assert messages[2]["content"][1] == IMAGE
    assert messages[2]["content"][2] == REQUEST["messages"][2]["content"][2]
    assert messages[2]["name"] == "ANA"
    assert json.loads(messages[3]["tool_calls"][0]["function"]["arguments"]) == {"q": "T1", "n": [1, "T2"]}
    assert messages[3]["tool_calls"][1]["function"]["arguments"] == "NOT JSON T3"
    assert body["tools"][0]["function"]["name"] == "f"
    assert body["tools"][0]["function"]["description"] == "ANA"
    assert body["unknown_field"] == REQUEST["unknown_field"]


def test_unchanged_arguments_keep_their_exact_text() -> None:
    body = copy.deepcopy(REQUEST)
    body["messages"][3]["tool_calls"][0]["function"]["arguments"] = '{ "q" :"t1",  "n":[1,"t2"] }'
    texts = ADAPTER.collect(body)
    texts.write_back([slot.text for slot in texts.slots])
    assert body["messages"][3]["tool_calls"][0]["function"]["arguments"] == '{ "q" :"t1",  "n":[1,"t2"] }'


@pytest.mark.parametrize(
    "body",
    [
        pytest.param({"model": "m"}, id="no-messages"),
        pytest.param({"messages": "hi"}, id="messages-not-array"),
        pytest.param({"messages": ["hi"]}, id="message-not-object"),
        pytest.param({"messages": [{"role": "wizard", "content": "x"}]}, id="unknown-role"),
        pytest.param({"messages": [{"role": "user", "content": 5}]}, id="content-number"),
        pytest.param({"messages": [{"role": "user", "content": [{"type": "text", "text": 5}]}]}, id="text-number"),
    ],
)
def test_collect_rejects_bad_shapes(body: dict[str, Any]) -> None:
    with pytest.raises(InvalidBody):
        ADAPTER.collect(body)


def restorer() -> Restorer:
    vault = Vault()
    vault.placeholder_for("PERSON", 'Ana "Q"')
    vault.placeholder_for("EMAIL_ADDRESS", "ana@example.com")
    return Restorer(vault)


def test_restore_body_content_refusal_and_arguments() -> None:
    body = {"choices": [{"index": 0, "message": {
        "role": "assistant", "content": "Hi <PERSON_1>", "refusal": "No, [PERSON_1]",
        "tool_calls": [{"id": "c", "type": "function",
                        "function": {"name": "f", "arguments": '{"to": "<EMAIL_ADDRESS_1>", "who": "<PERSON_1>"}'}}],
    }}]}
    ADAPTER.restore_body(body, restorer())
    message = body["choices"][0]["message"]
    assert message["content"] == 'Hi Ana "Q"'
    assert message["refusal"] == 'No, Ana "Q"'
    assert json.loads(message["tool_calls"][0]["function"]["arguments"]) == {"to": "ana@example.com", "who": 'Ana "Q"'}


def chunk(delta: dict[str, Any], finish: str | None = None, index: int = 0) -> str:
    body = {"id": "x", "object": "chat.completion.chunk", "created": 1, "model": "m",
            "choices": [{"index": index, "delta": delta, "finish_reason": finish}]}
    return f"data: {json.dumps(body)}\n\n"


def run_stream(raw: bytes, cuts: list[int] | None = None) -> list[dict[str, Any] | str]:
    decoder = SSEDecoder()
    transformer = ADAPTER.stream_transformer(restorer())
    out = b""
    points = [0, *(cuts or []), len(raw)]
    for a, b in itertools.pairwise(points):
        out += b"".join(encode(e) for ev in decoder.feed(raw[a:b]) for e in transformer.feed(ev))
    out += b"".join(encode(e) for ev in decoder.flush() for e in transformer.feed(ev))
    out += b"".join(encode(e) for e in transformer.end())
    events = SSEDecoder().feed(out)
    return [e.data if e.data == "[DONE]" else json.loads(e.data) for e in events]


def content_of(events: list[dict[str, Any] | str], index: int = 0) -> str:
    text = ""
    for event in events:
        if isinstance(event, dict):
            for choice in event.get("choices", []):
                if choice["index"] == index:
                    text += choice["delta"].get("content") or ""
    return text


def arguments_of(events: list[dict[str, Any] | str]) -> str:
    text = ""
    for event in events:
        if isinstance(event, dict):
            for choice in event.get("choices", []):
                for call in choice["delta"].get("tool_calls") or []:
                    text += call.get("function", {}).get("arguments") or ""
    return text


STREAM = (
    chunk({"role": "assistant", "content": ""}) + chunk({"content": "Hi <PER"}) + chunk({"content": "SON_1>, mail"})
    + chunk({"content": " <EMAIL_"}) + chunk({"tool_calls": [{"index": 0, "id": "c", "type": "function",
                                                             "function": {"name": "f", "arguments": ""}}]})
    + chunk({"tool_calls": [{"index": 0, "function": {"arguments": '{"who": "<PERS'}}]})
    + chunk({"tool_calls": [{"index": 0, "function": {"arguments": 'ON_1>"}'}}]})
    + chunk({}, "stop") + "data: [DONE]\n\n"
).encode()


def test_stream_restores_split_placeholders() -> None:
    events = run_stream(STREAM)
    assert content_of(events) == 'Hi Ana "Q", mail <EMAIL_'
    assert json.loads(arguments_of(events)) == {"who": 'Ana "Q"'}
    assert events[-1] == "[DONE]"


def test_stream_flushes_in_finish_chunk_without_extra_events() -> None:
    events = run_stream(STREAM)
    assert len(events) == STREAM.count(b"data: ")
    assert events[-2]["choices"][0]["finish_reason"] == "stop"  # type: ignore[index]
    assert events[-2]["choices"][0]["delta"]["content"] == "<EMAIL_"  # type: ignore[index]


def test_stream_identical_at_every_byte_offset() -> None:
    expected = run_stream(STREAM)
    for cut in range(len(STREAM) + 1):
        events = run_stream(STREAM, [cut])
        assert content_of(events) == content_of(expected), cut
        assert arguments_of(events) == arguments_of(expected), cut


def test_stream_without_done_is_not_given_one() -> None:
    raw = (chunk({"content": "Bye <PERS"})).encode()
    events = run_stream(raw)
    assert "[DONE]" not in events
    assert content_of(events) == "Bye <PERS"


def test_stream_flushes_before_usage_chunk() -> None:
    usage = {"id": "x", "object": "chat.completion.chunk", "created": 1, "model": "m", "choices": [],
             "usage": {"prompt_tokens": 1, "completion_tokens": 2, "total_tokens": 3}}
    raw = (chunk({"content": "Hi <PERS"}) + f"data: {json.dumps(usage)}\n\n" + "data: [DONE]\n\n").encode()
    events = run_stream(raw)
    assert content_of(events) == "Hi <PERS"
    assert events[-2]["usage"]["completion_tokens"] == 2  # type: ignore[index]


def test_stream_choices_are_independent() -> None:
    raw = (chunk({"content": "<PERS"}, index=0) + chunk({"content": "<EMAIL"}, index=1)
           + chunk({"content": "ON_1>"}, index=0) + chunk({"content": "_ADDRESS_1>"}, index=1)
           + chunk({}, "stop", 0) + chunk({}, "stop", 1) + "data: [DONE]\n\n").encode()
    events = run_stream(raw)
    assert content_of(events, 0) == 'Ana "Q"'
    assert content_of(events, 1) == "ana@example.com"


def test_unknown_shapes_are_scanned_not_skipped() -> None:
    body = {
        "model": "m",
        "user": "u@example.com",
        "metadata": {"customer": "c1"},
        "stop": ["s1"],
        "messages": [
            {"role": "user", "content": [{"type": "input_text", "text": "x1"}, {"text": "x2"}, IMAGE]},
            {"role": "assistant", "content": None, "reasoning_content": "x3", "tool_calls": [
                {"id": "c", "type": "function", "function": {"name": "f", "arguments": {"q": "x4"}}}]},
        ],
    }
    texts = ADAPTER.collect(body)
    assert {slot.text for slot in texts.slots} == {"x1", "x2", "x3", "x4", "u@example.com", "c1", "s1"}


def test_tool_calls_must_be_an_array() -> None:
    with pytest.raises(InvalidBody):
        ADAPTER.collect({"messages": [{"role": "assistant", "tool_calls": {"q": "x"}}]})
