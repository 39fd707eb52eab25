"""The Responses, legacy completions and embeddings endpoints of the fake OpenAI provider.

`add_routes` adds them to a `FakeUpstream` application. Like its chat
endpoint, each reply repeats the last user text, so placeholders come back.
A response repeats it in an `output_text` part, or with function tools
offered, in a `function_call` with `{"query": ...}` arguments. A completion
repeats each prompt as `You said: ...`. Streams follow the OpenAI wire format, with text
cut into `FakeUpstream.chunk_size` pieces. Embeddings are 8 numbers derived
from a hash of each input, as floats or, for `encoding_format: base64`, as
little-endian float32 bytes.
"""

from __future__ import annotations

import base64
import hashlib
import json
import struct
import time
from typing import TYPE_CHECKING, Any

from aiohttp import web

from sidecar.testing.fake_upstream import Recorded

if TYPE_CHECKING:
    from sidecar.testing.fake_upstream import FakeUpstream

Item = dict[str, Any]
USAGE = {
    "input_tokens": 20,
    "input_tokens_details": {"cached_tokens": 4},
    "output_tokens": 9,
    "output_tokens_details": {"reasoning_tokens": 0},
    "total_tokens": 29,
}


def add_routes(app: web.Application, fake: FakeUpstream) -> None:
    endpoints = _Endpoints(fake)
    app.router.add_post("/v1/responses", endpoints.responses)
    app.router.add_post("/v1/completions", endpoints.completions)
    app.router.add_post("/v1/embeddings", endpoints.embeddings)


class _Endpoints:
    def __init__(self, fake: FakeUpstream) -> None:
        self.fake = fake

    async def _record(self, request: web.Request) -> dict[str, Any]:
        body = await request.read()
        self.fake.requests.append(
            Recorded(request.method, request.path, dict(request.headers), body)
        )
        document: dict[str, Any] = json.loads(body)
        return document

    def _error(self) -> web.Response | None:
        if self.fake.error_body is None:
            return None
        return web.json_response(self.fake.error_body, status=self.fake.status)

    async def responses(self, request: web.Request) -> web.StreamResponse:
        body = await self._record(request)
        error = self._error()
        if error is not None:
            return error
        output = response_output(body)
        if body.get("stream"):
            events = response_events(body, output, self.fake.chunk_size)
            return await _send_events(request, [(name, payload) for name, payload in events])
        return web.json_response(response_object(body, output, "completed"))

    async def completions(self, request: web.Request) -> web.StreamResponse:
        body = await self._record(request)
        error = self._error()
        if error is not None:
            return error
        texts = [f"You said: {prompt}" for prompt in _prompts(body)]
        if body.get("stream"):
            chunks = completion_chunks(body, texts, self.fake.chunk_size)
            events: list[tuple[str | None, Any]] = [(None, chunk) for chunk in chunks]
            return await _send_events(request, [*events, (None, "[DONE]")])
        return web.json_response(completion(body, texts))

    async def embeddings(self, request: web.Request) -> web.Response:
        body = await self._record(request)
        error = self._error()
        if error is not None:
            return error
        inputs = body["input"] if isinstance(body["input"], list) else [body["input"]]
        as_base64 = body.get("encoding_format") == "base64"
        data = [
            {"object": "embedding", "index": index, "embedding": embedding(text, as_base64)}
            for index, text in enumerate(inputs)
        ]
        tokens = sum(len(text.split()) for text in inputs)
        return web.json_response(
            {
                "object": "list",
                "data": data,
                "model": body.get("model", "text-embedding-fake"),
                "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
            }
        )


async def _send_events(
    request: web.Request, events: list[tuple[str | None, Any]]
) -> web.StreamResponse:
    response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
    await response.prepare(request)
    for name, payload in events:
        data = payload if isinstance(payload, str) else json.dumps(payload)
        head = f"event: {name}\n" if name else ""
        await response.write(f"{head}data: {data}\n\n".encode())
    await response.write_eof()
    return response


def embedding(text: str, as_base64: bool) -> list[float] | str:
    digest = hashlib.sha256(text.encode()).digest()
    values = [byte / 255 for byte in digest[:8]]
    if as_base64:
        return base64.b64encode(struct.pack("<8f", *values)).decode()
    return values


def _prompts(body: dict[str, Any]) -> list[str]:
    prompt = body.get("prompt", "")
    return prompt if isinstance(prompt, list) else [prompt]


def completion(body: dict[str, Any], texts: list[str]) -> dict[str, Any]:
    return {
        "id": "cmpl-fake",
        "object": "text_completion",
        "created": int(time.time()),
        "model": body.get("model", "gpt-3.5-turbo-instruct"),
        "choices": [
            {"text": text, "index": index, "logprobs": None, "finish_reason": "stop"}
            for index, text in enumerate(texts)
        ],
        "usage": {"prompt_tokens": 10, "completion_tokens": 6, "total_tokens": 16},
    }


