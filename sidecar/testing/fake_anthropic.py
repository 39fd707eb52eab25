"""A fake Anthropic Messages provider on aiohttp that records requests and echoes text back.

It serves `POST /v1/messages` as one `message` JSON body or as the event
stream the Anthropic API sends (`message_start`, `content_block_start`,
`content_block_delta`, `content_block_stop`, `message_delta`,
`message_stop`, with a `ping`), and `POST /v1/messages/count_tokens`. The
reply repeats the last user text, so placeholders come back in the response.
With `tools` in the request the reply calls the first tool with that text as
`{"query": ...}`; with `thinking` enabled it starts with a thinking block.

Thinking blocks are signed with a hash of their text, and a request whose
thinking block does not match its signature is rejected with a 400, as the
real API rejects a modified thinking block.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import zlib
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import brotli
from aiohttp import web

from sidecar.server.bodies import decode_content
from sidecar.testing.fake_upstream import Recorded

Block = dict[str, Any]


@dataclass
class FakeAnthropic:
    """State of the fake provider; tests inspect `requests` and may change the other fields.

    `query_strings` has the query string of each recorded POST request.

    `content_encoding` compresses JSON replies with gzip, deflate or br, and
    streams with gzip or deflate. `stream_error` is sent as an `error` event
    in place of the first `content_block_stop` and the rest of the stream.
    """

    requests: list[Recorded] = field(default_factory=list)
    chunk_size: int = 3
    status: int = 200
    error_body: dict[str, Any] | None = None
    content_encoding: str | None = None
    stream_error: dict[str, Any] | None = None
    reply: Callable[[dict[str, Any]], list[Block]] | None = None
    query_strings: list[str] = field(default_factory=list)

    def app(self) -> web.Application:
        app = web.Application(client_max_size=256 * 1024 * 1024)
        app.router.add_post("/v1/messages", self._messages)
        app.router.add_post("/v1/messages/count_tokens", self._count_tokens)
        app.router.add_get("/v1/models", self._models)
        return app

    async def _record(self, request: web.Request) -> dict[str, Any]:
        body = await request.read()
        self.requests.append(Recorded(request.method, request.path, dict(request.headers), body))
        self.query_strings.append(request.query_string)
        # With aiohttp's auto_decompress off, `requests` keeps the bytes as sent.
        decoded = decode_content(body, request.headers.get("Content-Encoding"))
        document: dict[str, Any] = json.loads(decoded)
        return document

    async def _models(self, request: web.Request) -> web.Response:
        self.requests.append(Recorded(request.method, request.path, dict(request.headers), b""))
        model = {
            "type": "model",
            "id": "claude-fake",
            "display_name": "Claude Fake",
            "created_at": "2025-01-01T00:00:00Z",
        }
        return web.json_response(
            {
                "data": [model],
                "has_more": False,
                "first_id": "claude-fake",
                "last_id": "claude-fake",
            }
        )

    async def _count_tokens(self, request: web.Request) -> web.Response:
        body = await self._record(request)
        return web.json_response({"input_tokens": sum(len(t.split()) for t in request_texts(body))})

    async def _messages(self, request: web.Request) -> web.StreamResponse:
        body = await self._record(request)
        if self.error_body is not None:
            return web.json_response(self.error_body, status=self.status)
        bad_signature = find_bad_signature(body)
        if bad_signature is not None:
            return web.json_response(error_body("invalid_request_error", bad_signature), status=400)
        blocks = self.reply(body) if self.reply else echo_blocks(body)
        if body.get("stream"):
            return await self._stream(request, body, blocks)
        return self._json(message(body, blocks))

    def _json(self, document: dict[str, Any]) -> web.Response:
        data = json.dumps(document).encode()
        headers = {"Content-Type": "application/json"}
        if self.content_encoding:
            data = compress(data, self.content_encoding)
            headers["Content-Encoding"] = self.content_encoding
        return web.Response(body=data, headers=headers)

    async def _stream(
        self, request: web.Request, body: dict[str, Any], blocks: list[Block]
    ) -> web.StreamResponse:
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        if self.content_encoding:
            response.enable_compression(web.ContentCoding(self.content_encoding))
        await response.prepare(request)
        for name, payload in stream_events(body, blocks, self.chunk_size):
            if self.stream_error is not None and name == "content_block_stop":
                await response.write(sse("error", self.stream_error))
                break
            await response.write(sse(name, payload))
        await response.write_eof()
        return response


def sse(name: str, payload: dict[str, Any]) -> bytes:
    return f"event: {name}\ndata: {json.dumps(payload)}\n\n".encode()


def compress(data: bytes, coding: str) -> bytes:
    if coding == "gzip":
        return gzip.compress(data)
    if coding == "deflate":
        return zlib.compress(data)
    if coding == "br":
        return bytes(brotli.compress(data))
    raise ValueError(f"unknown content coding {coding!r}")


def error_body(error_type: str, message: str) -> dict[str, Any]:
    return {"type": "error", "error": {"type": error_type, "message": message}}


def sign(thinking: str) -> str:
    return "sig-" + hashlib.sha256(thinking.encode()).hexdigest()


def find_bad_signature(body: dict[str, Any]) -> str | None:
    """Return an error message if a thinking block's signature does not match its text."""
    for index, message_param in enumerate(body.get("messages", [])):
        content = message_param.get("content")
        for block in content if isinstance(content, list) else []:
            if block.get("type") == "thinking" and block.get("signature") != sign(
                block.get("thinking", "")
            ):
                return f"messages.{index}.content: Invalid `signature` in `thinking` block"
    return None


