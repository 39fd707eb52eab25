"""The Anthropic Messages adapter: scanned texts, restored bodies and streams, and the SDK end to end."""

from __future__ import annotations

import base64
import copy
import json
from pathlib import Path
from typing import Any

import anthropic
import pytest

from sidecar.errors import InvalidBody
from sidecar.protocols.anthropic_messages import AnthropicMessagesAdapter
from sidecar.protocols.base import Part
from sidecar.sse import SSEDecoder
from sidecar.testing.fake_anthropic import sign
from tests.conftest import RunningSidecar, SidecarFactory
from tests.conftest_protocols import (
    CARD,
    EMAIL,
    NAME,
    PHONE,
    PROMPT,
    VAULT_EMAIL,
    VAULT_NAME,
    RunningAnthropic,
    anthropic_sidecar_fixture,  # noqa: F401 (a fixture, found by its name)
    assert_no_pii,
    fake_anthropic_fixture,  # noqa: F401 (a fixture, found by its name)
    payloads,
    restorer,
    run_stream,
    sse_bytes,
)

ADAPTER = AnthropicMessagesAdapter()
PNG = base64.b64encode(b"\x89PNG\r\n\x1a\n not really an image").decode()
IMAGE = {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": PNG}}
PDF = {"type": "document", "source": {"type": "base64", "media_type": "application/pdf", "data": "JVBERi0x"}}
THINKING = {"type": "thinking", "thinking": "secret plan t0", "signature": "sig-abc"}

REQUEST: dict[str, Any] = {
    "model": "claude-x",
    "max_tokens": 10,
    "system": [{"type": "text", "text": "sys1", "cache_control": {"type": "ephemeral"}},
               {"type": "text", "text": "sys2"}],
    "tools": [{"name": "lookup", "description": "Ana", "input_schema": {"type": "object"}}],
    "metadata": {"user_id": "u-1"},
    "messages": [
        {"role": "user", "content": "u0"},
        {"role": "user", "content": [
            IMAGE,
            {"type": "text", "text": "u1"},
            PDF,
            {"type": "document", "title": "d-title", "context": "d-context",
             "source": {"type": "text", "media_type": "text/plain", "data": "d-data"}},
            {"type": "document", "source": {"type": "content", "content": [
                {"type": "text", "text": "d-block"}, IMAGE]}},
            {"type": "search_result", "source": "https://example.com", "title": "s-title",
             "content": [{"type": "text", "text": "s-text"}]},
        ]},
        {"role": "assistant", "content": [
            THINKING,
            {"type": "redacted_thinking", "data": "opaque"},
            {"type": "text", "text": "a1", "citations": [
                {"type": "char_location", "cited_text": "c1", "document_index": 0, "document_title": "c2"}]},
            {"type": "tool_use", "id": "toolu_1", "name": "lookup", "input": {"q": "t1", "n": [1, "t2"]}},
            {"type": "server_tool_use", "id": "srvtoolu_1", "name": "web_search", "input": {"query": "t3"}},
            {"type": "web_search_tool_result", "tool_use_id": "srvtoolu_1", "content": [
                {"type": "web_search_result", "url": "https://example.com", "title": "w-title",
                 "encrypted_content": "ENC", "page_age": None}]},
        ]},
        {"role": "user", "content": [
            {"type": "tool_result", "tool_use_id": "toolu_1", "content": "r1"},
            {"type": "tool_result", "tool_use_id": "toolu_2", "is_error": True,
             "content": [{"type": "text", "text": "r2"}, IMAGE]},
            {"type": "tool_result", "tool_use_id": "toolu_3"},
        ]},
    ],
}


def collected() -> tuple[dict[str, Any], list[str], list[Part]]:
    body = copy.deepcopy(REQUEST)
    texts = ADAPTER.collect(body)
    return body, [slot.text for slot in texts.slots], [slot.part for slot in texts.slots]


def test_collect_texts_in_reading_order() -> None:
    _, texts, _ = collected()
    assert texts == ["sys1", "sys2", "u0", "u1", "d-title", "d-context", "d-data", "d-block",
                     "s-title", "s-text", "a1", "c1", "c2", "t1", "t2", "t3", "https://example.com", "w-title", "r1", "r2",
                     "u-1", "Ana"]


def test_collect_assigns_scope_parts() -> None:
    _, texts, parts = collected()
    by_text = dict(zip(texts, parts, strict=True))
    assert by_text["sys1"] is Part.SYSTEM
    assert by_text["d-data"] is Part.USER
    assert by_text["a1"] is Part.ASSISTANT
    assert by_text["t1"] is Part.TOOL_ARGUMENTS
    assert by_text["t3"] is Part.TOOL_ARGUMENTS
    assert by_text["w-title"] is Part.TOOL_RESULTS
    assert by_text["r2"] is Part.TOOL_RESULTS


def test_write_back_keeps_binary_and_thinking_blocks() -> None:
    body = copy.deepcopy(REQUEST)
    texts = ADAPTER.collect(body)
    texts.write_back([slot.text.upper() for slot in texts.slots])
    user, assistant = body["messages"][1]["content"], body["messages"][2]["content"]
    assert user[0] == IMAGE
    assert user[2] == PDF
    assert user[3]["source"]["data"] == "D-DATA"
    assert assistant[0] == THINKING
    assert assistant[1] == {"type": "redacted_thinking", "data": "opaque"}
    assert assistant[3]["input"] == {"q": "T1", "n": [1, "T2"]}
    assert assistant[5]["content"][0]["encrypted_content"] == "ENC"
    assert assistant[5]["content"][0]["url"] == "HTTPS://EXAMPLE.COM"
    assert body["tools"][0]["name"] == REQUEST["tools"][0]["name"]
    assert body["tools"][0]["input_schema"] == REQUEST["tools"][0]["input_schema"]
    assert body["metadata"] == {"user_id": "U-1"}


def test_collect_system_string() -> None:
    texts = ADAPTER.collect({"system": "be nice", "messages": [{"role": "user", "content": "hi"}]})
    assert [(slot.text, slot.part) for slot in texts.slots] == [("be nice", Part.SYSTEM), ("hi", Part.USER)]


@pytest.mark.parametrize(
    "body",
    [
        pytest.param({"model": "m"}, id="no-messages"),
        pytest.param({"messages": {"role": "user"}}, id="messages-not-array"),
        pytest.param({"messages": ["hi"]}, id="message-not-object"),
        pytest.param({"messages": [{"role": "system", "content": "x"}]}, id="system-role"),
        pytest.param({"messages": [{"role": "user", "content": 5}]}, id="content-number"),
        pytest.param({"messages": [{"role": "user", "content": [{"text": "x"}]}]}, id="block-without-type"),
        pytest.param({"messages": [{"role": "user", "content": [{"type": "text", "text": 1}]}]}, id="text-not-string"),
        pytest.param({"messages": [{"role": "assistant", "content": [
            {"type": "tool_use", "id": "t", "name": "f", "input": "x"}]}]}, id="tool-input-string"),
        pytest.param({"system": [{"type": "image"}], "messages": []}, id="system-image"),
        pytest.param({"system": 3, "messages": []}, id="system-number"),
        pytest.param({"messages": [{"role": "user", "content": [
            {"type": "document", "source": "x"}]}]}, id="document-source-string"),
    ],
)
def test_collect_rejects_bad_shapes(body: dict[str, Any]) -> None:
    with pytest.raises(InvalidBody):
        ADAPTER.collect(body)


def test_restore_body_text_tool_input_and_citations() -> None:
    body = {"type": "message", "role": "assistant", "content": [
        {"type": "thinking", "thinking": "about <PERSON_1>", "signature": "s"},
        {"type": "text", "text": "Hi <PERSON_1>", "citations": [
            {"type": "char_location", "cited_text": "mail [EMAIL_ADDRESS_1]", "document_index": 0}]},
        {"type": "tool_use", "id": "t", "name": "f", "input": {"to": "<EMAIL_ADDRESS_1>", "who": ["PERSON_1"]}},
    ], "usage": {"input_tokens": 3, "output_tokens": 4, "cache_read_input_tokens": 2}}
    ADAPTER.restore_body(body, restorer())
    assert body["content"][0]["thinking"] == "about <PERSON_1>"
    assert body["content"][1]["text"] == f"Hi {VAULT_NAME}"
    assert body["content"][1]["citations"][0]["cited_text"] == f"mail {VAULT_EMAIL}"
    assert body["content"][2]["input"] == {"to": VAULT_EMAIL, "who": [VAULT_NAME]}


def test_restore_body_error() -> None:
    body = {"type": "error", "error": {"type": "invalid_request_error", "message": "bad <PERSON_1>"}}
    ADAPTER.restore_body(body, restorer())
    assert body["error"] == {"type": "invalid_request_error", "message": f"bad {VAULT_NAME}"}


def test_usage_adds_cache_tokens_to_input() -> None:
    usage = ADAPTER.usage({"usage": {"input_tokens": 3, "output_tokens": 4, "cache_read_input_tokens": 2,
                                     "cache_creation_input_tokens": 5}})
    assert usage == {"input_tokens": 10, "output_tokens": 4, "cached_tokens": 2, "cache_write_tokens": 5}


@pytest.mark.parametrize(
    ("status", "error_type"),
    [(400, "invalid_request_error"), (404, "not_found_error"), (413, "request_too_large"),
     (415, "invalid_request_error"), (502, "api_error"), (503, "api_error")],
)
def test_error_body_format(status: int, error_type: str) -> None:
    body = ADAPTER.error_body(status, "pii_blocked", "blocked")
    assert body == {"type": "error", "error": {"type": error_type, "message": "blocked", "code": "pii_blocked"}}


def delta(index: int, payload: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    return "content_block_delta", {"type": "content_block_delta", "index": index, "delta": payload}


def text_delta(index: int, text: str) -> tuple[str, dict[str, Any]]:
    return delta(index, {"type": "text_delta", "text": text})


def json_delta(index: int, text: str) -> tuple[str, dict[str, Any]]:
    return delta(index, {"type": "input_json_delta", "partial_json": text})


def block_start(index: int, block: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    return "content_block_start", {"type": "content_block_start", "index": index, "content_block": block}


def block_stop(index: int) -> tuple[str, dict[str, Any]]:
    return "content_block_stop", {"type": "content_block_stop", "index": index}


MESSAGE_START = ("message_start", {"type": "message_start", "message": {
    "id": "msg_1", "type": "message", "role": "assistant", "model": "claude-x", "content": [],
    "stop_reason": None, "stop_sequence": None,
    "usage": {"input_tokens": 7, "output_tokens": 1, "cache_read_input_tokens": 3}}})
MESSAGE_END = [
    ("message_delta", {"type": "message_delta", "delta": {"stop_reason": "end_turn", "stop_sequence": None},
                       "usage": {"output_tokens": 9}}),
    ("message_stop", {"type": "message_stop"}),
]

STREAM = sse_bytes([
    MESSAGE_START,
    ("ping", {"type": "ping"}),
    block_start(0, {"type": "thinking", "thinking": "", "signature": ""}),
    delta(0, {"type": "thinking_delta", "thinking": "about <PERSON_1>"}),
    delta(0, {"type": "signature_delta", "signature": "sig-1"}),
    block_stop(0),
    block_start(1, {"type": "text", "text": ""}),
    text_delta(1, "Hi <PER"), text_delta(1, "SON_1>, mail "), text_delta(1, "<EMAIL_ADD"),
    block_stop(1),
    block_start(2, {"type": "tool_use", "id": "toolu_1", "name": "f", "input": {}}),
    json_delta(2, '{"who": "<PERS'), json_delta(2, 'ON_1>", "to": "EMAIL_ADDRESS_'), json_delta(2, '1"}'),
    block_stop(2),
    *MESSAGE_END,
])


def block_text(events: list[Any], index: int, field: str = "text") -> str:
    text = ""
    for event in events:
        if event.get("type") == "content_block_delta" and event["index"] == index:
            text += event["delta"].get(field, "")
    return text


def test_stream_restores_text_and_tool_input() -> None:
    events = payloads(run_stream(ADAPTER, STREAM))
    assert block_text(events, 1) == f"Hi {VAULT_NAME}, mail <EMAIL_ADD"
    assert json.loads(block_text(events, 2, "partial_json")) == {"who": VAULT_NAME, "to": VAULT_EMAIL}


def test_stream_passes_thinking_and_signature_unchanged() -> None:
    events = run_stream(ADAPTER, STREAM)
    raw = STREAM.decode()
    for event in events:
        if '"thinking_delta"' in event.data or '"signature_delta"' in event.data:
            assert f"event: content_block_delta\ndata: {event.data}\n\n" in raw


def test_stream_flushes_held_text_before_block_stop() -> None:
    events = payloads(run_stream(ADAPTER, STREAM))
    stop = events.index({"type": "content_block_stop", "index": 1})
    assert events[stop - 1] == {"type": "content_block_delta", "index": 1,
                                "delta": {"type": "text_delta", "text": "<EMAIL_ADD"}}


def test_stream_adds_only_flush_events() -> None:
    events = run_stream(ADAPTER, STREAM)
    assert len(events) == STREAM.count(b"\n\n") + 1
    assert [event.event for event in events][-2:] == ["message_delta", "message_stop"]


def test_stream_identical_at_every_byte_offset() -> None:
    expected = payloads(run_stream(ADAPTER, STREAM))
    for cut in range(len(STREAM) + 1):
        events = payloads(run_stream(ADAPTER, STREAM, [cut]))
        assert block_text(events, 1) == block_text(expected, 1), cut
        assert block_text(events, 2, "partial_json") == block_text(expected, 2, "partial_json"), cut


def test_stream_event_names_match_types() -> None:
    for event in run_stream(ADAPTER, STREAM):
        assert event.event == json.loads(event.data)["type"]


def test_stream_error_follows_restored_text() -> None:
    error = ("error", {"type": "error", "error": {"type": "overloaded_error", "message": "busy <PERSON_1>"}})
    raw = sse_bytes([MESSAGE_START, block_start(0, {"type": "text", "text": ""}),
                     text_delta(0, "Hi <PERSON_1> and PERSON_"), error])
    events = payloads(run_stream(ADAPTER, raw))
    assert block_text(events, 0) == f"Hi {VAULT_NAME} and PERSON_"
    assert events[-2]["delta"] == {"type": "text_delta", "text": "PERSON_"}
    assert events[-1] == {"type": "error", "error": {"type": "overloaded_error", "message": f"busy {VAULT_NAME}"}}


def test_stream_without_stop_flushes_at_end() -> None:
    raw = sse_bytes([MESSAGE_START, block_start(0, {"type": "text", "text": ""}), text_delta(0, "Bye <PERS")])
    events = payloads(run_stream(ADAPTER, raw))
    assert block_text(events, 0) == "Bye <PERS"


def test_stream_text_in_block_start_is_restored() -> None:
    raw = sse_bytes([MESSAGE_START, block_start(0, {"type": "text", "text": "Hi <PERS"}),
                     text_delta(0, "ON_1>"), block_stop(0), *MESSAGE_END])
    events = payloads(run_stream(ADAPTER, raw))
    started = next(event for event in events if event["type"] == "content_block_start")
    assert started["content_block"]["text"] + block_text(events, 0) == f"Hi {VAULT_NAME}"


def test_stream_usage_merges_start_and_delta() -> None:
    transformer = ADAPTER.stream_transformer(restorer())
    for event in SSEDecoder().feed(STREAM):
        transformer.feed(event)
    assert transformer.usage == {"input_tokens": 10, "output_tokens": 9, "cached_tokens": 3}


# The official SDK through the sidecar, against the fake Anthropic provider.

TOOLS = [{"name": "lookup", "description": "Look up a query.",
          "input_schema": {"type": "object", "properties": {"query": {"type": "string"}}}}]


def client(sidecar: RunningSidecar) -> anthropic.AsyncAnthropic:
    return anthropic.AsyncAnthropic(base_url=sidecar.url, api_key="sk-ant-test", max_retries=0)


def user_turn() -> list[dict[str, Any]]:
    return [{"role": "user", "content": [IMAGE, {"type": "text", "text": PROMPT}]}]


def sent(fake: RunningAnthropic) -> dict[str, Any]:
    document: dict[str, Any] = json.loads(fake.fake.requests[-1].body)
    return document


async def test_sdk_message_restored(anthropic_sidecar: RunningSidecar, fake_anthropic: RunningAnthropic) -> None:
    reply = await client(anthropic_sidecar).messages.create(
        model="claude-x", max_tokens=100, system=f"You help {NAME}.", messages=user_turn())
    assert reply.content[0].type == "text"
    assert reply.content[0].text == f"You said: {PROMPT}"
    body = sent(fake_anthropic)
    assert body["system"] == "You help <PERSON_1>."
    assert body["messages"][0]["content"][1]["text"] == (
        "I am <PERSON_1>, mail <EMAIL_ADDRESS_1>, phone <PHONE_NUMBER_1>, card <CREDIT_CARD_1>.")
    assert body["messages"][0]["content"][0] == IMAGE
    assert_no_pii([request.body for request in fake_anthropic.fake.requests])


async def test_sdk_stream_with_tool_use(anthropic_sidecar: RunningSidecar, fake_anthropic: RunningAnthropic) -> None:
    text = ""
    async with client(anthropic_sidecar).messages.stream(
        model="claude-x", max_tokens=100, messages=user_turn(), tools=TOOLS
    ) as stream:
        async for event in stream:
            if event.type == "text":
                text += event.text
        final = await stream.get_final_message()
    tool_use = final.content[1]
    assert tool_use.type == "tool_use"
    assert tool_use.input == {"query": PROMPT}
    assert text == "Let me look that up."
    assert_no_pii([request.body for request in fake_anthropic.fake.requests])


async def test_sdk_tool_result_round_trip(anthropic_sidecar: RunningSidecar, fake_anthropic: RunningAnthropic) -> None:
    sdk = client(anthropic_sidecar)
    first = await sdk.messages.create(model="claude-x", max_tokens=100, messages=user_turn(), tools=TOOLS)
    tool_use = next(block for block in first.content if block.type == "tool_use")
    result = f"Found {NAME} at {PHONE}"
    history = [*user_turn(), {"role": "assistant", "content": [b.model_dump(exclude_none=True) for b in first.content]},
               {"role": "user", "content": [{"type": "tool_result", "tool_use_id": tool_use.id, "content": result}]}]
    second = await sdk.messages.create(model="claude-x", max_tokens=100, messages=history, tools=TOOLS)
    assert second.content[0].type == "text"
    assert second.content[0].text == f"You said: {result}"
    body = sent(fake_anthropic)
    assert body["messages"][1]["content"][1]["input"] == {
        "query": "I am <PERSON_1>, mail <EMAIL_ADDRESS_1>, phone <PHONE_NUMBER_1>, card <CREDIT_CARD_1>."}
    # The phone number keeps the placeholder number of the first user turn.
    assert body["messages"][2]["content"][0]["content"].endswith(" at <PHONE_NUMBER_1>")
    assert_no_pii([request.body for request in fake_anthropic.fake.requests])


async def test_sdk_thinking_signature_survives(
    anthropic_sidecar: RunningSidecar, fake_anthropic: RunningAnthropic
) -> None:
    sdk = client(anthropic_sidecar)
    thinking = {"type": "enabled", "budget_tokens": 1024}
    async with sdk.messages.stream(model="claude-x", max_tokens=2000, messages=user_turn(),
                                   thinking=thinking) as stream:
        first = await stream.get_final_message()
    block = first.content[0]
    assert block.type == "thinking"
    assert block.signature == sign(block.thinking)
    assert "<PERSON_1>" in block.thinking
    history = [*user_turn(), {"role": "assistant", "content": [b.model_dump(exclude_none=True) for b in first.content]},
               {"role": "user", "content": f"Thanks, {NAME}"}]
    second = await sdk.messages.create(model="claude-x", max_tokens=2000, messages=history, thinking=thinking)
    assert second.content[-1].type == "text"
    assert second.content[-1].text == f"You said: Thanks, {NAME}"
    assert_no_pii([request.body for request in fake_anthropic.fake.requests[1:]])


async def test_sdk_stream_error_raised_after_text(
    anthropic_sidecar: RunningSidecar, fake_anthropic: RunningAnthropic
) -> None:
    fake_anthropic.fake.stream_error = {"type": "error", "error": {"type": "overloaded_error", "message": "busy"}}
    text = ""
    with pytest.raises(anthropic.APIStatusError, match="overloaded_error"):
        async with client(anthropic_sidecar).messages.stream(
            model="claude-x", max_tokens=100, messages=user_turn()
        ) as stream:
            async for event in stream:
                if event.type == "text":
                    text += event.text
    assert text == f"You said: {PROMPT}"


async def test_sdk_blocked_request_gets_anthropic_error(
    start_sidecar: SidecarFactory, fake_anthropic: RunningAnthropic, tmp_path: Path
) -> None:
    policy = tmp_path / "block.yaml"
    policy.write_text("version: 1\nname: block-cards\nentities:\n  CREDIT_CARD: {action: block}\n")
    sidecar = await start_sidecar(upstream=fake_anthropic.url, policy=str(policy))
    with pytest.raises(anthropic.BadRequestError) as caught:
        await client(sidecar).messages.create(model="claude-x", max_tokens=10, messages=user_turn())
    assert caught.value.body == {"type": "error", "error": {
        "type": "invalid_request_error", "code": "pii_blocked",
        "message": "request blocked by policy 'block-cards': it contains CREDIT_CARD x1"}}
    assert fake_anthropic.fake.requests == []


async def test_sdk_count_tokens_scanned(anthropic_sidecar: RunningSidecar, fake_anthropic: RunningAnthropic) -> None:
    count = await client(anthropic_sidecar).messages.count_tokens(model="claude-x", messages=user_turn())
    assert count.input_tokens > 0
    assert fake_anthropic.fake.requests[-1].path == "/v1/messages/count_tokens"
    assert_no_pii([request.body for request in fake_anthropic.fake.requests])


async def test_sdk_models_list_passes_through(anthropic_sidecar: RunningSidecar) -> None:
    page = await client(anthropic_sidecar).models.list()
    assert [model.id for model in page.data] == ["claude-fake"]


async def test_audit_records_dialect_and_usage(
    anthropic_sidecar: RunningSidecar, fake_anthropic: RunningAnthropic
) -> None:
    stream = await client(anthropic_sidecar).messages.create(
        model="claude-x", max_tokens=100, messages=user_turn(), stream=True)
    async for _ in stream:
        pass
    record = anthropic_sidecar.audits[-1]
    assert record["dialect"] == "anthropic.messages"
    assert record["route"] == "/v1/messages"
    assert record["usage"] == {"input_tokens": 30, "output_tokens": 12, "cached_tokens": 5, "cache_write_tokens": 0}
    assert all(value not in json.dumps(record) for value in (NAME, EMAIL, PHONE, CARD))


def test_stream_single_byte_chunks() -> None:
    expected = payloads(run_stream(ADAPTER, STREAM))
    events = payloads(run_stream(ADAPTER, STREAM, list(range(1, len(STREAM)))))
    assert block_text(events, 1) == block_text(expected, 1)
    assert block_text(events, 2, "partial_json") == block_text(expected, 2, "partial_json")
