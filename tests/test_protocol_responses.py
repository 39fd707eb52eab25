"""The OpenAI Responses adapter: scanned texts, restored bodies and streams, and the SDK end to end."""

from __future__ import annotations

import copy
import json
from typing import Any

import openai
import pytest

from sidecar.errors import InvalidBody
from sidecar.protocols.base import Part
from sidecar.protocols.openai_responses import OpenAIResponsesAdapter
from sidecar.sse import SSEDecoder
from tests.conftest import RunningSidecar, RunningUpstream
from tests.conftest_protocols import (
    NAME,
    PROMPT,
    VAULT_EMAIL,
    VAULT_NAME,
    assert_no_pii,
    payloads,
    restorer,
    run_stream,
    sse_bytes,
)

ADAPTER = OpenAIResponsesAdapter()
IMAGE = {"type": "input_image", "image_url": "data:image/png;base64,iVBORw0KGgo=", "detail": "auto"}
FILE = {"type": "input_file", "filename": "a.pdf", "file_data": "data:application/pdf;base64,JVBERi0x"}
REASONING = {"type": "reasoning", "id": "rs_1", "encrypted_content": "ENC",
             "summary": [{"type": "summary_text", "text": "thought about <PERSON_1>"}]}

REQUEST: dict[str, Any] = {
    "model": "gpt-x",
    "instructions": "inst",
    "prompt": {"id": "pmpt_1", "variables": {"city": "v1", "photo": IMAGE,
                                             "note": {"type": "input_text", "text": "v2"}}},
    "tools": [{"type": "function", "name": "lookup", "description": "Ana"}],
    "input": [
        {"role": "developer", "content": "dev"},
        {"type": "message", "role": "user", "content": [
            {"type": "input_text", "text": "u1"}, IMAGE, FILE, {"type": "input_text", "text": "u2"}]},
        {"type": "message", "role": "assistant", "id": "msg_1", "status": "completed", "content": [
            {"type": "output_text", "text": "a1", "annotations": []}, {"type": "refusal", "refusal": "a2"}]},
        REASONING,
        {"type": "function_call", "id": "fc_1", "call_id": "call_1", "name": "lookup",
         "arguments": '{"q": "t1", "n": [1, "t2"]}'},
        {"type": "function_call_output", "call_id": "call_1", "output": "r1"},
        {"type": "function_call_output", "call_id": "call_2", "output": [
            {"type": "input_text", "text": "r2"}, IMAGE]},
        {"type": "custom_tool_call", "call_id": "call_3", "name": "sql", "input": "t3"},
        {"type": "custom_tool_call_output", "call_id": "call_3", "output": "r3"},
        {"type": "mcp_call", "id": "mcp_1", "server_label": "crm", "name": "find",
         "arguments": '{"who": "t4"}', "output": "r4"},
        {"type": "web_search_call", "id": "ws_1", "status": "completed",
         "action": {"type": "search", "query": "t5"}},
        {"type": "item_reference", "id": "msg_0"},
    ],
}


def collected() -> tuple[list[str], list[Part]]:
    texts = ADAPTER.collect(copy.deepcopy(REQUEST))
    return [slot.text for slot in texts.slots], [slot.part for slot in texts.slots]


def test_collect_texts_in_reading_order() -> None:
    texts, _ = collected()
    assert texts == ["inst", "v1", "v2", "dev", "u1", "u2", "a1", "a2", "t1", "t2", "r1", "r2",
                     "t3", "r3", "t4", "r4", "t5", "Ana"]


def test_collect_assigns_scope_parts() -> None:
    texts, parts = collected()
    by_text = dict(zip(texts, parts, strict=True))
    assert by_text["inst"] is Part.SYSTEM
    assert by_text["dev"] is Part.SYSTEM
    assert by_text["u1"] is Part.USER
    assert by_text["v1"] is Part.USER
    assert by_text["a2"] is Part.ASSISTANT
    assert by_text["t1"] is Part.TOOL_ARGUMENTS
    assert by_text["t3"] is Part.TOOL_ARGUMENTS
    assert by_text["t5"] is Part.TOOL_ARGUMENTS
    assert by_text["r2"] is Part.TOOL_RESULTS
    assert by_text["r4"] is Part.TOOL_RESULTS


