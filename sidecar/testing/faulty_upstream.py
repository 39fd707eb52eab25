"""A fake OpenAI chat provider that injects faults, for tests of retries, failover and timeouts.

Each `POST /v1/chat/completions` takes the next `Fault` from `faults`, and the
fake replies as `FakeUpstream` does once the list is empty. A fault that stalls
waits until the sidecar drops the connection, which cancels the handler when
the server runs with `handler_cancellation=True`. So a test needs no sleep of
its own: the sidecar's configured timeouts end the wait. `dropped` counts the
requests whose connection the sidecar dropped, and `drop_seen` is set at each.
"""

from __future__ import annotations

import asyncio
import json
import socket
import struct
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from aiohttp import web

from sidecar.testing.fake_upstream import FakeUpstream, echo_message, stream_chunks

FLOOD_EVENT_BYTES = 16 * 1024
"""Size of the content of each event that a `FLOOD` fault sends."""


class FaultKind(StrEnum):
    STATUS = "status"
    """Respond with `status` and an OpenAI error body, with `Retry-After` when it is set."""

    RESET = "reset"
    """Reset the connection (TCP RST) before any response byte."""

    STALL = "stall"
    """Send no response byte until the connection is dropped."""

    STALL_STREAM = "stall_stream"
    """Stream `after_chunks` chunks, then send nothing until the connection is dropped."""

    RESET_STREAM = "reset_stream"
    """Stream `after_chunks` chunks, then reset the connection."""

    ERROR_EVENT = "error_event"
    """Stream `after_chunks` chunks, then an OpenAI error event, then end the stream."""

    FLOOD = "flood"
    """Stream content events until the connection is dropped, counting bytes in `written`."""


@dataclass(frozen=True)
class Fault:
    """One injected fault; `after_chunks` counts `chat.completion.chunk` events sent before it."""

    kind: FaultKind
    status: int = 503
    retry_after: str | None = None
    after_chunks: int = 0


@dataclass
class FaultyUpstream(FakeUpstream):
    """A `FakeUpstream` whose chat requests consume `faults`, one fault per request."""

    faults: list[Fault] = field(default_factory=list)
    dropped: int = 0
    drop_seen: asyncio.Event = field(default_factory=asyncio.Event)
    written: int = 0
    """Bytes of events written by `FLOOD` faults."""

    client_ports: list[int] = field(default_factory=list)
    """The client's port of each request, the same for requests on one kept-alive connection."""

    async def _record(self, request: web.Request) -> bytes:
        peer = request.transport.get_extra_info("peername") if request.transport else None
        self.client_ports.append(peer[1] if peer else 0)
        return await super()._record(request)

    async def _chat(self, request: web.Request) -> web.StreamResponse:
        if not self.faults:
            return await super()._chat(request)
        fault = self.faults.pop(0)
        body = json.loads(await self._record(request))
        try:
            return await self._inject(request, body, fault)
        except (asyncio.CancelledError, ConnectionError):
            self.dropped += 1
            self.drop_seen.set()
            raise

    async def _inject(
        self, request: web.Request, body: dict[str, Any], fault: Fault
    ) -> web.StreamResponse:
        match fault.kind:
            case FaultKind.STATUS:
                return _error_response(fault)
            case FaultKind.RESET:
                _reset(request)
                return web.Response()
            case FaultKind.STALL:
                await _wait_forever()
            case FaultKind.FLOOD:
                response = await _event_stream(request)
                await self._flood(response)
            case _:
                return await self._broken_stream(request, body, fault)
        raise AssertionError("unreachable: the waits above end only by cancellation")

    async def _broken_stream(
        self, request: web.Request, body: dict[str, Any], fault: Fault
    ) -> web.StreamResponse:
        response = await _event_stream(request)
        chunks = stream_chunks(body, echo_message(body), self.chunk_size)
        for chunk in chunks[: fault.after_chunks]:
            await response.write(f"data: {json.dumps(chunk)}\n\n".encode())
        if fault.kind is FaultKind.ERROR_EVENT:
            error = {"error": {"message": "overloaded", "type": "server_error", "code": None}}
            await response.write(f"data: {json.dumps(error)}\n\n".encode())
            return response
        if fault.kind is FaultKind.RESET_STREAM:
            _reset(request)
            return response
        await _wait_forever()
        return response

    async def _flood(self, response: web.StreamResponse) -> None:
        delta = {"content": "x" * FLOOD_EVENT_BYTES}
        event = f"data: {json.dumps({'choices': [{'index': 0, 'delta': delta}]})}\n\n".encode()
        while True:
            await response.write(event)
            self.written += len(event)


def _error_response(fault: Fault) -> web.Response:
    headers = {"Retry-After": fault.retry_after} if fault.retry_after is not None else {}
    error = {"message": f"injected status {fault.status}", "type": "server_error", "code": None}
    return web.json_response({"error": error}, status=fault.status, headers=headers)


async def _event_stream(request: web.Request) -> web.StreamResponse:
    response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
    await response.prepare(request)
    return response


def _reset(request: web.Request) -> None:
    """Close the connection with a TCP RST, which a zero SO_LINGER timeout makes the kernel send."""
    transport = request.transport
    assert transport is not None, "the connection is already closed"
    sock = transport.get_extra_info("socket")
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    transport.abort()


async def _wait_forever() -> None:
    await asyncio.Event().wait()
