"""Canary values planted in every request field, header and error path never reach a log.

A real `pii-sidecar serve` process runs in front of fake providers, with JSON logs at
debug level, audit records on stdout and in a keyed, hash-chained file, and value
fingerprints on. Every request carries canaries: in message texts, tool calls, tool
results, the model field, metadata, the path, the query string and headers. The error
paths run too: invalid bodies, unknown routes and policies, a blocked request, a body
too large, upstream errors with retries, an unreachable upstream, a stream that breaks
off and a client that disconnects. Afterwards no canary may appear on stderr, on stdout,
in the audit file, in the metrics or in the reports built from the audit records.

A second test runs the same requests against an in-process sidecar under
`structlog.testing.capture_logs()`, which records the keys of every log call before any
processor runs, and adds failures that only a patched process can produce.
"""

from __future__ import annotations

import asyncio
import gzip
import json
import os
import signal
import socket
import sys
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import structlog
from aiohttp import web
from aiohttp.typedefs import Handler

from sidecar.audit import cli as audit_cli
from sidecar.audit.chain import ChainStatus
from sidecar.audit.report import ReportBuilder, render_text
from sidecar.audit.report_html import render_html
from sidecar.detect.engine import Detector
from sidecar.testing.fake_anthropic import FakeAnthropic
from sidecar.testing.fake_upstream import FakeUpstream
from tests.conftest import DEFAULT_POLICY, SidecarFactory, start_site

pytestmark = pytest.mark.slow

NAME = "Canaryfirst Canarylast"
EMAIL = "canary.leak@example.com"
PHONE = "+1 212 555 0199"
CARD = "5500 0000 0000 0004"
API_KEY = "sk-canary-KEY-0123456789abcdef"
# Each value, and pieces of it that are distinctive on their own.
CANARIES = (
    NAME,
    "Canaryfirst",
    "Canarylast",
    EMAIL,
    "canary.leak",
    PHONE,
    "212 555 0199",
    "2125550199",
    CARD,
    "5500000000000004",
    "5500-0000",
    API_KEY,
    "sk-canary",
)
TEXT = f"I am {NAME}, mail {EMAIL}, phone {PHONE}."
CHAIN_KEY = b"canary-test-chain-key-0123456789abcdef"
FINGERPRINT_KEY = b"canary-test-fingerprint-key-0123456789"
MAX_BODY_BYTES = 200_000


def assert_no_canary(text: str, where: str) -> None:
    for canary in CANARIES:
        assert canary not in text, f"{canary!r} found in {where}"


# The fake providers


def failure_middleware() -> Any:
    """Return a middleware that fails like a provider when a test header requests it.

    `X-Fake-Status` returns that status with an error body that quotes placeholders, so
    the sidecar restores canaries into it. `X-Fake-Text-Error` does the same with a
    text/plain body. `X-Fake-Cut` starts a stream and drops the connection after one event.
    """

    @web.middleware
    async def middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
        if "X-Fake-Cut" in request.headers:
            await request.read()
            response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
            await response.prepare(request)
            chunk = {
                "id": "c",
                "object": "chat.completion.chunk",
                "created": 0,
                "model": "gpt-4o",
                "choices": [
                    {
                        "index": 0,
                        "delta": {"content": "Hi <PERSON_1> <EMAIL_ADDRESS_1>"},
                        "finish_reason": None,
                    }
                ],
            }
            await response.write(f"data: {json.dumps(chunk)}\n\n".encode())
            assert request.transport is not None
            request.transport.close()
            return response
        if "X-Fake-Text-Error" in request.headers:
            await request.read()
            return web.Response(status=500, text="failed for <PERSON_1> <EMAIL_ADDRESS_1>")
        status = request.headers.get("X-Fake-Status")
        if status is not None:
            await request.read()
            error = {
                "message": "rejected <PERSON_1> <EMAIL_ADDRESS_1>",
                "type": "invalid_request_error",
                "param": None,
                "code": None,
            }
            return web.json_response({"error": error}, status=int(status))
        return await handler(request)

    return middleware