def test_write_back_keeps_files_images_and_reasoning() -> None:
    body = copy.deepcopy(REQUEST)
    texts = ADAPTER.collect(body)
    texts.write_back([slot.text.upper() for slot in texts.slots])
    items = body["input"]
    assert items[1]["content"][1] == IMAGE
    assert items[1]["content"][2] == FILE
    assert items[3] == REASONING
    assert json.loads(items[4]["arguments"]) == {"q": "T1", "n": [1, "T2"]}
    assert items[9]["server_label"] == "crm"
    assert items[10]["action"] == {"type": "search", "query": "T5"}
    assert body["prompt"]["variables"]["photo"] == IMAGE
    assert body["tools"][0]["name"] == REQUEST["tools"][0]["name"]
    assert body["tools"][0]["description"] == "ANA"


def test_collect_input_string() -> None:
    texts = ADAPTER.collect({"model": "m", "input": "hello"})
    assert [(slot.text, slot.part) for slot in texts.slots] == [("hello", Part.USER)]


def test_collect_without_input() -> None:
    texts = ADAPTER.collect({"model": "m", "previous_response_id": "resp_1"})
    assert texts.slots == []


@pytest.mark.parametrize(
    "body",
    [
        pytest.param({"input": 5}, id="input-number"),
        pytest.param({"input": ["hi"]}, id="item-not-object"),
        pytest.param({"input": [{"role": "wizard", "content": "x"}]}, id="unknown-role"),
        pytest.param({"input": [{"role": "user", "content": 5}]}, id="content-number"),
        pytest.param({"input": [{"role": "user", "content": [{"type": "input_text", "text": 5}]}]},
                     id="text-not-string"),
        pytest.param({"input": [{"type": 7}]}, id="type-not-string"),
        pytest.param({"instructions": ["x"], "input": "hi"}, id="instructions-array"),
    ],
)
def test_collect_rejects_bad_shapes(body: dict[str, Any]) -> None:
    with pytest.raises(InvalidBody):
        ADAPTER.collect(body)


def response_body() -> dict[str, Any]:
    return {
        "id": "resp_1", "object": "response", "status": "completed",
        "instructions": "You help <PERSON_1>",
        "output": [
            REASONING,
            {"type": "message", "id": "msg_1", "role": "assistant", "status": "completed", "content": [
                {"type": "output_text", "text": "Hi <PERSON_1>", "annotations": [], "logprobs": []},
                {"type": "refusal", "refusal": "No, [PERSON_1]"}]},
            {"type": "function_call", "id": "fc_1", "call_id": "call_1", "name": "f",
             "arguments": '{"to": "<EMAIL_ADDRESS_1>", "who": "PERSON_1"}'},
        ],
        "error": None,
        "usage": {"input_tokens": 5, "output_tokens": 6, "input_tokens_details": {"cached_tokens": 2}},
    }


def test_restore_body_output_and_instructions() -> None:
    body = response_body()
    ADAPTER.restore_body(body, restorer())
    assert body["instructions"] == f"You help {VAULT_NAME}"
    assert body["output"][0] == REASONING
    message = body["output"][1]["content"]
    assert message[0]["text"] == f"Hi {VAULT_NAME}"
    assert message[1]["refusal"] == f"No, {VAULT_NAME}"
    assert json.loads(body["output"][2]["arguments"]) == {"to": VAULT_EMAIL, "who": VAULT_NAME}


def test_restore_body_error() -> None:
    body = {"error": {"message": "bad <PERSON_1>", "type": "invalid_request_error", "code": None}}
    ADAPTER.restore_body(body, restorer())
    assert body["error"]["message"] == f"bad {VAULT_NAME}"


