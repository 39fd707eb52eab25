"""The legacy completions and embeddings adapters, and both through the openai SDK."""

from __future__ import annotations

import base64
import json
import struct
from typing import Any

import openai
import pytest

from sidecar.errors import InvalidBody
from sidecar.protocols.base import Part
from sidecar.protocols.openai_completions import OpenAICompletionsAdapter
from sidecar.protocols.openai_embeddings import OpenAIEmbeddingsAdapter
from sidecar.sse import SSEDecoder
from sidecar.testing.fake_openai_endpoints import embedding
from tests.conftest import RunningSidecar, RunningUpstream
from tests.conftest_protocols import (
    NAME,
    PROMPT,
    VAULT_NAME,
    assert_no_pii,
    payloads,
    restorer,
    run_stream,
    sse_bytes,
)

COMPLETIONS = OpenAICompletionsAdapter()
EMBEDDINGS = OpenAIEmbeddingsAdapter()
TOKEN_IDS = [
    pytest.param([1, 2, 3], id="token-array"),
    pytest.param([[1, 2], [3]], id="token-arrays"),
    pytest.param(["text", 5], id="mixed"),
]


@pytest.mark.parametrize(
    ("prompt", "expected"),
    [pytest.param("one", ["one"], id="string"), pytest.param(["one", "two"], ["one", "two"], id="array")],
)
def test_completions_collect_prompt(prompt: Any, expected: list[str]) -> None:
    texts = COMPLETIONS.collect({"model": "m", "prompt": prompt})
    assert [slot.text for slot in texts.slots] == expected
    assert {slot.part for slot in texts.slots} == {Part.USER}


def test_completions_collect_suffix_after_prompt() -> None:
    body = {"model": "m", "prompt": "before", "suffix": "after"}
    texts = COMPLETIONS.collect(body)
    texts.write_back(["BEFORE", "AFTER"])
    assert body == {"model": "m", "prompt": "BEFORE", "suffix": "AFTER"}


@pytest.mark.parametrize("prompt", TOKEN_IDS)
def test_completions_reject_token_ids(prompt: Any) -> None:
    with pytest.raises(InvalidBody, match="token ids"):
        COMPLETIONS.collect({"model": "m", "prompt": prompt})


@pytest.mark.parametrize(
    "body",
    [
        pytest.param({"model": "m"}, id="no-prompt"),
        pytest.param({"prompt": {"text": "x"}}, id="prompt-object"),
        pytest.param({"prompt": [None]}, id="prompt-null-item"),
        pytest.param({"prompt": "x", "suffix": 3}, id="suffix-number"),
    ],
)
def test_completions_reject_bad_shapes(body: dict[str, Any]) -> None:
    with pytest.raises(InvalidBody):
        COMPLETIONS.collect(body)


def test_completions_restore_body() -> None:
    body = {"choices": [{"index": 0, "text": "Hi <PERSON_1>", "finish_reason": "stop"},
                        {"index": 1, "text": "and [person_1]", "finish_reason": "stop"}]}
    COMPLETIONS.restore_body(body, restorer())
    assert [choice["text"] for choice in body["choices"]] == [f"Hi {VAULT_NAME}", f"and {VAULT_NAME}"]


def chunk(index: int, text: str, finish: str | None = None) -> tuple[None, dict[str, Any]]:
    choice = {"text": text, "index": index, "logprobs": None, "finish_reason": finish}
    return None, {"id": "cmpl-1", "object": "text_completion", "created": 1, "model": "m", "choices": [choice]}


USAGE_CHUNK = (None, {"id": "cmpl-1", "object": "text_completion", "created": 1, "model": "m", "choices": [],
                      "usage": {"prompt_tokens": 3, "completion_tokens": 4, "total_tokens": 7}})
STREAM = sse_bytes([
    chunk(0, "Hi <PER"), chunk(1, "Bye PERS"), chunk(0, "SON_1> and <PER"), chunk(1, "ON_1"),
    chunk(0, "", "stop"), chunk(1, "", "length"), USAGE_CHUNK, (None, "[DONE]"),
])


def texts_of(events: list[Any]) -> dict[int, str]:
    texts: dict[int, str] = {}
    for event in events:
        if isinstance(event, dict):
            for choice in event["choices"]:
                texts[choice["index"]] = texts.get(choice["index"], "") + choice["text"]
    return texts


def test_completions_stream_restores_per_choice() -> None:
    events = payloads(run_stream(COMPLETIONS, STREAM))
    assert texts_of(events) == {0: f"Hi {VAULT_NAME} and <PER", 1: f"Bye {VAULT_NAME}"}
    assert len(events) == STREAM.count(b"data: ")
    assert events[4]["choices"][0] == {"text": "<PER", "index": 0, "logprobs": None, "finish_reason": "stop"}
    assert events[-1] == "[DONE]"


def test_completions_stream_identical_at_every_byte_offset() -> None:
    expected = texts_of(payloads(run_stream(COMPLETIONS, STREAM)))
    for cut in range(len(STREAM) + 1):
        assert texts_of(payloads(run_stream(COMPLETIONS, STREAM, [cut]))) == expected, cut