@dataclass(frozen=True)
class Fakes:
    """Base URLs of the fake providers, and of a port where nothing listens."""

    openai_url: str
    anthropic_url: str
    dead_url: str


@pytest.fixture
async def fakes() -> AsyncIterator[Fakes]:
    openai_fake = FakeUpstream()
    openai_app = openai_fake.app()
    openai_app.middlewares.append(failure_middleware())
    openai_runner, openai_url = await start_site(openai_app)
    anthropic_runner, anthropic_url = await start_site(FakeAnthropic().app())
    # A port that was open a moment ago and is closed now: connections are refused.
    dead_runner, dead_url = await start_site(web.Application())
    await dead_runner.cleanup()
    yield Fakes(openai_url, anthropic_url, dead_url)
    for runner in (openai_runner, anthropic_runner):
        await runner.cleanup()


def write_config(directory: Path, fakes: Fakes) -> Path:
    retry = "{max_attempts: 2, base_delay: 0.0, max_delay: 0.0}"
    config = directory / "routes.yaml"
    config.write_text(
        "version: 1\n"
        "routes:\n"
        "  - prefix: /v1/messages\n"
        f"    upstreams: [{{name: anthropic, url: '{fakes.anthropic_url}'}}]\n"
        "  - prefix: /dead\n"
        "    strip_prefix: true\n"
        f"    upstreams: [{{name: dead, url: '{fakes.dead_url}'}}]\n"
        f"    retry: {retry}\n"
        "  - prefix: /\n"
        f"    upstreams: [{{name: primary, url: '{fakes.openai_url}'}}]\n"
        f"    retry: {retry}\n"
    )
    return config


def write_policies(directory: Path) -> Path:
    """Write the default policy and `cards-block`, which blocks card numbers."""
    policies = directory / "policies"
    policies.mkdir()
    default = DEFAULT_POLICY.read_text()
    (policies / "default.yaml").write_text(default)
    blocking = default.replace("name: default", "name: cards-block").replace(
        "CREDIT_CARD: {action: placeholder}", "CREDIT_CARD: {action: block}"
    )
    assert "CREDIT_CARD: {action: block}" in blocking
    (policies / "cards-block.yaml").write_text(blocking)
    return policies


# The requests


@dataclass(frozen=True)
class Call:
    """One request to the sidecar. `partial` reads one chunk of a stream and disconnects."""

    name: str
    path: str
    body: bytes | None
    headers: dict[str, str] = field(default_factory=dict)
    method: str = "POST"
    partial: bool = False


CANARY_HEADERS = {
    "Authorization": f"Bearer {API_KEY}",
    "User-Agent": f"canary-client/1.0 ({NAME})",
    "X-Request-Id": EMAIL,
    "X-Canary-Note": f"{NAME} {PHONE}",
    "Cookie": f"session={API_KEY}; user={EMAIL}",
    "OpenAI-Organization": NAME,
}


def as_json(document: dict[str, Any]) -> bytes:
    return json.dumps(document).encode()


def chat_body(stream: bool = False, model: str = "gpt-4o") -> dict[str, Any]:
    arguments = json.dumps({"customer": NAME, "email": EMAIL})
    body: dict[str, Any] = {
        "model": model,
        "stream": stream,
        "user": EMAIL,
        "metadata": {"customer": NAME},
        "stop": [NAME],
        "messages": [
            {"role": "system", "content": f"You help {NAME}."},
            {"role": "user", "name": "Canaryfirst", "content": [{"type": "text", "text": TEXT}]},
            {
                "role": "assistant",
                "content": None,
                "tool_calls": [
                    {
                        "id": "call_1",
                        "type": "function",
                        "function": {"name": "lookup", "arguments": arguments},
                    }
                ],
            },
            {"role": "tool", "tool_call_id": "call_1", "content": f"{NAME} lives at {PHONE}"},
            {"role": "user", "content": TEXT},
        ],
        "tools": [
            {
                "type": "function",
                "function": {
                    "name": "lookup",
                    "description": f"Look up {NAME}",
                    "parameters": {
                        "type": "object",
                        "properties": {"customer": {"type": "string"}},
                    },
                },
            }
        ],
    }
    if stream:
        body["stream_options"] = {"include_usage": True}
    return body