def test_usage_reads_input_tokens_details() -> None:
    assert ADAPTER.usage(response_body()) == {"input_tokens": 5, "output_tokens": 6, "cached_tokens": 2}


def numbered(events: list[tuple[str, dict[str, Any]]]) -> list[tuple[str | None, Any]]:
    return [(kind, {"type": kind, "sequence_number": n, **fields}) for n, (kind, fields) in enumerate(events)]


def text_events(text_deltas: list[str], full: str) -> list[tuple[str, dict[str, Any]]]:
    where = {"output_index": 0, "content_index": 0, "item_id": "msg_1"}
    part = {"type": "output_text", "text": full, "annotations": []}
    return [
        ("response.output_item.added", {"output_index": 0, "item": {
            "type": "message", "id": "msg_1", "role": "assistant", "status": "in_progress", "content": []}}),
        ("response.content_part.added", {**where, "part": {**part, "text": ""}}),
        *[("response.output_text.delta", {**where, "delta": d, "logprobs": []}) for d in text_deltas],
        ("response.output_text.done", {**where, "text": full, "logprobs": []}),
        ("response.content_part.done", {**where, "part": part}),
        ("response.output_item.done", {"output_index": 0, "item": {
            "type": "message", "id": "msg_1", "role": "assistant", "status": "completed", "content": [part]}}),
    ]


def call_events(argument_deltas: list[str]) -> list[tuple[str, dict[str, Any]]]:
    full = "".join(argument_deltas)
    item = {"type": "function_call", "id": "fc_1", "call_id": "call_1", "name": "f", "arguments": full}
    return [
        ("response.output_item.added", {"output_index": 1, "item": {**item, "arguments": ""}}),
        *[("response.function_call_arguments.delta", {"output_index": 1, "item_id": "fc_1", "delta": d})
          for d in argument_deltas],
        ("response.function_call_arguments.done", {"output_index": 1, "item_id": "fc_1", "arguments": full}),
        ("response.output_item.done", {"output_index": 1, "item": item}),
    ]


FULL_TEXT = "Hi <PERSON_1>, mail <EMAIL_ADD"
ARGUMENTS = ['{"who": "<PERS', 'ON_1>", "to": "EMAIL_ADDRESS_', '1"}']
RESPONSE = {"id": "resp_1", "object": "response", "status": "completed", "output": [],
            "usage": {"input_tokens": 5, "output_tokens": 6}}
STREAM = sse_bytes(numbered([
    ("response.created", {"response": {**RESPONSE, "status": "in_progress", "usage": None}}),
    *text_events(["Hi <PER", "SON_1>, mail", " <EMAIL_ADD"], FULL_TEXT),
    *call_events(ARGUMENTS),
    ("response.completed", {"response": {**RESPONSE, "output": [
        {"type": "message", "id": "msg_1", "role": "assistant", "status": "completed",
         "content": [{"type": "output_text", "text": FULL_TEXT, "annotations": []}]},
        {"type": "function_call", "id": "fc_1", "call_id": "call_1", "name": "f",
         "arguments": "".join(ARGUMENTS)}]}}),
]))


def joined(events: list[Any], kind: str) -> str:
    return "".join(event["delta"] for event in events if event["type"] == kind)


def test_stream_deltas_done_and_completed_agree() -> None:
    events = payloads(run_stream(ADAPTER, STREAM))
    text = joined(events, "response.output_text.delta")
    arguments = joined(events, "response.function_call_arguments.delta")
    assert text == f"Hi {VAULT_NAME}, mail <EMAIL_ADD"
    assert json.loads(arguments) == {"who": VAULT_NAME, "to": VAULT_EMAIL}
    by_type = {event["type"]: event for event in events}
    assert by_type["response.output_text.done"]["text"] == text
    assert by_type["response.content_part.done"]["part"]["text"] == text
    assert by_type["response.output_item.done"]["item"]["arguments"] == arguments
    assert by_type["response.function_call_arguments.done"]["arguments"] == arguments
    completed = by_type["response.completed"]["response"]["output"]
    assert completed[0]["content"][0]["text"] == text
    assert completed[1]["arguments"] == arguments


