"""The upstream path under faults: retries, failover, timeouts, breakers, keys and cancellation.

Each test starts a sidecar with a `--config` file whose route forwards to one
or two `FaultyUpstream` fakes on 127.0.0.1. Timeouts, backoff delays and the
breaker cool-down are configured in tens of milliseconds, so a test waits
only for the delays it exercises.
"""

from __future__ import annotations

import asyncio
import datetime
import json
import socket
import ssl
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from email.utils import formatdate
from pathlib import Path
from typing import Any

import aiohttp
import openai
import pytest
import yaml
from structlog.testing import capture_logs

from sidecar.config import Settings
from sidecar.errors import ConfigError
from sidecar.protocols.openai_chat import ChatStreamTransformer
from sidecar.server.app import STATE, create_app
from sidecar.sse import Event
from sidecar.testing.faulty_upstream import Fault, FaultKind, FaultyUpstream
from sidecar.upstream.forward import ModelRewriter, OutgoingRequest
from sidecar.upstream.retry import ErrorKind
from sidecar.upstream.settings import TimeoutSettings, UpstreamTarget
from sidecar.upstream.timeouts import AttemptTimer
from tests.conftest import DEFAULT_POLICY, RunningSidecar, SidecarFactory, start_site

NAME = "Zebulon Quartermaine"
EMAIL = "zebulon.q@example.com"
MESSAGES = [{"role": "user", "content": f"I am {NAME}, mail {EMAIL}."}]
REPLY = f"You said: I am {NAME}, mail {EMAIL}."
# The fake echoes "You said: I am <PERSON_1>, mail <EMAIL_ADDRESS_1>." in chunks of 3
# characters after one role chunk, so this many chunks carry the whole reply.
WHOLE_REPLY_CHUNKS = 1 + -(-len("You said: I am <PERSON_1>, mail <EMAIL_ADDRESS_1>.") // 3)

RETRY = {"max_attempts": 3, "base_delay": 0.01, "max_delay": 0.02, "max_retry_after": 1.0}
TIMEOUTS = {"connect": 2.0, "first_byte": 0.3, "idle": 0.3, "total": 10.0}
BREAKER = {"failure_threshold": 10, "cool_down": 30.0}
WAIT = 5.0
"""Upper bound for waits on events that the sidecar causes; a test that passes never reaches it."""


@dataclass
class Fake:
    upstream: FaultyUpstream
    url: str


@pytest.fixture
async def primary() -> AsyncIterator[Fake]:
    fake = FaultyUpstream()
    runner, url = await start_site(fake.app())
    yield Fake(fake, url)
    await runner.cleanup()


@pytest.fixture
async def fallback() -> AsyncIterator[Fake]:
    fake = FaultyUpstream()
    runner, url = await start_site(fake.app())
    yield Fake(fake, url)
    await runner.cleanup()


@pytest.fixture
def refused_url() -> Any:
    """A URL of 127.0.0.1 whose port is bound but not listening, so connecting is refused."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    yield f"http://127.0.0.1:{sock.getsockname()[1]}"
    sock.close()


async def start_with_upstreams(
    start_sidecar: SidecarFactory,
    tmp_path: Path,
    upstreams: list[dict[str, Any]],
    **group: dict[str, Any],
) -> RunningSidecar:
    """Start a sidecar whose only route forwards to `upstreams`, with fast test settings."""
    route = {
        "prefix": "/",
        "upstreams": upstreams,
        "retry": {**RETRY, **group.get("retry", {})},
        "timeouts": {**TIMEOUTS, **group.get("timeouts", {})},
        "breaker": {**BREAKER, **group.get("breaker", {})},
    }
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump({"version": 1, "routes": [route]}))
    return await start_sidecar(config=str(path))


def client(sidecar: RunningSidecar, key: str = "sk-client-key") -> openai.AsyncOpenAI:
    return openai.AsyncOpenAI(base_url=sidecar.base_url, api_key=key, max_retries=0)


async def complete(sidecar: RunningSidecar) -> str:
    reply = await client(sidecar).chat.completions.create(model="gpt-4o", messages=MESSAGES)
    return reply.choices[0].message.content or ""


async def stream_until_error(sidecar: RunningSidecar) -> tuple[str, openai.APIError | None]:
    """Stream a completion; return the text received and the error that ended the stream."""
    stream = await client(sidecar).chat.completions.create(
        model="gpt-4o", messages=MESSAGES, stream=True
    )
    text = ""
    try:
        async for chunk in stream:
            if chunk.choices and chunk.choices[0].delta.content:
                text += chunk.choices[0].delta.content
    except openai.APIError as exc:
        return text, exc
    return text, None


def results(audit: dict[str, Any]) -> list[tuple[str, str]]:
    return [(attempt["upstream"], attempt["result"]) for attempt in audit["attempts"]]


async def wait_for_audits(sidecar: RunningSidecar, count: int) -> None:
    """Wait until the sidecar wrote `count` audit records; a cancelled handler writes late."""
    async with asyncio.timeout(WAIT):
        while len(sidecar.audits) < count:
            await asyncio.sleep(0.01)


# Retries and Retry-After


def retry_after_date() -> str:
    """An HTTP date one minute in the past, which means "retry now"."""
    return formatdate(time.time() - 60, usegmt=True)


@pytest.mark.parametrize(
    "retry_after",
    [pytest.param("0.05", id="seconds"), pytest.param(retry_after_date(), id="http-date")],
)
async def test_429_retry_after_then_success(
    start_sidecar: SidecarFactory, tmp_path: Path, primary: Fake, retry_after: str
) -> None:
    # A backoff of up to 30 s would hang the test, so a quick pass shows Retry-After was used.
    slow_backoff = {"base_delay": 30.0, "max_delay": 30.0, "deadline": 60.0}
    sidecar = await start_with_upstreams(
        start_sidecar, tmp_path, [{"name": "primary", "url": primary.url}], retry=slow_backoff
    )
    primary.upstream.faults = [Fault(FaultKind.STATUS, status=429, retry_after=retry_after)]

    with capture_logs() as logs:
        assert await complete(sidecar) == REPLY

    retries = [entry for entry in logs if entry["event"] == "retrying upstream"]
    assert len(primary.upstream.requests) == 2
    assert len(retries) == 1
    assert retries[0]["from_retry_after"] is True
    assert retries[0]["delay"] <= 0.05
    assert results(sidecar.audits[-1]) == [("primary", "status_429"), ("primary", "status_200")]
    assert sidecar.audits[-1]["retries"] == 1


async def test_retry_after_above_maximum_fails_over(
    start_sidecar: SidecarFactory, tmp_path: Path, primary: Fake, fallback: Fake
) -> None:
    targets = [{"name": "primary", "url": primary.url}, {"name": "fallback", "url": fallback.url}]
    sidecar = await start_with_upstreams(start_sidecar, tmp_path, targets)
    primary.upstream.faults = [Fault(FaultKind.STATUS, status=429, retry_after="120")]

    assert await complete(sidecar) == REPLY

    audit = sidecar.audits[-1]
    assert results(audit) == [("primary", "status_429"), ("fallback", "status_200")]
    assert audit["retries"] == 0
    assert audit["failovers"] == 1
    assert audit["upstream_name"] == "fallback"


async def test_last_error_response_reaches_client(
    start_sidecar: SidecarFactory, tmp_path: Path, primary: Fake
) -> None:
    sidecar = await start_with_upstreams(
        start_sidecar, tmp_path, [{"name": "primary", "url": primary.url}]
    )
    primary.upstream.faults = [Fault(FaultKind.STATUS, status=503)] * 3

    with pytest.raises(openai.InternalServerError) as caught:
        await complete(sidecar)

    assert caught.value.status_code == 503
    assert len(primary.upstream.requests) == 3
    assert sidecar.audits[-1]["retries"] == 2


async def test_non_retryable_status_is_not_retried(
    start_sidecar: SidecarFactory, tmp_path: Path, primary: Fake, fallback: Fake
) -> None:
    targets = [{"name": "primary", "url": primary.url}, {"name": "fallback", "url": fallback.url}]
    sidecar = await start_with_upstreams(start_sidecar, tmp_path, targets)
    primary.upstream.faults = [Fault(FaultKind.STATUS, status=401)]

    with pytest.raises(openai.AuthenticationError):
        await complete(sidecar)

    assert len(primary.upstream.requests) == 1
    assert fallback.upstream.requests == []


# Failover


async def test_repeated_503_fails_over_with_model_rewrite(
    start_sidecar: SidecarFactory, tmp_path: Path, primary: Fake, fallback: Fake
) -> None:
    targets = [
        {"name": "primary", "url": primary.url},
        {"name": "fallback", "url": fallback.url, "model_rewrite": {"gpt-4o": "small-model"}},
    ]
    sidecar = await start_with_upstreams(start_sidecar, tmp_path, targets)
    primary.upstream.faults = [Fault(FaultKind.STATUS, status=503)] * 3

    assert await complete(sidecar) == REPLY

    sent_to_primary = primary.upstream.requests[-1].json()
    sent_to_fallback = fallback.upstream.requests[-1].json()
    assert len(primary.upstream.requests) == 3
    assert sent_to_primary["model"] == "gpt-4o"
    assert sent_to_fallback["model"] == "small-model"
    assert sent_to_fallback["messages"] == sent_to_primary["messages"]
    assert NAME not in json.dumps(sent_to_fallback)
    audit = sidecar.audits[-1]
    assert audit["retries"] == 2
    assert audit["failovers"] == 1
    assert audit["upstream_name"] == "fallback"
    assert audit["upstream"] == fallback.url


async def test_connect_refused_fails_over(
    start_sidecar: SidecarFactory, tmp_path: Path, refused_url: str, fallback: Fake
) -> None:
    targets = [{"name": "primary", "url": refused_url}, {"name": "fallback", "url": fallback.url}]
    sidecar = await start_with_upstreams(start_sidecar, tmp_path, targets)

    assert await complete(sidecar) == REPLY

    assert results(sidecar.audits[-1]) == [
        ("primary", "connection_error"),
        ("primary", "connection_error"),
        ("primary", "connection_error"),
        ("fallback", "status_200"),
    ]


async def test_every_upstream_refused_is_502(
    start_sidecar: SidecarFactory, tmp_path: Path, refused_url: str
) -> None:
    sidecar = await start_with_upstreams(
        start_sidecar, tmp_path, [{"name": "primary", "url": refused_url}]
    )

    with pytest.raises(openai.APIStatusError) as caught:
        await complete(sidecar)

    assert caught.value.status_code == 502
    assert "last failure: connection_error" in caught.value.message
    assert sidecar.audits[-1]["error"] == "upstream_unavailable"


# Timeouts


async def test_slow_first_byte_is_retried(
    start_sidecar: SidecarFactory, tmp_path: Path, primary: Fake
) -> None:
    sidecar = await start_with_upstreams(
        start_sidecar, tmp_path, [{"name": "primary", "url": primary.url}]
    )
    primary.upstream.faults = [Fault(FaultKind.STALL)]

    assert await complete(sidecar) == REPLY

    assert primary.upstream.dropped == 1
    assert results(sidecar.audits[-1]) == [
        ("primary", "first_byte_timeout"),
        ("primary", "status_200"),
    ]


async def test_stall_mid_stream_ends_with_error_event(
    start_sidecar: SidecarFactory, tmp_path: Path, primary: Fake
) -> None:
    sidecar = await start_with_upstreams(
        start_sidecar, tmp_path, [{"name": "primary", "url": primary.url}]
    )
    primary.upstream.faults = [Fault(FaultKind.STALL_STREAM, after_chunks=WHOLE_REPLY_CHUNKS)]

    text, error = await stream_until_error(sidecar)

    assert text == REPLY
    assert error is not None
    assert "idle_timeout" in error.message
    assert len(primary.upstream.requests) == 1
    await asyncio.wait_for(primary.upstream.drop_seen.wait(), WAIT)
    audit = sidecar.audits[-1]
    assert audit["error"] == "upstream_stream_failed"
    assert audit["stream_error"] == "idle_timeout"


async def test_stall_mid_placeholder_sends_held_text(
    start_sidecar: SidecarFactory, tmp_path: Path, primary: Fake
) -> None:
    sidecar = await start_with_upstreams(
        start_sidecar, tmp_path, [{"name": "primary", "url": primary.url}]
    )
    # Role chunk, then "You", " sa", "id:", " I ", "am ", "<PE": the stream stops inside a placeholder.
    primary.upstream.faults = [Fault(FaultKind.STALL_STREAM, after_chunks=7)]

    text, error = await stream_until_error(sidecar)

    assert text == "You said: I am <PE"
    assert error is not None


async def test_total_timeout_ends_stream(
    start_sidecar: SidecarFactory, tmp_path: Path, primary: Fake
) -> None:
    timeouts = {"connect": 0.2, "first_byte": 0.2, "idle": 0.3, "total": 0.3}
    sidecar = await start_with_upstreams(
        start_sidecar, tmp_path, [{"name": "primary", "url": primary.url}], timeouts=timeouts
    )
    primary.upstream.faults = [Fault(FaultKind.STALL_STREAM, after_chunks=2)]

    _, error = await stream_until_error(sidecar)

    assert error is not None
    assert sidecar.audits[-1]["stream_error"] == "total_timeout"


# Broken streams


async def test_reset_mid_stream_ends_with_error_event(
    start_sidecar: SidecarFactory, tmp_path: Path, primary: Fake
) -> None:
    sidecar = await start_with_upstreams(
        start_sidecar, tmp_path, [{"name": "primary", "url": primary.url}]
    )
    primary.upstream.faults = [Fault(FaultKind.RESET_STREAM, after_chunks=WHOLE_REPLY_CHUNKS)]

    text, error = await stream_until_error(sidecar)

    assert text == REPLY
    assert error is not None
    assert "connection_error" in error.message
    assert len(primary.upstream.requests) == 1
    assert sidecar.audits[-1]["stream_error"] == "connection_error"


async def test_reset_before_response_is_retried(
    start_sidecar: SidecarFactory, tmp_path: Path, primary: Fake
) -> None:
    sidecar = await start_with_upstreams(
        start_sidecar, tmp_path, [{"name": "primary", "url": primary.url}]
    )
    primary.upstream.faults = [Fault(FaultKind.RESET)]

    assert await complete(sidecar) == REPLY

    assert results(sidecar.audits[-1]) == [
        ("primary", "connection_error"),
        ("primary", "status_200"),
    ]


async def test_upstream_error_event_reaches_client(
    start_sidecar: SidecarFactory, tmp_path: Path, primary: Fake
) -> None:
    sidecar = await start_with_upstreams(
        start_sidecar, tmp_path, [{"name": "primary", "url": primary.url}]
    )
    primary.upstream.faults = [Fault(FaultKind.ERROR_EVENT, after_chunks=WHOLE_REPLY_CHUNKS)]

    text, error = await stream_until_error(sidecar)

    assert text == REPLY
    assert error is not None
    assert error.message == "overloaded"
    assert sidecar.audits[-1]["stream_error"] == "error_event"


async def read_raw_stream(sidecar: RunningSidecar) -> tuple[bytes, BaseException | None]:
    """Post a streamed chat request with aiohttp; return the body read and the error at its end."""
    body = {"model": "gpt-4o", "messages": MESSAGES, "stream": True}
    received = b""
    async with (
        aiohttp.ClientSession() as session,
        session.post(sidecar.url + "/v1/chat/completions", json=body) as response,
    ):
        try:
            async for chunk in response.content.iter_any():
                received += chunk
        except aiohttp.ClientPayloadError as exc:
            return received, exc
    return received, None


async def test_broken_stream_without_error_event_is_cut(
    start_sidecar: SidecarFactory,
    tmp_path: Path,
    primary: Fake,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(ChatStreamTransformer, "error_events", lambda self, message: [])
    sidecar = await start_with_upstreams(
        start_sidecar, tmp_path, [{"name": "primary", "url": primary.url}]
    )
    primary.upstream.faults = [Fault(FaultKind.RESET_STREAM, after_chunks=3)]

    received, error = await read_raw_stream(sidecar)

    assert isinstance(error, aiohttp.ClientPayloadError)
    assert b'"content": "You"' in received
    assert b"[DONE]" not in received


async def test_broken_stream_sends_no_done(
    start_sidecar: SidecarFactory, tmp_path: Path, primary: Fake
) -> None:
    sidecar = await start_with_upstreams(
        start_sidecar, tmp_path, [{"name": "primary", "url": primary.url}]
    )
    primary.upstream.faults = [Fault(FaultKind.RESET_STREAM, after_chunks=3)]

    received, error = await read_raw_stream(sidecar)

    assert error is None
    assert b"[DONE]" not in received
    assert received.rstrip().endswith(b"}}")
    assert b'"code": "upstream_stream_failed"' in received


# Client disconnects


async def test_client_disconnect_mid_stream_cancels_upstream(
    start_sidecar: SidecarFactory, tmp_path: Path, primary: Fake
) -> None:
    sidecar = await start_with_upstreams(
        start_sidecar, tmp_path, [{"name": "primary", "url": primary.url}]
    )
    primary.upstream.faults = [Fault(FaultKind.STALL_STREAM, after_chunks=3)]
    body = {"model": "gpt-4o", "messages": MESSAGES, "stream": True}

    async with aiohttp.ClientSession() as session:
        response = await session.post(sidecar.url + "/v1/chat/completions", json=body)
        first = await response.content.readany()
        response.close()

    assert b"data:" in first
    await asyncio.wait_for(primary.upstream.drop_seen.wait(), WAIT)
    assert primary.upstream.dropped == 1
    await wait_for_audits(sidecar, 1)
    assert sidecar.audits[-1]["error"] == "client_disconnected"


async def test_client_disconnect_before_first_byte_cancels_upstream(
    start_sidecar: SidecarFactory, tmp_path: Path, primary: Fake
) -> None:
    sidecar = await start_with_upstreams(
        start_sidecar,
        tmp_path,
        [{"name": "primary", "url": primary.url}],
        timeouts={"first_byte": 10.0},
    )
    primary.upstream.faults = [Fault(FaultKind.STALL)]
    body = {"model": "gpt-4o", "messages": MESSAGES}

    async with aiohttp.ClientSession() as session:
        request = asyncio.create_task(session.post(sidecar.url + "/v1/chat/completions", json=body))
        async with asyncio.timeout(WAIT):
            while not primary.upstream.requests:
                await asyncio.sleep(0.01)
        request.cancel()

    await asyncio.wait_for(primary.upstream.drop_seen.wait(), WAIT)
    assert primary.upstream.dropped == 1
    await wait_for_audits(sidecar, 1)
    assert sidecar.audits[-1]["error"] == "client_disconnected"


async def test_slow_client_slows_upstream(
    start_sidecar: SidecarFactory, tmp_path: Path, primary: Fake
) -> None:
    timeouts = {"idle": 30.0, "total": 60.0}
    sidecar = await start_with_upstreams(
        start_sidecar, tmp_path, [{"name": "primary", "url": primary.url}], timeouts=timeouts
    )
    primary.upstream.faults = [Fault(FaultKind.FLOOD)]
    host, port = sidecar.url.removeprefix("http://").split(":")
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.connect((host, int(port)))
    reader, writer = await asyncio.open_connection(sock=sock)
    body = json.dumps({"model": "gpt-4o", "messages": MESSAGES, "stream": True}).encode()
    writer.write(
        b"POST /v1/chat/completions HTTP/1.1\r\nHost: sidecar\r\n"
        b"Content-Type: application/json\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body)
    )
    await reader.readuntil(b"\r\n\r\n")

    # The client reads nothing more, so the upstream's writes stop once every buffer is
    # full. Most of that is kernel socket buffers, which Linux autotunes up to the maximum
    # of net.ipv4.tcp_rmem, so the limit leaves room for tens of MiB.
    limit = 128 * 1024 * 1024
    previous = -1
    async with asyncio.timeout(WAIT * 4):
        while primary.upstream.written != previous and primary.upstream.written < limit:
            previous = primary.upstream.written
            await asyncio.sleep(0.2)
    stalled_at = primary.upstream.written
    writer.close()

    assert stalled_at < limit
    await asyncio.wait_for(primary.upstream.drop_seen.wait(), WAIT)


async def test_connection_kept_alive_between_requests(
    start_sidecar: SidecarFactory, tmp_path: Path, primary: Fake
) -> None:
    sidecar = await start_with_upstreams(
        start_sidecar, tmp_path, [{"name": "primary", "url": primary.url}]
    )

    for _ in range(3):
        assert await complete(sidecar) == REPLY

    assert len(primary.upstream.client_ports) == 3
    assert len(set(primary.upstream.client_ports)) == 1


# Circuit breaker


async def test_breaker_opens_and_recovers(
    start_sidecar: SidecarFactory, tmp_path: Path, primary: Fake, fallback: Fake
) -> None:
    cool_down = 0.1
    targets = [{"name": "primary", "url": primary.url}, {"name": "fallback", "url": fallback.url}]
    sidecar = await start_with_upstreams(
        start_sidecar,
        tmp_path,
        targets,
        retry={"max_attempts": 1},
        breaker={"failure_threshold": 2, "cool_down": cool_down},
    )
    primary.upstream.faults = [Fault(FaultKind.STATUS, status=503)] * 2

    for _ in range(2):
        assert await complete(sidecar) == REPLY
    opened = sidecar.audits[-1]["breaker_changes"]
    assert await complete(sidecar) == REPLY
    skipped = sidecar.audits[-1]
    await asyncio.sleep(cool_down)
    assert await complete(sidecar) == REPLY
    probed = sidecar.audits[-1]

    assert opened == [{"upstream": "primary", "from": "closed", "to": "open"}]
    assert len(primary.upstream.requests) == 3
    assert results(skipped) == [("fallback", "status_200")]
    assert results(probed) == [("primary", "status_200")]
    assert probed["breaker_changes"] == [
        {"upstream": "primary", "from": "open", "to": "half_open"},
        {"upstream": "primary", "from": "half_open", "to": "closed"},
    ]
    counters = sidecar.app[STATE].upstreams.counters
    assert counters.breaker_changes["primary", "open"] == 1
    assert counters.breaker_changes["primary", "closed"] == 1
    assert counters.skipped["primary"] == 1
    assert counters.failovers["primary", "fallback"] == 2


async def test_every_breaker_open_is_502(
    start_sidecar: SidecarFactory, tmp_path: Path, primary: Fake
) -> None:
    sidecar = await start_with_upstreams(
        start_sidecar,
        tmp_path,
        [{"name": "primary", "url": primary.url}],
        retry={"max_attempts": 1},
        breaker={"failure_threshold": 1},
    )
    primary.upstream.faults = [Fault(FaultKind.STATUS, status=503)]
    with pytest.raises(openai.InternalServerError):
        await complete(sidecar)

    with pytest.raises(openai.APIStatusError) as caught:
        await complete(sidecar)

    assert caught.value.status_code == 502
    assert "circuit breaker is open" in caught.value.message
    assert len(primary.upstream.requests) == 1


# Credentials


async def test_injected_env_key_replaces_client_key(
    start_sidecar: SidecarFactory, tmp_path: Path, primary: Fake, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TEST_UPSTREAM_KEY", "sk-injected-canary-1")
    target = {"name": "primary", "url": primary.url, "api_key_env": "TEST_UPSTREAM_KEY"}
    sidecar = await start_with_upstreams(start_sidecar, tmp_path, [target])

    with capture_logs() as logs:
        await client(sidecar, key="sk-client-canary-2").chat.completions.create(
            model="gpt-4o", messages=MESSAGES
        )

    sent = {name.lower(): value for name, value in primary.upstream.requests[-1].headers.items()}
    assert sent["authorization"] == "Bearer sk-injected-canary-1"
    recorded = json.dumps(logs, default=str) + json.dumps(sidecar.audits)
    assert "canary" not in recorded


async def test_injected_file_key_as_x_api_key(
    start_sidecar: SidecarFactory, tmp_path: Path, primary: Fake
) -> None:
    key_file = tmp_path / "api-key"
    key_file.write_text("sk-file-key\n")
    target = {
        "name": "primary",
        "url": primary.url,
        "api_key_file": str(key_file),
        "auth_header": "x-api-key",
    }
    sidecar = await start_with_upstreams(start_sidecar, tmp_path, [target])

    await complete(sidecar)

    sent = {name.lower(): value for name, value in primary.upstream.requests[-1].headers.items()}
    assert sent["x-api-key"] == "sk-file-key"
    assert "authorization" not in sent


async def test_client_key_forwarded_by_default(
    start_sidecar: SidecarFactory, tmp_path: Path, primary: Fake, fallback: Fake
) -> None:
    targets = [{"name": "primary", "url": primary.url}, {"name": "fallback", "url": fallback.url}]
    sidecar = await start_with_upstreams(start_sidecar, tmp_path, targets)
    primary.upstream.faults = [Fault(FaultKind.STATUS, status=503)] * 3

    await client(sidecar, key="sk-client-key").chat.completions.create(
        model="gpt-4o", messages=MESSAGES
    )

    sent = {name.lower(): value for name, value in fallback.upstream.requests[-1].headers.items()}
    assert sent["authorization"] == "Bearer sk-client-key"


async def test_missing_key_env_stops_start(
    tmp_path: Path, primary: Fake, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("TEST_MISSING_KEY", raising=False)
    route = {
        "prefix": "/",
        "upstreams": [{"name": "primary", "url": primary.url, "api_key_env": "TEST_MISSING_KEY"}],
    }
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump({"version": 1, "routes": [route]}))
    settings = Settings(upstream=primary.url, policy=str(DEFAULT_POLICY), config=str(path))

    with pytest.raises(ConfigError, match="TEST_MISSING_KEY is not set"):
        create_app(settings, audit=lambda record: None)


def test_url_password_not_in_config_error(tmp_path: Path) -> None:
    route = {"prefix": "/", "upstreams": [{"name": "a", "url": "https://u:pw-canary@a.example"}]}
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump({"version": 1, "routes": [route]}))
    settings = Settings(policy=str(DEFAULT_POLICY), config=str(path))

    with pytest.raises(ConfigError) as caught:
        create_app(settings, audit=lambda record: None)

    assert "must not contain user info" in str(caught.value)
    assert "pw-canary" not in str(caught.value)


# Egress: outbound proxy and CA bundle


async def test_outbound_proxy_from_environment(
    start_sidecar: SidecarFactory, tmp_path: Path, primary: Fake, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The fake serves absolute-form requests too, so it acts as the HTTP proxy. The
    # upstream host cannot resolve, so a reply proves that the request went through it.
    monkeypatch.setenv("HTTP_PROXY", primary.url)
    monkeypatch.delenv("NO_PROXY", raising=False)
    monkeypatch.delenv("no_proxy", raising=False)
    target = {"name": "primary", "url": "http://llm.upstream.invalid:8080"}
    sidecar = await start_with_upstreams(start_sidecar, tmp_path, [target])
    body = {"model": "gpt-4o", "messages": MESSAGES}

    # aiohttp's client ignores HTTP_PROXY by default, so this request goes to the sidecar.
    async with (
        aiohttp.ClientSession() as session,
        session.post(sidecar.url + "/v1/chat/completions", json=body) as response,
    ):
        reply = await response.json()

    assert reply["choices"][0]["message"]["content"] == REPLY

    sent = {name.lower(): value for name, value in primary.upstream.requests[-1].headers.items()}
    assert sent["host"] == "llm.upstream.invalid:8080"


def test_invalid_ca_bundle_stops_start(tmp_path: Path) -> None:
    bundle = tmp_path / "bundle.pem"
    bundle.write_text("not a certificate\n")
    settings = Settings(policy=str(DEFAULT_POLICY), ca_bundle=str(bundle))

    with pytest.raises(ConfigError, match="cannot be loaded"):
        create_app(settings, audit=lambda record: None)


def make_ca_and_server_cert(directory: Path) -> tuple[Path, Path, Path]:
    """Write a test CA, and a certificate for 127.0.0.1 signed by it; return their paths."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    def name(common: str) -> x509.Name:
        return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common)])

    now = datetime.datetime.now(datetime.UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca = (
        x509.CertificateBuilder()
        .subject_name(name("pii-sidecar test CA"))
        .issuer_name(name("pii-sidecar test CA"))
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(hours=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(ca_key, hashes.SHA256())
    )
    key = ec.generate_private_key(ec.SECP256R1())
    import ipaddress

    cert = (
        x509.CertificateBuilder()
        .subject_name(name("127.0.0.1"))
        .issuer_name(ca.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(hours=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False,
        )
        .sign(ca_key, hashes.SHA256())
    )
    paths = directory / "ca.pem", directory / "server.pem", directory / "server.key"
    paths[0].write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    paths[1].write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    paths[2].write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return paths


@pytest.fixture
async def tls_upstream(tmp_path: Path) -> AsyncIterator[tuple[FaultyUpstream, str, Path]]:
    """A fake upstream on https://127.0.0.1 with a certificate from a test CA."""
    from aiohttp import web

    from sidecar.server.app import SERVER_OPTIONS

    ca, cert, key = make_ca_and_server_cert(tmp_path)
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert, key)
    fake = FaultyUpstream()
    runner = web.AppRunner(fake.app(), **SERVER_OPTIONS)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0, ssl_context=context)
    await site.start()
    yield fake, f"https://127.0.0.1:{runner.addresses[0][1]}", ca
    await runner.cleanup()


@pytest.mark.parametrize(
    "trusted", [pytest.param(True, id="ca-bundle"), pytest.param(False, id="system-cas")]
)
async def test_ca_bundle_verifies_upstream(
    start_sidecar: SidecarFactory,
    tmp_path: Path,
    tls_upstream: tuple[FaultyUpstream, str, Path],
    trusted: bool,
) -> None:
    fake, url, ca = tls_upstream
    config = tmp_path / "config.yaml"
    route = {
        "prefix": "/",
        "upstreams": [{"name": "tls", "url": url}],
        "retry": {"max_attempts": 1},
    }
    config.write_text(yaml.safe_dump({"version": 1, "routes": [route]}))
    sidecar = await start_sidecar(config=str(config), ca_bundle=str(ca) if trusted else None)

    if trusted:
        assert await complete(sidecar) == REPLY
        assert len(fake.requests) == 1
    else:
        with pytest.raises(openai.APIStatusError) as caught:
            await complete(sidecar)
        assert caught.value.status_code == 502
        assert fake.requests == []


# Sans-I/O parts


@pytest.mark.parametrize(
    ("total", "expected_kind", "expected_when"),
    [
        pytest.param(100.0, ErrorKind.FIRST_BYTE_TIMEOUT, 13.0, id="first-byte"),
        pytest.param(4.0, ErrorKind.TOTAL_TIMEOUT, 4.0, id="total-first"),
    ],
)
def test_timer_first_byte_deadline(
    total: float, expected_kind: ErrorKind, expected_when: float
) -> None:
    settings = TimeoutSettings(connect=1.0, first_byte=min(10.0, total), idle=1.0, total=total)
    timer = AttemptTimer(settings, start=0.0)

    deadline = timer.request_sent(now=3.0)

    assert deadline.kind is expected_kind
    assert deadline.when == min(expected_when, 3.0 + settings.first_byte)


def test_timer_phases() -> None:
    timer = AttemptTimer(TimeoutSettings(connect=1.0, first_byte=5.0, idle=2.0, total=20.0), 10.0)

    assert timer.current.kind is ErrorKind.CONNECT_TIMEOUT
    assert timer.current.when == 11.0
    assert timer.next_chunk(now=12.0).kind is ErrorKind.IDLE_TIMEOUT
    assert timer.next_chunk(now=12.0).when == 14.0
    assert timer.next_chunk(now=29.0).kind is ErrorKind.TOTAL_TIMEOUT
    assert timer.next_chunk(now=29.0).when == 30.0


def test_model_rewriter_keeps_or_renames() -> None:
    document = {"model": "gpt-4o", "messages": []}
    request = OutgoingRequest(
        "POST", "/v1/chat/completions", (("Content-Encoding", "gzip"), ("X-Trace", "1")), b"gz"
    )
    build = ModelRewriter(request, document, "gpt-4o", lambda body, model: {**body, "model": model})
    keeps = UpstreamTarget(name="same", url="https://a.example")
    renames = UpstreamTarget(name="other", url="https://b.example", model_rewrite="small")

    renamed = build(renames)

    assert build(keeps) is request
    assert json.loads(renamed.body or b"") == {"model": "small", "messages": []}
    assert dict(renamed.headers) == {"X-Trace": "1", "Content-Type": "application/json"}
    assert document["model"] == "gpt-4o"


def test_error_events_per_dialect() -> None:
    from sidecar.protocols.anthropic_messages import AnthropicMessagesAdapter
    from sidecar.protocols.openai_chat import OpenAIChatAdapter
    from sidecar.redact.restore import Restorer
    from sidecar.redact.vault import Vault

    restorer = Restorer(Vault())
    openai_events = OpenAIChatAdapter().stream_transformer(restorer).error_events("broke")
    anthropic_events = AnthropicMessagesAdapter().stream_transformer(restorer).error_events("broke")

    assert json.loads(openai_events[0].data)["error"]["message"] == "broke"
    assert anthropic_events[0].event == "error"
    assert json.loads(anthropic_events[0].data)["error"]["type"] == "api_error"
    assert ChatStreamTransformer(restorer).is_error(Event(data='{"error": {"message": "x"}}'))