def anthropic_body(stream: bool) -> dict[str, Any]:
    return {
        "model": "claude-sonnet-4-5",
        "max_tokens": 64,
        "stream": stream,
        "system": f"You help {NAME}.",
        "metadata": {"user_id": EMAIL},
        "messages": [
            {"role": "user", "content": TEXT},
            {
                "role": "assistant",
                "content": [
                    {
                        "type": "tool_use",
                        "id": "toolu_1",
                        "name": "lookup",
                        "input": {"customer": NAME},
                    }
                ],
            },
            {
                "role": "user",
                "content": [
                    {
                        "type": "tool_result",
                        "tool_use_id": "toolu_1",
                        "content": f"{EMAIL} {PHONE}",
                    },
                    {"type": "text", "text": TEXT},
                ],
            },
        ],
    }


def calls() -> list[Call]:
    big = as_json({"model": "gpt-4o", "messages": [{"role": "user", "content": TEXT * 3000}]})
    assert len(big) > MAX_BODY_BYTES
    anthropic_headers = {
        "x-api-key": API_KEY,
        "anthropic-version": "2023-06-01",
        "User-Agent": NAME,
    }
    return [
        Call("chat", "/v1/chat/completions", as_json(chat_body()), CANARY_HEADERS),
        Call(
            "chat-stream", "/v1/chat/completions", as_json(chat_body(stream=True)), CANARY_HEADERS
        ),
        Call(
            "chat-query",
            f"/v1/chat/completions?customer={EMAIL}",
            as_json(chat_body()),
            CANARY_HEADERS,
        ),
        Call("model-name", "/v1/chat/completions", as_json(chat_body(model=NAME)), CANARY_HEADERS),
        Call(
            "model-email", "/v1/chat/completions", as_json(chat_body(model=EMAIL)), CANARY_HEADERS
        ),
        Call("model-card", "/v1/chat/completions", as_json(chat_body(model="5500000000000004"))),
        Call(
            "responses",
            "/v1/responses",
            as_json(
                {"model": "gpt-4o", "instructions": f"Help {NAME}", "input": TEXT, "user": EMAIL}
            ),
            CANARY_HEADERS,
        ),
        Call(
            "responses-stream",
            "/v1/responses",
            as_json(
                {"model": "gpt-4o", "input": [{"role": "user", "content": TEXT}], "stream": True}
            ),
            CANARY_HEADERS,
        ),
        Call(
            "responses-bad-role",
            "/v1/responses",
            as_json({"model": "gpt-4o", "input": [{"role": NAME, "content": TEXT}]}),
            CANARY_HEADERS,
        ),
        Call(
            "completions",
            "/v1/completions",
            as_json({"model": "gpt-4o", "prompt": [TEXT, f"{NAME} again"], "suffix": EMAIL}),
            CANARY_HEADERS,
        ),
        Call(
            "completions-stream",
            "/v1/completions",
            as_json(
                {
                    "model": "gpt-4o",
                    "prompt": TEXT,
                    "stream": True,
                    "stream_options": {"include_usage": True},
                }
            ),
            CANARY_HEADERS,
        ),
        Call(
            "embeddings",
            "/v1/embeddings",
            as_json({"model": "text-embedding-3-small", "input": [TEXT, EMAIL], "user": NAME}),
            CANARY_HEADERS,
        ),
        Call("anthropic", "/v1/messages", as_json(anthropic_body(False)), anthropic_headers),
        Call("anthropic-stream", "/v1/messages", as_json(anthropic_body(True)), anthropic_headers),
        Call(
            "blocked",
            "/v1/chat/completions",
            as_json(
                {
                    "model": "gpt-4o",
                    "messages": [{"role": "user", "content": f"{TEXT} card {CARD}"}],
                }
            ),
            {**CANARY_HEADERS, "X-PII-Policy": "cards-block"},
        ),
        Call(
            "unknown-policy",
            "/v1/chat/completions",
            as_json(chat_body()),
            {**CANARY_HEADERS, "X-PII-Policy": NAME},
        ),
        Call("truncated-json", "/v1/chat/completions", as_json(chat_body())[:-7], CANARY_HEADERS),
        Call("wrong-shape", "/v1/chat/completions", as_json({"model": "m", "messages": TEXT})),
        Call("not-json", "/v1/chat/completions", TEXT.encode(), {"Content-Type": "text/plain"}),
        Call(
            "bad-encoding",
            "/v1/chat/completions",
            as_json(chat_body()),
            {"Content-Encoding": f"x-{NAME.replace(' ', '-')}"},
        ),
        Call(
            "corrupt-gzip",
            "/v1/chat/completions",
            b"\x1f\x8b" + TEXT.encode(),
            {"Content-Encoding": "gzip"},
        ),
        Call(
            "gzip",
            "/v1/chat/completions",
            gzip.compress(as_json(chat_body())),
            {**CANARY_HEADERS, "Content-Encoding": "gzip"},
        ),
        Call("too-large", "/v1/chat/completions", big, CANARY_HEADERS),
        Call(
            "unknown-route",
            f"/v1/{EMAIL}/{NAME.replace(' ', '%20')}",
            as_json(chat_body()),
            CANARY_HEADERS,
        ),
        Call("passthrough", f"/v1/models?owner={EMAIL}", None, CANARY_HEADERS, method="GET"),
        Call("unlisted-get", f"/v1/files/{EMAIL}", None, CANARY_HEADERS, method="GET"),
        Call(
            "upstream-400",
            "/v1/chat/completions",
            as_json(chat_body()),
            {**CANARY_HEADERS, "X-Fake-Status": "400"},
        ),
        Call(
            "upstream-503-retried",
            "/v1/chat/completions",
            as_json(chat_body()),
            {**CANARY_HEADERS, "X-Fake-Status": "503"},
        ),
        Call(
            "upstream-text-error",
            "/v1/chat/completions",
            as_json(chat_body()),
            {**CANARY_HEADERS, "X-Fake-Text-Error": "1"},
        ),
        Call(
            "upstream-unreachable",
            "/dead/v1/chat/completions",
            as_json(chat_body()),
            CANARY_HEADERS,
        ),
        Call(
            "stream-cut",
            "/v1/chat/completions",
            as_json(chat_body(stream=True)),
            {**CANARY_HEADERS, "X-Fake-Cut": "1"},
        ),
        Call(
            "client-disconnects",
            "/v1/chat/completions",
            as_json(chat_body(stream=True)),
            CANARY_HEADERS,
            partial=True,
        ),
    ]