def test_stream_keeps_event_count_and_sequence_numbers() -> None:
    events = payloads(run_stream(ADAPTER, STREAM))
    assert [event["sequence_number"] for event in events] == list(range(STREAM.count(b"data: ")))


def test_stream_event_names_match_types() -> None:
    for event in run_stream(ADAPTER, STREAM):
        assert event.event == json.loads(event.data)["type"]


def test_stream_identical_at_every_byte_offset() -> None:
    expected = payloads(run_stream(ADAPTER, STREAM))
    for cut in range(len(STREAM) + 1):
        events = payloads(run_stream(ADAPTER, STREAM, [cut]))
        assert events == expected, cut


def test_stream_held_delta_released_by_next_delta() -> None:
    raw = sse_bytes(numbered(text_events(["Hi <PER", "SON_1> ok"], "Hi <PERSON_1> ok")))
    events = payloads(run_stream(ADAPTER, raw))
    deltas = [event["delta"] for event in events if event["type"] == "response.output_text.delta"]
    assert deltas == ["Hi ", f"{VAULT_NAME} ok"]


def test_stream_reasoning_passes_unchanged() -> None:
    summary = ("response.reasoning_summary_text.delta",
               {"item_id": "rs_1", "output_index": 0, "summary_index": 0, "delta": "about <PERSON_1>"})
    raw = sse_bytes(numbered([summary]))
    events = run_stream(ADAPTER, raw)
    assert events[0].data == json.dumps({"type": summary[0], "sequence_number": 0, **summary[1]})


def test_stream_error_releases_held_delta_first() -> None:
    where = {"output_index": 0, "content_index": 0, "item_id": "msg_1"}
    raw = sse_bytes(numbered([
        ("response.output_text.delta", {**where, "delta": "Hi PERSON_1 and <PERS", "logprobs": []}),
        ("error", {"code": "server_error", "message": "failed for <PERSON_1>", "param": None}),
    ]))
    events = payloads(run_stream(ADAPTER, raw))
    assert events[0]["delta"] == f"Hi {VAULT_NAME} and <PERS"
    assert events[1]["message"] == f"failed for {VAULT_NAME}"


def test_stream_end_releases_held_delta() -> None:
    where = {"output_index": 0, "content_index": 0, "item_id": "msg_1"}
    raw = sse_bytes(numbered([("response.output_text.delta", {**where, "delta": "Bye <PERS", "logprobs": []})]))
    events = payloads(run_stream(ADAPTER, raw))
    assert [event["delta"] for event in events] == ["Bye <PERS"]


def test_stream_usage_from_completed() -> None:
    transformer = ADAPTER.stream_transformer(restorer())
    for event in SSEDecoder().feed(STREAM):
        transformer.feed(event)
    assert transformer.usage == {"input_tokens": 5, "output_tokens": 6}


# The official SDK through the sidecar, against the fake OpenAI provider.

TOOLS = [{"type": "function", "name": "lookup", "description": "Look up a query.",
          "parameters": {"type": "object", "properties": {"query": {"type": "string"}}}}]


def client(sidecar: RunningSidecar) -> openai.AsyncOpenAI:
    return openai.AsyncOpenAI(base_url=sidecar.base_url, api_key="sk-test-key", max_retries=0)


def sent_bodies(upstream: RunningUpstream) -> list[bytes]:
    return [request.body for request in upstream.fake.requests]