def test_completions_stream_flushes_before_done_without_finish() -> None:
    events = payloads(run_stream(COMPLETIONS, sse_bytes([chunk(0, "Bye <PERS"), (None, "[DONE]")])))
    assert texts_of(events) == {0: "Bye <PERS"}
    assert events[-1] == "[DONE]"


def test_completions_stream_usage() -> None:
    transformer = COMPLETIONS.stream_transformer(restorer())
    for event in SSEDecoder().feed(STREAM):
        transformer.feed(event)
    assert transformer.usage == {"input_tokens": 3, "output_tokens": 4}


@pytest.mark.parametrize(
    ("value", "expected"),
    [pytest.param("one", ["one"], id="string"), pytest.param(["one", "two"], ["one", "two"], id="array")],
)
def test_embeddings_collect_input(value: Any, expected: list[str]) -> None:
    texts = EMBEDDINGS.collect({"model": "m", "input": value})
    assert [slot.text for slot in texts.slots] == expected


@pytest.mark.parametrize("value", TOKEN_IDS)
def test_embeddings_reject_token_ids(value: Any) -> None:
    with pytest.raises(InvalidBody, match="token ids"):
        EMBEDDINGS.collect({"model": "m", "input": value})


def test_embeddings_never_stream() -> None:
    assert EMBEDDINGS.is_stream({"input": "x", "stream": True}) is False


def test_embeddings_restore_only_error() -> None:
    body: dict[str, Any] = {"data": [{"embedding": "PERSON_1"}], "error": {"message": "bad <PERSON_1>"}}
    EMBEDDINGS.restore_body(body, restorer())
    assert body == {"data": [{"embedding": "PERSON_1"}], "error": {"message": f"bad {VAULT_NAME}"}}


# The official SDK through the sidecar, against the fake OpenAI provider.

def client(sidecar: RunningSidecar) -> openai.AsyncOpenAI:
    return openai.AsyncOpenAI(base_url=sidecar.base_url, api_key="sk-test-key", max_retries=0)


REDACTED = "I am <PERSON_1>, mail <EMAIL_ADDRESS_1>, phone <PHONE_NUMBER_1>, card <CREDIT_CARD_1>."


async def test_sdk_completion_restored(sidecar: RunningSidecar, fake_upstream: RunningUpstream) -> None:
    reply = await client(sidecar).completions.create(model="gpt-3.5-turbo-instruct", prompt=[PROMPT, f"Hi {NAME}"])
    assert [choice.text for choice in reply.choices] == [f"You said: {PROMPT}", f"You said: Hi {NAME}"]
    assert fake_upstream.fake.requests[-1].json()["prompt"] == [REDACTED, "Hi <PERSON_1>"]
    assert_no_pii([request.body for request in fake_upstream.fake.requests])


async def test_sdk_completion_stream_restored(sidecar: RunningSidecar, fake_upstream: RunningUpstream) -> None:
    stream = await client(sidecar).completions.create(
        model="gpt-3.5-turbo-instruct", prompt=[PROMPT, f"Hi {NAME}"], stream=True,
        stream_options={"include_usage": True})
    texts: dict[int, str] = {}
    async for part in stream:
        for choice in part.choices:
            texts[choice.index] = texts.get(choice.index, "") + choice.text
    assert texts == {0: f"You said: {PROMPT}", 1: f"You said: Hi {NAME}"}
    assert sidecar.audits[-1]["usage"] == {"input_tokens": 10, "output_tokens": 6}
    assert_no_pii([request.body for request in fake_upstream.fake.requests])


async def test_sdk_embeddings_redacted(sidecar: RunningSidecar, fake_upstream: RunningUpstream) -> None:
    reply = await client(sidecar).embeddings.create(model="text-embedding-3-small", input=[PROMPT, f"Hi {NAME}"])
    sent = fake_upstream.fake.requests[-1].json()
    assert sent["input"] == [REDACTED, "Hi <PERSON_1>"]
    expected = struct.unpack("<8f", base64.b64decode(str(embedding(REDACTED, as_base64=True))))
    assert reply.data[0].embedding == pytest.approx(list(expected))
    assert sidecar.audits[-1]["dialect"] == "openai.embeddings"
    assert_no_pii([request.body for request in fake_upstream.fake.requests])


async def test_sdk_embeddings_token_ids_rejected(sidecar: RunningSidecar, fake_upstream: RunningUpstream) -> None:
    with pytest.raises(openai.BadRequestError) as caught:
        await client(sidecar).embeddings.create(model="text-embedding-3-small", input=[[101, 102]])
    assert caught.value.code == "invalid_body"
    assert "token ids" in caught.value.message
    assert fake_upstream.fake.requests == []


def test_completions_stream_error_event() -> None:
    transformer = COMPLETIONS.stream_transformer(restorer())
    [error] = SSEDecoder().feed(sse_bytes([(None, {"error": {"message": "x", "type": "server_error"}})]))
    assert transformer.is_error(error) is True
    [sent] = transformer.error_events("upstream stream failed")
    assert json.loads(sent.data)["error"]["code"] == "upstream_stream_failed"


def test_completions_stream_single_byte_chunks() -> None:
    expected = texts_of(payloads(run_stream(COMPLETIONS, STREAM)))
    assert texts_of(payloads(run_stream(COMPLETIONS, STREAM, list(range(1, len(STREAM)))))) == expected