@dataclass
class Reply:
    name: str
    status: int
    text: str


async def send_all(base_url: str, to_send: list[Call]) -> list[Reply]:
    replies = []
    async with aiohttp.ClientSession(auto_decompress=False) as session:
        for call in to_send:
            headers = {"Content-Type": "application/json", **call.headers}
            async with session.request(
                call.method, base_url + call.path, data=call.body, headers=headers
            ) as response:
                if call.partial:
                    await response.content.readany()
                    response.close()
                    replies.append(Reply(call.name, response.status, ""))
                    continue
                try:
                    raw = await response.read()
                except aiohttp.ClientPayloadError:
                    raw = b""
                replies.append(Reply(call.name, response.status, raw.decode(errors="replace")))
    return replies


def check_replies(replies: list[Reply]) -> None:
    """Check that the error paths ran: each call got the status its path gives."""
    statuses = {reply.name: reply.status for reply in replies}
    assert statuses["chat"] == 200
    assert statuses["anthropic-stream"] == 200
    assert statuses["blocked"] == 400
    assert statuses["unknown-policy"] == 400
    assert statuses["truncated-json"] == 400
    assert statuses["not-json"] == 415
    assert statuses["too-large"] == 413
    assert statuses["unknown-route"] == 404
    assert statuses["upstream-400"] == 400
    assert statuses["upstream-503-retried"] == 503
    assert statuses["upstream-text-error"] == 500
    assert statuses["upstream-unreachable"] == 502
    # Restored values reach the client, so the canaries did travel through the sidecar.
    by_name = {reply.name: reply.text for reply in replies}
    assert NAME in by_name["chat"]
    assert NAME in by_name["upstream-400"]