async def test_sdk_response_restored(sidecar: RunningSidecar, fake_upstream: RunningUpstream) -> None:
    reply = await client(sidecar).responses.create(model="gpt-x", instructions=f"You help {NAME}.", input=PROMPT)
    assert reply.output_text == f"You said: {PROMPT}"
    assert reply.instructions == f"You help {NAME}."
    sent = fake_upstream.fake.requests[-1].json()
    assert sent["instructions"] == "You help <PERSON_1>."
    assert sent["input"] == "I am <PERSON_1>, mail <EMAIL_ADDRESS_1>, phone <PHONE_NUMBER_1>, card <CREDIT_CARD_1>."
    assert_no_pii(sent_bodies(fake_upstream))


async def test_sdk_stream_helper_restores(sidecar: RunningSidecar, fake_upstream: RunningUpstream) -> None:
    deltas = ""
    items = [{"role": "user", "content": [{"type": "input_text", "text": PROMPT}]}]
    async with client(sidecar).responses.stream(model="gpt-x", input=items) as stream:
        async for event in stream:
            if event.type == "response.output_text.delta":
                deltas += event.delta
        final = await stream.get_final_response()
    assert deltas == f"You said: {PROMPT}"
    assert final.output_text == deltas
    assert_no_pii(sent_bodies(fake_upstream))


async def test_sdk_function_call_round_trip(sidecar: RunningSidecar, fake_upstream: RunningUpstream) -> None:
    sdk = client(sidecar)
    stream = await sdk.responses.create(model="gpt-x", input=PROMPT, tools=TOOLS, stream=True)
    arguments, completed = "", None
    async for event in stream:
        if event.type == "response.function_call_arguments.delta":
            arguments += event.delta
        if event.type == "response.completed":
            completed = event.response
    assert json.loads(arguments) == {"query": PROMPT}
    assert completed is not None
    call = completed.output[0]
    assert call.type == "function_call"
    assert call.arguments == arguments

    result = f"{NAME} lives at 1 Main St"
    history = [{"role": "user", "content": PROMPT}, call.model_dump(exclude_none=True),
               {"type": "function_call_output", "call_id": call.call_id, "output": result}]
    reply = await sdk.responses.create(model="gpt-x", input=history, tools=TOOLS)
    assert reply.output_text == f"You said: {result}"
    sent = fake_upstream.fake.requests[-1].json()["input"]
    assert json.loads(sent[1]["arguments"]) == {
        "query": "I am <PERSON_1>, mail <EMAIL_ADDRESS_1>, phone <PHONE_NUMBER_1>, card <CREDIT_CARD_1>."}
    assert sent[2]["output"].startswith("<PERSON_1> lives at")
    assert_no_pii(sent_bodies(fake_upstream))


async def test_audit_records_dialect_and_usage(sidecar: RunningSidecar, fake_upstream: RunningUpstream) -> None:
    stream = await client(sidecar).responses.create(model="gpt-x", input=PROMPT, stream=True)
    async for _ in stream:
        pass
    record = sidecar.audits[-1]
    assert record["dialect"] == "openai.responses"
    assert record["route"] == "/v1/responses"
    assert record["usage"] == {"input_tokens": 20, "output_tokens": 9, "cached_tokens": 4}


def test_stream_error_event_detected_and_numbered() -> None:
    transformer = ADAPTER.stream_transformer(restorer())
    for event in SSEDecoder().feed(STREAM):
        transformer.feed(event)
    error = SSEDecoder().feed(sse_bytes([("error", {"type": "error", "code": None, "message": "x"})]))[0]
    assert transformer.is_error(error) is True
    assert transformer.is_error(SSEDecoder().feed(STREAM)[0]) is False
    [sent] = transformer.error_events("upstream stream failed")
    assert sent.event == "error"
    assert json.loads(sent.data)["sequence_number"] == STREAM.count(b"data: ")


def test_stream_single_byte_chunks() -> None:
    expected = payloads(run_stream(ADAPTER, STREAM))
    assert payloads(run_stream(ADAPTER, STREAM, list(range(1, len(STREAM))))) == expected