def request_texts(body: dict[str, Any]) -> list[str]:
    """Return the user-visible texts of a request: system, text blocks and tool results."""
    texts = []
    system = body.get("system")
    if isinstance(system, str):
        texts.append(system)
    elif isinstance(system, list):
        texts.extend(block["text"] for block in system)
    for message_param in body.get("messages", []):
        content = message_param["content"]
        if isinstance(content, str):
            texts.append(content)
            continue
        for block in content:
            if block["type"] == "text":
                texts.append(block["text"])
            elif block["type"] == "tool_result" and isinstance(block.get("content"), str):
                texts.append(block["content"])
            elif block["type"] == "tool_result":
                texts.extend(b["text"] for b in block.get("content", []) if b["type"] == "text")
    return texts


def echo_blocks(body: dict[str, Any]) -> list[Block]:
    """Reply with the last text, or call the first tool with it unless tool results came last."""
    texts = request_texts(body)
    last = texts[-1] if texts else ""
    blocks: list[Block] = []
    thinking = body.get("thinking") or {}
    if thinking.get("type") == "enabled":
        thought = f"The user wrote: {last}"
        blocks.append({"type": "thinking", "thinking": thought, "signature": sign(thought)})
    tools = body.get("tools") or []
    last_content = body["messages"][-1]["content"]
    answers_tool = isinstance(last_content, list) and any(
        b["type"] == "tool_result" for b in last_content
    )
    if tools and not answers_tool:
        blocks.append({"type": "text", "text": "Let me look that up."})
        blocks.append(
            {
                "type": "tool_use",
                "id": "toolu_fake1",
                "name": tools[0]["name"],
                "input": {"query": last},
            }
        )
    else:
        blocks.append({"type": "text", "text": f"You said: {last}", "citations": None})
    return blocks


def message(body: dict[str, Any], blocks: list[Block]) -> dict[str, Any]:
    stop = "tool_use" if any(block["type"] == "tool_use" for block in blocks) else "end_turn"
    return {
        "id": "msg_fake",
        "type": "message",
        "role": "assistant",
        "model": body.get("model", "claude-fake"),
        "content": blocks,
        "stop_reason": stop,
        "stop_sequence": None,
        "usage": {
            "input_tokens": 25,
            "output_tokens": 12,
            "cache_read_input_tokens": 5,
            "cache_creation_input_tokens": 0,
        },
    }


def stream_events(
    body: dict[str, Any], blocks: list[Block], size: int
) -> list[tuple[str, dict[str, Any]]]:
    """Cut a reply into the Anthropic event stream, with deltas of `size` characters."""
    start = message(body, [])
    start.update(
        stop_reason=None,
        usage={
            "input_tokens": 25,
            "output_tokens": 1,
            "cache_read_input_tokens": 5,
            "cache_creation_input_tokens": 0,
        },
    )
    events: list[tuple[str, dict[str, Any]]] = [
        ("message_start", {"type": "message_start", "message": start}),
        ("ping", {"type": "ping"}),
    ]
    for index, block in enumerate(blocks):
        events += _block_events(index, block, size)
    final = message(body, blocks)
    events.append(
        (
            "message_delta",
            {
                "type": "message_delta",
                "delta": {"stop_reason": final["stop_reason"], "stop_sequence": None},
                "usage": {"output_tokens": 12},
            },
        )
    )
    events.append(("message_stop", {"type": "message_stop"}))
    return events


def _block_events(index: int, block: Block, size: int) -> list[tuple[str, dict[str, Any]]]:
    def delta(payload: dict[str, Any]) -> tuple[str, dict[str, Any]]:
        return "content_block_delta", {
            "type": "content_block_delta",
            "index": index,
            "delta": payload,
        }

    if block["type"] == "text":
        empty: Block = {"type": "text", "text": ""}
        pieces = [
            delta({"type": "text_delta", "text": piece}) for piece in _cut(block["text"], size)
        ]
    elif block["type"] == "thinking":
        empty = {"type": "thinking", "thinking": "", "signature": ""}
        pieces = [
            delta({"type": "thinking_delta", "thinking": p}) for p in _cut(block["thinking"], size)
        ]
        pieces.append(delta({"type": "signature_delta", "signature": block["signature"]}))
    else:
        empty = {**block, "input": {}}
        arguments = json.dumps(block["input"])
        pieces = [
            delta({"type": "input_json_delta", "partial_json": p}) for p in _cut(arguments, size)
        ]
    start = (
        "content_block_start",
        {"type": "content_block_start", "index": index, "content_block": empty},
    )
    stop = ("content_block_stop", {"type": "content_block_stop", "index": index})
    return [start, *pieces, stop]


def _cut(text: str, size: int) -> list[str]:
    return [text[i : i + size] for i in range(0, len(text), size)]