def request_records(lines: list[str]) -> list[dict[str, Any]]:
    records = [json.loads(line) for line in lines if line.startswith("{")]
    return [record for record in records if record.get("record_type") == "request"]


def reports(lines: list[bytes]) -> str:
    builder = ReportBuilder()
    for line in lines:
        builder.add_line(line)
    report = builder.build()
    return render_text(report) + render_html(report, title="canary")


# The real process


async def wait_ready(url: str, process: asyncio.subprocess.Process) -> None:
    deadline = time.monotonic() + 120
    async with aiohttp.ClientSession() as session:
        while time.monotonic() < deadline:
            assert process.returncode is None, "the sidecar exited before it became ready"
            try:
                async with session.get(url + "/readyz") as response:
                    if response.status == 200:
                        return
            except aiohttp.ClientConnectionError:
                pass
            await asyncio.sleep(0.1)
    raise AssertionError("the sidecar did not become ready")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def test_no_canary_in_any_output_of_serve(fakes: Fakes, tmp_path: Path) -> None:
    (tmp_path / "chain.key").write_bytes(CHAIN_KEY)
    (tmp_path / "fingerprint.key").write_bytes(FINGERPRINT_KEY)
    audit_file = tmp_path / "audit.log"
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    arguments = [
        "serve",
        "--port",
        str(port),
        "--upstream",
        fakes.openai_url,
        "--config",
        str(write_config(tmp_path, fakes)),
        "--policy-dir",
        str(write_policies(tmp_path)),
        "--policy",
        "default",
        "--client-policies",
        "cards-block",
        "--log-format",
        "json",
        "--log-level",
        "debug",
        "--audit-file",
        str(audit_file),
        "--audit-stdout",
        "true",
        "--audit-key-file",
        str(tmp_path / "chain.key"),
        "--audit-checkpoint-every",
        "5",
        "--fingerprint-key-file",
        str(tmp_path / "fingerprint.key"),
        "--client-service",
        "checkout",
        "--max-body-bytes",
        str(MAX_BODY_BYTES),
        "--grace-period",
        "5",
    ]
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "sidecar",
        *arguments,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env={**os.environ},
    )
    assert process.stdout is not None and process.stderr is not None
    stdout_task = asyncio.create_task(process.stdout.read())
    stderr_task = asyncio.create_task(process.stderr.read())
    try:
        await wait_ready(url, process)
        to_send = calls()
        replies = await send_all(url, to_send)
        async with aiohttp.ClientSession() as session, session.get(url + "/metrics") as response:
            metrics = await response.text()
        process.send_signal(signal.SIGTERM)
        assert await asyncio.wait_for(process.wait(), 30) == 0
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()
    stdout = (await stdout_task).decode()
    stderr = (await stderr_task).decode()
    audit_text = audit_file.read_text()

    check_replies(replies)
    assert_no_canary(stderr, "stderr")
    assert_no_canary(stdout, "stdout")
    assert_no_canary(audit_text, "the audit file")
    assert_no_canary(metrics, "the metrics")
    assert_no_canary(reports(audit_file.read_bytes().splitlines()), "the report of the audit file")
    assert_no_canary(reports(stdout.encode().splitlines()), "the report of stdout")

    # Every request has one record in each sink, and the sealed file verifies.
    from_stdout = request_records(stdout.splitlines())
    from_file = request_records(audit_text.splitlines())
    verification = audit_cli.verify_files([audit_file], CHAIN_KEY)
    assert len(from_stdout) == len(to_send)
    assert [r["request_id"] for r in from_file] == [r["request_id"] for r in from_stdout]
    assert verification.status is ChainStatus.SEALED
    # stderr holds only JSON lines: no traceback or library text slipped past the processors.
    log_lines = [json.loads(line) for line in stderr.splitlines() if line.strip()]
    events = {line["event"] for line in log_lines}
    assert {
        "request_rejected",
        "retrying upstream",
        "audit_checkpoint",
        "sidecar_stopped",
    } <= events
    assert any("request_id" in line for line in log_lines if line["event"] == "retrying upstream")