def completion_chunks(body: dict[str, Any], texts: list[str], size: int) -> list[dict[str, Any]]:
    """Cut completions into `text_completion` chunks; choices take turns piece by piece."""
    base = {
        "id": "cmpl-fake",
        "object": "text_completion",
        "created": int(time.time()),
        "model": body.get("model", "gpt-3.5-turbo-instruct"),
    }

    def chunk(index: int, text: str, finish: str | None = None) -> dict[str, Any]:
        choice = {"text": text, "index": index, "logprobs": None, "finish_reason": finish}
        return {**base, "choices": [choice]}

    chunks = []
    longest = max((len(text) for text in texts), default=0)
    for start in range(0, longest, size):
        for index, text in enumerate(texts):
            if start < len(text):
                chunks.append(chunk(index, text[start : start + size]))
    chunks += [chunk(index, "", "stop") for index in range(len(texts))]
    if (body.get("stream_options") or {}).get("include_usage"):
        usage = {"prompt_tokens": 10, "completion_tokens": 6, "total_tokens": 16}
        chunks.append({**base, "choices": [], "usage": usage})
    return chunks


def last_input_text(body: dict[str, Any]) -> tuple[str, bool]:
    """Return the last text of a Responses request, and whether it is a function call output."""
    value = body.get("input")
    if isinstance(value, str):
        return value, False
    for item in reversed(value or []):
        if item.get("type") == "function_call_output":
            output = item["output"]
            return (output if isinstance(output, str) else output[0]["text"]), True
        if item.get("type", "message") == "message" and item.get("role") == "user":
            content = item["content"]
            if isinstance(content, str):
                return content, False
            texts = [part["text"] for part in content if part["type"] == "input_text"]
            return (texts[-1] if texts else ""), False
    return "", False


def response_output(body: dict[str, Any]) -> list[Item]:
    last, answers_tool = last_input_text(body)
    functions = [tool for tool in body.get("tools") or [] if tool.get("type") == "function"]
    if functions and not answers_tool:
        arguments = json.dumps({"query": last})
        return [
            {
                "id": "fc_fake",
                "type": "function_call",
                "call_id": "call_fake",
                "name": functions[0]["name"],
                "arguments": arguments,
                "status": "completed",
            }
        ]
    part = {"type": "output_text", "text": f"You said: {last}", "annotations": [], "logprobs": []}
    return [
        {
            "id": "msg_fake",
            "type": "message",
            "role": "assistant",
            "status": "completed",
            "content": [part],
        }
    ]


def response_object(body: dict[str, Any], output: list[Item], status: str) -> dict[str, Any]:
    return {
        "id": "resp_fake",
        "object": "response",
        "created_at": 1_700_000_000,
        "status": status,
        "model": body.get("model", "gpt-fake"),
        "instructions": body.get("instructions"),
        "output": output,
        "parallel_tool_calls": True,
        "tool_choice": "auto",
        "tools": body.get("tools") or [],
        "temperature": 1.0,
        "top_p": 1.0,
        "text": {"format": {"type": "text"}},
        "truncation": "disabled",
        "metadata": {},
        "error": None,
        "incomplete_details": None,
        "usage": USAGE if status == "completed" else None,
    }


def response_events(
    body: dict[str, Any], output: list[Item], size: int
) -> list[tuple[str, dict[str, Any]]]:
    """Cut a response into the Responses event stream, numbering `sequence_number` from 0."""
    events: list[tuple[str, dict[str, Any]]] = []

    def emit(kind: str, **fields: Any) -> None:
        events.append((kind, {"type": kind, "sequence_number": len(events), **fields}))

    emit("response.created", response=response_object(body, [], "in_progress"))
    emit("response.in_progress", response=response_object(body, [], "in_progress"))
    for index, item in enumerate(output):
        _item_events(emit, index, item, size)
    emit("response.completed", response=response_object(body, output, "completed"))
    return events


def _item_events(emit: Any, index: int, item: Item, size: int) -> None:
    if item["type"] == "function_call":
        emit(
            "response.output_item.added",
            output_index=index,
            item={**item, "arguments": "", "status": "in_progress"},
        )
        arguments = item["arguments"]
        for start in range(0, len(arguments), size):
            emit(
                "response.function_call_arguments.delta",
                output_index=index,
                item_id=item["id"],
                delta=arguments[start : start + size],
            )
        emit(
            "response.function_call_arguments.done",
            output_index=index,
            item_id=item["id"],
            name=item["name"],
            arguments=arguments,
        )
        emit("response.output_item.done", output_index=index, item=item)
        return
    part = item["content"][0]
    emit(
        "response.output_item.added",
        output_index=index,
        item={**item, "content": [], "status": "in_progress"},
    )
    emit(
        "response.content_part.added",
        output_index=index,
        content_index=0,
        item_id=item["id"],
        part={**part, "text": ""},
    )
    text = part["text"]
    for start in range(0, len(text), size):
        emit(
            "response.output_text.delta",
            output_index=index,
            content_index=0,
            item_id=item["id"],
            delta=text[start : start + size],
            logprobs=[],
        )
    emit(
        "response.output_text.done",
        output_index=index,
        content_index=0,
        item_id=item["id"],
        text=text,
        logprobs=[],
    )
    emit(
        "response.content_part.done",
        output_index=index,
        content_index=0,
        item_id=item["id"],
        part=part,
    )
    emit("response.output_item.done", output_index=index, item=item)
