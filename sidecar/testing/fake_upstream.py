"""A fake OpenAI-compatible provider on aiohttp that records requests and echoes text back.

It answers `POST /v1/chat/completions` the way OpenAI does, as one JSON body or
as `chat.completion.chunk` server-sent events, and `GET /v1/models`. The reply
repeats the texts of the request, so placeholders come back in the response
and a test can check they are restored. Streamed text is cut into small
pieces so placeholders arrive split across events.
`sidecar.testing.fake_openai_endpoints` adds `/v1/responses`,
`/v1/completions` and `/v1/embeddings`.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

Reply = Callable[[dict[str, Any]], dict[str, Any]]


@dataclass
class Recorded:
    """One request the fake received."""

    method: str
    path: str
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


@dataclass
class FakeUpstream:
    """State of the fake provider; tests inspect `requests` and may set `reply`."""

    requests: list[Recorded] = field(default_factory=list)
    reply: Reply | None = None
    chunk_size: int = 3
    chunk_delay: float = 0.0
    status: int = 200
    error_body: dict[str, Any] | None = None

    def app(self) -> web.Application:
        app = web.Application(client_max_size=256 * 1024 * 1024)
        app.router.add_post("/v1/chat/completions", self._chat)
        app.router.add_get("/v1/models", self._models)
        # Imported here because that module imports `Recorded` from this one.
        from sidecar.testing.fake_openai_endpoints import add_routes

        add_routes(app, self)
        return app

    async def _record(self, request: web.Request) -> bytes:
        body = await request.read()
        self.requests.append(Recorded(request.method, request.path, dict(request.headers), body))
        return body

    async def _models(self, request: web.Request) -> web.Response:
        await self._record(request)
        return web.json_response(
            {"object": "list", "data": [{"id": "gpt-fake", "object": "model"}]}
        )

    async def _chat(self, request: web.Request) -> web.StreamResponse:
        body = json.loads(await self._record(request))
        if self.error_body is not None:
            return web.json_response(self.error_body, status=self.status)
        message = self.reply(body) if self.reply else echo_message(body)
        if body.get("stream"):
            return await self._stream(request, body, message)
        return web.json_response(completion(body, message))

    async def _stream(
        self, request: web.Request, body: dict[str, Any], message: dict[str, Any]
    ) -> web.StreamResponse:
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await response.prepare(request)
        for chunk in stream_chunks(body, message, self.chunk_size):
            await response.write(f"data: {json.dumps(chunk)}\n\n".encode())
            if self.chunk_delay:
                await asyncio.sleep(self.chunk_delay)
        await response.write(b"data: [DONE]\n\n")
        return response


def request_texts(body: dict[str, Any]) -> list[str]:
    """Return every text of a chat request, in order."""
    texts = []
    for message in body.get("messages", []):
        content = message.get("content")
        if isinstance(content, str):
            texts.append(content)
        elif isinstance(content, list):
            texts.extend(part["text"] for part in content if part.get("type") == "text")
    return texts


def echo_message(body: dict[str, Any]) -> dict[str, Any]:
    """Reply with the last user text; call the first tool with it when tools are offered."""
    texts = request_texts(body)
    last = texts[-1] if texts else ""
    tools = body.get("tools") or []
    if tools and body.get("messages", [{}])[-1].get("role") == "user":
        name = tools[0]["function"]["name"]
        arguments = json.dumps({"query": last})
        return {
            "role": "assistant",
            "content": None,
            "tool_calls": [
                {
                    "id": "call_1",
                    "type": "function",
                    "function": {"name": name, "arguments": arguments},
                }
            ],
        }
    return {"role": "assistant", "content": f"You said: {last}"}


def completion(body: dict[str, Any], message: dict[str, Any]) -> dict[str, Any]:
    finish = "tool_calls" if message.get("tool_calls") else "stop"
    return {
        "id": "chatcmpl-fake",
        "object": "chat.completion",
        "created": int(time.time()),
        "model": body.get("model", "gpt-fake"),
        "choices": [
            {
                "index": 0,
                "message": {**message, "refusal": None},
                "logprobs": None,
                "finish_reason": finish,
            }
        ],
        "usage": {"prompt_tokens": 11, "completion_tokens": 7, "total_tokens": 18},
    }


def stream_chunks(body: dict[str, Any], message: dict[str, Any], size: int) -> list[dict[str, Any]]:
    """Cut a reply into `chat.completion.chunk` objects of `size` characters."""
    base = {
        "id": "chatcmpl-fake",
        "object": "chat.completion.chunk",
        "created": int(time.time()),
        "model": body.get("model", "gpt-fake"),
    }

    def chunk(delta: dict[str, Any], finish: str | None = None) -> dict[str, Any]:
        return {
            **base,
            "choices": [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}],
        }

    chunks = [chunk({"role": "assistant", "content": ""})]
    content = message.get("content") or ""
    chunks += [chunk({"content": content[i : i + size]}) for i in range(0, len(content), size)]
    for index, call in enumerate(message.get("tool_calls") or []):
        function = call["function"]
        head = {
            "index": index,
            "id": call["id"],
            "type": "function",
            "function": {"name": function["name"], "arguments": ""},
        }
        chunks.append(chunk({"tool_calls": [head]}))
        arguments = function["arguments"]
        for i in range(0, len(arguments), size):
            piece = {"index": index, "function": {"arguments": arguments[i : i + size]}}
            chunks.append(chunk({"tool_calls": [piece]}))
    chunks.append(chunk({}, "tool_calls" if message.get("tool_calls") else "stop"))
    if (body.get("stream_options") or {}).get("include_usage"):
        chunks.append(
            {
                **base,
                "choices": [],
                "usage": {"prompt_tokens": 11, "completion_tokens": 7, "total_tokens": 18},
            }
        )
    return chunks