# In-process, with capture_logs


async def test_no_canary_in_captured_log_calls(
    start_sidecar: SidecarFactory,
    fakes: Fakes,
    tmp_path: Path,
    detector: Detector,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    (tmp_path / "fingerprint.key").write_bytes(FINGERPRINT_KEY)
    sidecar = await start_sidecar(
        upstream=fakes.openai_url,
        config=str(write_config(tmp_path, fakes)),
        policy_dir=str(write_policies(tmp_path)),
        policy="default",
        client_policies="cards-block",
        max_body_bytes=MAX_BODY_BYTES,
        fingerprint_key_file=str(tmp_path / "fingerprint.key"),
    )
    with structlog.testing.capture_logs() as logs:
        replies = await send_all(sidecar.url, calls())
        await failing_detector(sidecar.url, detector, monkeypatch)
        await failing_adapter(sidecar.url, monkeypatch)
    async with (
        aiohttp.ClientSession() as session,
        session.get(sidecar.url + "/metrics") as response,
    ):
        metrics = await response.text()
    records = "\n".join(json.dumps(record) for record in sidecar.audits)

    check_replies(replies)
    assert_no_canary(json.dumps(logs, default=str), "captured log calls")
    assert_no_canary(records, "audit records")
    assert_no_canary(metrics, "the metrics")
    assert_no_canary(reports(records.encode().splitlines()), "the report")
    assert {"request_failed", "request_rejected"} <= {entry["event"] for entry in logs}


async def failing_detector(url: str, detector: Detector, monkeypatch: pytest.MonkeyPatch) -> None:
    """Send one request while the detector raises an exception that quotes the request."""

    def broken(texts: list[str], *args: Any) -> Any:
        raise RuntimeError(f"cannot analyze {texts!r}")

    # A text seen before would come from the findings cache without calling the detector.
    body = {
        "model": "gpt-4o",
        "messages": [{"role": "user", "content": f"{TEXT} Not seen before."}],
    }
    with monkeypatch.context() as patch:
        patch.setattr(detector, "analyze", broken)
        replies = await send_all(
            url, [Call("detector", "/v1/chat/completions", as_json(body), CANARY_HEADERS)]
        )
    assert replies[0].status == 503


async def failing_adapter(url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """Send one request while the adapter crashes with a KeyError that names a canary."""
    from sidecar.protocols.openai_chat import OpenAIChatAdapter

    def broken(self: Any, body: dict[str, Any]) -> Any:
        raise KeyError(body["messages"][-1]["content"])

    with monkeypatch.context() as patch:
        patch.setattr(OpenAIChatAdapter, "collect", broken)
        replies = await send_all(
            url, [Call("crash", "/v1/chat/completions", as_json(chat_body()), CANARY_HEADERS)]
        )
    assert replies[0].status == 500
    assert NAME not in replies[0].text
