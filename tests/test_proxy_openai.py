"""The proxy end to end with the official openai SDK, a fake provider and the real detector."""

from __future__ import annotations

import asyncio
import gzip
import json
from typing import Any

import aiohttp
import openai
import pytest
import structlog
import yarl

from sidecar.detect.engine import Detector
from tests.conftest import RunningSidecar, RunningUpstream, SidecarFactory

NAME = "Zebulon Quartermaine"
EMAIL = "zebulon.q@example.com"
PHONE = "+1 415 555 0134"
CARD = "4111 1111 1111 1111"
PII = [NAME, EMAIL, PHONE, CARD]
TOOLS = [{"type": "function", "function": {"name": "lookup", "parameters": {
    "type": "object", "properties": {"query": {"type": "string"}}}}}]


def conversation() -> list[dict[str, Any]]:
    return [
        {"role": "system", "content": f"You assist {NAME}."},
        {"role": "user", "content": f"I am {NAME}, mail {EMAIL}, phone {PHONE}, card {CARD}."},
    ]


def assert_no_pii(upstream: RunningUpstream) -> None:
    for recorded in upstream.fake.requests:
        text = recorded.body.decode()
        for value in PII:
            assert value not in text


def async_client(sidecar: RunningSidecar) -> openai.AsyncOpenAI:
    return openai.AsyncOpenAI(base_url=sidecar.base_url, api_key="sk-test-key", max_retries=0)


async def test_async_completion_restores_values(sidecar: RunningSidecar, fake_upstream: RunningUpstream) -> None:
    reply = await async_client(sidecar).chat.completions.create(model="gpt-4o", messages=conversation())
    content = reply.choices[0].message.content or ""
    sent = fake_upstream.fake.requests[-1].json()["messages"]
    assert sent[0]["content"] == "You assist <PERSON_1>."
    assert sent[1]["content"] == "I am <PERSON_1>, mail <EMAIL_ADDRESS_1>, phone <PHONE_NUMBER_1>, card <CREDIT_CARD_1>."
    assert content == f"You said: I am {NAME}, mail {EMAIL}, phone {PHONE}, card {CARD}."
    assert_no_pii(fake_upstream)


async def test_async_stream_restores_values(sidecar: RunningSidecar, fake_upstream: RunningUpstream) -> None:
    stream = await async_client(sidecar).chat.completions.create(
        model="gpt-4o", messages=conversation(), stream=True, stream_options={"include_usage": True}
    )
    text, usage = "", None
    async for chunk in stream:
        if chunk.choices and chunk.choices[0].delta.content:
            text += chunk.choices[0].delta.content
        usage = chunk.usage or usage
    assert text == f"You said: I am {NAME}, mail {EMAIL}, phone {PHONE}, card {CARD}."
    assert usage is not None
    assert usage.completion_tokens == 7
    assert_no_pii(fake_upstream)
    assert sidecar.audits[-1]["usage"] == {"input_tokens": 11, "output_tokens": 7}


async def test_sync_client_stream_and_plain(sidecar: RunningSidecar, fake_upstream: RunningUpstream) -> None:
    def run() -> tuple[str, str]:
        client = openai.OpenAI(base_url=sidecar.base_url, api_key="sk-test-key", max_retries=0)
        plain = client.chat.completions.create(model="gpt-4o", messages=conversation())
        streamed = "".join(
            chunk.choices[0].delta.content or ""
            for chunk in client.chat.completions.create(model="gpt-4o", messages=conversation(), stream=True)
            if chunk.choices
        )
        return plain.choices[0].message.content or "", streamed

    plain, streamed = await asyncio.to_thread(run)
    assert plain == streamed
    assert NAME in plain
    assert_no_pii(fake_upstream)


async def test_tool_call_arguments_restored(sidecar: RunningSidecar, fake_upstream: RunningUpstream) -> None:
    client = async_client(sidecar)
    reply = await client.chat.completions.create(model="gpt-4o", messages=conversation(), tools=TOOLS)
    arguments = json.loads(reply.choices[0].message.tool_calls[0].function.arguments)  # type: ignore[index]
    stream = await client.chat.completions.create(model="gpt-4o", messages=conversation(), tools=TOOLS, stream=True)
    fragments = ""
    async for chunk in stream:
        for call in (chunk.choices[0].delta.tool_calls or []) if chunk.choices else []:
            fragments += call.function.arguments or "" if call.function else ""
    assert arguments["query"] == f"I am {NAME}, mail {EMAIL}, phone {PHONE}, card {CARD}."
    assert json.loads(fragments) == arguments
    assert_no_pii(fake_upstream)


async def test_history_with_tool_call_keeps_numbering(sidecar: RunningSidecar, fake_upstream: RunningUpstream) -> None:
    history = [
        *conversation(),
        {"role": "assistant", "content": None, "tool_calls": [{"id": "call_1", "type": "function", "function": {
            "name": "lookup", "arguments": json.dumps({"query": EMAIL, "owner": NAME})}}]},
        {"role": "tool", "tool_call_id": "call_1", "content": f"{NAME} has card {CARD}"},
        {"role": "user", "content": "Thanks, bye."},
    ]
    await async_client(sidecar).chat.completions.create(model="gpt-4o", messages=history)
    await async_client(sidecar).chat.completions.create(model="gpt-4o", messages=history)
    first, second = (r.json()["messages"] for r in fake_upstream.fake.requests[-2:])
    assert first == second
    assert json.loads(first[2]["tool_calls"][0]["function"]["arguments"]) == {
        "query": "<EMAIL_ADDRESS_1>", "owner": "<PERSON_1>"}
    assert first[3]["content"] == "<PERSON_1> has card <CREDIT_CARD_1>"
    assert first[2]["tool_calls"][0]["id"] == "call_1"
    assert_no_pii(fake_upstream)


async def test_concurrent_requests_keep_their_own_values(
    sidecar: RunningSidecar, fake_upstream: RunningUpstream
) -> None:
    client = async_client(sidecar)

    async def one(i: int) -> tuple[str, str]:
        email = f"user{i}@example.com"
        reply = await client.chat.completions.create(
            model="gpt-4o", messages=[{"role": "user", "content": f"Write to {email} please"}], stream=i % 2 == 0
        )
        if isinstance(reply, openai.AsyncStream):
            text = "".join([c.choices[0].delta.content or "" async for c in reply if c.choices])
        else:
            text = reply.choices[0].message.content or ""
        return email, text

    results = await asyncio.gather(*(one(i) for i in range(200)))
    for email, text in results:
        assert text == f"You said: Write to {email} please"
    assert all("@example.com" not in r.body.decode() for r in fake_upstream.fake.requests)


async def post(sidecar: RunningSidecar, path: str, data: bytes, headers: dict[str, str] | None = None,
               method: str = "POST") -> tuple[int, dict[str, Any], dict[str, str]]:
    async with aiohttp.ClientSession() as session, session.request(
        method, sidecar.url + path, data=data, headers=headers or {"Content-Type": "application/json"}
    ) as response:
        raw = await response.read()
        document = json.loads(raw) if response.content_type == "application/json" else {}
        return response.status, document, {k.lower(): v for k, v in response.headers.items()}


CHAT = json.dumps({"model": "m", "messages": [{"role": "user", "content": f"I am {NAME}"}]}).encode()


@pytest.mark.parametrize(
    ("data", "headers", "status", "code"),
    [
        pytest.param(b'{"model": "m", "messages": [', None, 400, "invalid_body", id="truncated-json"),
        pytest.param(b"[1, 2]", None, 400, "invalid_body", id="json-array"),
        pytest.param(b"", None, 400, "invalid_body", id="empty"),
        pytest.param(b"hello there", None, 415, "unsupported_body", id="not-json"),
        pytest.param(CHAT, {"Content-Type": "text/plain"}, 415, "unsupported_body", id="text-content-type"),
        pytest.param(CHAT, {"Content-Type": "application/json", "Content-Encoding": "compress"}, 415,
                     "unsupported_body", id="unknown-encoding"),
        pytest.param(b"\x1f\x8b garbage", {"Content-Type": "application/json", "Content-Encoding": "gzip"}, 415,
                     "unsupported_body", id="corrupt-gzip"),
        pytest.param(b'{"messages": "x"}', None, 400, "invalid_body", id="wrong-shape"),
    ],
)
async def test_bad_requests_rejected(
    sidecar: RunningSidecar, fake_upstream: RunningUpstream, data: bytes, headers: dict[str, str] | None,
    status: int, code: str,
) -> None:
    got_status, body, _ = await post(sidecar, "/v1/chat/completions", data, headers)
    assert got_status == status
    assert body["error"]["code"] == code
    assert body["error"]["message"]
    assert fake_upstream.fake.requests == []


async def test_gzip_request_is_scanned(sidecar: RunningSidecar, fake_upstream: RunningUpstream) -> None:
    headers = {"Content-Type": "application/json", "Content-Encoding": "gzip"}
    status, body, _ = await post(sidecar, "/v1/chat/completions", gzip.compress(CHAT), headers)
    assert status == 200
    assert body["choices"][0]["message"]["content"] == f"You said: I am {NAME}"
    sent = fake_upstream.fake.requests[-1]
    assert NAME.encode() not in sent.body
    assert "content-encoding" not in {k.lower() for k in sent.headers}


async def test_unknown_route_with_body_rejected(sidecar: RunningSidecar, fake_upstream: RunningUpstream) -> None:
    status, body, _ = await post(sidecar, "/v1/assistants", CHAT)
    assert status == 404
    assert body["error"]["code"] == "route_not_covered"
    assert "not covered by the PII policy" in body["error"]["message"]
    assert fake_upstream.fake.requests == []


async def test_models_list_passes_through(sidecar: RunningSidecar, fake_upstream: RunningUpstream) -> None:
    models = await async_client(sidecar).models.list()
    assert [m.id for m in models.data] == ["gpt-fake"]


async def test_unlisted_get_rejected(sidecar: RunningSidecar, fake_upstream: RunningUpstream) -> None:
    status, _body, _ = await post(sidecar, "/v1/files", b"", method="GET")
    assert status == 404
    assert fake_upstream.fake.requests == []


async def test_detector_failure_fails_closed(
    start_sidecar: SidecarFactory, fake_upstream: RunningUpstream, detector: Detector, monkeypatch: pytest.MonkeyPatch
) -> None:
    sidecar = await start_sidecar()

    def broken(*args: Any) -> Any:
        raise RuntimeError(f"boom {NAME}")

    monkeypatch.setattr(detector, "analyze", broken)
    with pytest.raises(openai.InternalServerError) as caught:
        await async_client(sidecar).chat.completions.create(model="gpt-4o", messages=conversation())
    assert caught.value.status_code == 503
    assert NAME not in str(caught.value.body)
    assert fake_upstream.fake.requests == []


async def test_detector_timeout_fails_closed(
    start_sidecar: SidecarFactory, fake_upstream: RunningUpstream, detector: Detector, monkeypatch: pytest.MonkeyPatch
) -> None:
    sidecar = await start_sidecar(detect_timeout=0.05)
    original = detector.analyze

    def slow(*args: Any) -> Any:
        import time

        time.sleep(0.3)
        return original(*args)

    monkeypatch.setattr(detector, "analyze", slow)
    status, body, _ = await post(sidecar, "/v1/chat/completions", CHAT)
    assert status == 503
    assert "timed out" in body["error"]["message"]
    assert fake_upstream.fake.requests == []


async def test_upstream_unreachable_is_502(start_sidecar: SidecarFactory) -> None:
    sidecar = await start_sidecar(upstream="http://127.0.0.1:9")
    status, body, _ = await post(sidecar, "/v1/chat/completions", CHAT)
    assert status == 502
    assert body["error"]["code"] == "upstream_unavailable"


async def test_body_too_large_is_413(start_sidecar: SidecarFactory, fake_upstream: RunningUpstream) -> None:
    sidecar = await start_sidecar(max_body_bytes=1024)
    status, body, _ = await post(sidecar, "/v1/chat/completions", b'{"messages": "' + b"x" * 4096 + b'"}')
    assert status == 413
    assert body["error"]["code"] == "body_too_large"


async def test_upstream_error_passes_through_restored(
    sidecar: RunningSidecar, fake_upstream: RunningUpstream
) -> None:
    fake_upstream.fake.status = 400
    fake_upstream.fake.error_body = {"error": {"message": "bad <PERSON_1>", "type": "invalid_request_error",
                                               "param": None, "code": None}}
    status, body, _ = await post(sidecar, "/v1/chat/completions", CHAT)
    assert status == 400
    assert body["error"]["message"] == f"bad {NAME}"


async def test_headers_forwarded_and_hop_by_hop_dropped(
    sidecar: RunningSidecar, fake_upstream: RunningUpstream
) -> None:
    headers = {
        "Content-Type": "application/json",
        "Authorization": "Bearer sk-client",
        "OpenAI-Organization": "org-1",
        "Connection": "keep-alive, X-Secret-Hop",
        "X-Secret-Hop": "1",
        "Keep-Alive": "timeout=5",
        "Proxy-Authorization": "Basic abc",
    }
    status, _, response_headers = await post(sidecar, "/v1/chat/completions", CHAT, headers)
    sent = {k.lower(): v for k, v in fake_upstream.fake.requests[-1].headers.items()}
    assert status == 200
    assert sent["authorization"] == "Bearer sk-client"
    assert sent["openai-organization"] == "org-1"
    assert "x-secret-hop" not in sent
    assert "keep-alive" not in sent
    assert "proxy-authorization" not in sent
    assert response_headers["x-request-id"].startswith("req_")


async def test_health_and_readiness(start_sidecar: SidecarFactory) -> None:
    sidecar = await start_sidecar()
    async with aiohttp.ClientSession() as session:
        async with session.get(sidecar.url + "/healthz") as health:
            assert health.status == 200
        async with session.get(sidecar.url + "/readyz") as ready:
            assert ready.status == 200


async def test_not_ready_until_detector_loads(fake_upstream: RunningUpstream) -> None:
    from dataclasses import replace

    from sidecar.config import Settings
    from sidecar.server.app import create_app
    from tests.conftest import DEFAULT_POLICY, start_site

    loaded = asyncio.Event()

    def waiting_factory(settings: Settings) -> Detector:
        asyncio.run_coroutine_threadsafe(loaded.wait(), loop).result()
        raise RuntimeError("never loads")

    loop = asyncio.get_running_loop()
    settings = replace(Settings(upstream=fake_upstream.url, policy=str(DEFAULT_POLICY)))
    runner, url = await start_site(create_app(settings, audit=lambda r: None, detector_factory=waiting_factory))
    try:
        async with aiohttp.ClientSession() as session:
            async with session.get(url + "/readyz") as ready:
                assert ready.status == 503
            async with session.post(
                url + "/v1/chat/completions", data=CHAT, headers={"Content-Type": "application/json"}
            ) as rejected:
                assert rejected.status == 503
        assert fake_upstream.fake.requests == []
    finally:
        loaded.set()
        await runner.cleanup()


async def test_canaries_never_logged_or_audited(
    sidecar: RunningSidecar, fake_upstream: RunningUpstream
) -> None:
    canaries = ["Canaryfirst Canarylast", "canary.leak@example.com", "+1 212 555 0199", "5500 0000 0000 0004",
                "sk-canary-KEY-0123456789"]
    body = {
        "model": "gpt-4o",
        "messages": [
            {"role": "system", "content": f"{canaries[0]} {canaries[1]}"},
            {"role": "user", "content": [{"type": "text", "text": f"{canaries[2]} {canaries[3]}"}]},
            {"role": "assistant", "content": None, "tool_calls": [{"id": "c1", "type": "function", "function": {
                "name": "f", "arguments": json.dumps({"a": canaries[0]})}}]},
            {"role": "tool", "tool_call_id": "c1", "content": canaries[1]},
        ],
    }
    headers = {"Content-Type": "application/json", "Authorization": f"Bearer {canaries[4]}"}
    with structlog.testing.capture_logs() as logs:
        for stream in (False, True):
            await post(sidecar, "/v1/chat/completions", json.dumps({**body, "stream": stream}).encode(), headers)
        await post(sidecar, "/v1/chat/completions", json.dumps(body).encode()[:-5], headers)
        await post(sidecar, "/v1/nope", json.dumps(body).encode(), headers)
    recorded = json.dumps(logs) + json.dumps(sidecar.audits)
    assert len(sidecar.audits) == 4
    for canary in canaries:
        assert canary not in recorded


async def test_reply_is_prefetched_for_next_turn(
    sidecar: RunningSidecar, fake_upstream: RunningUpstream
) -> None:
    from sidecar.server.app import STATE

    state = sidecar.app[STATE]
    client = async_client(sidecar)
    for stream in (False, True):
        first = conversation()
        reply = await client.chat.completions.create(model="gpt-4o", messages=first, stream=stream)
        if isinstance(reply, openai.AsyncStream):
            text = "".join([c.choices[0].delta.content or "" async for c in reply if c.choices])
        else:
            text = reply.choices[0].message.content or ""
        for _ in range(200):
            if state.detections_in_flight == 0 and state.findings_cache.lookup(
                state.detector, [text], state.policies.current
            ):
                break
            await asyncio.sleep(0.01)
        assert state.findings_cache.lookup(state.detector, [text], state.policies.current) is not None
        state.findings_cache.clear()


@pytest.mark.parametrize(
    "data",
    [
        pytest.param(b'{"model": "m", "messages": [{"role": "user", "content": "mail a@example.com"}], "messages": []}', id="duplicate-key"),
        pytest.param(b'{"model": "m", "temperature": NaN, "messages": []}', id="nan"),
        pytest.param(b'{"model": "m", "temperature": 1e400, "messages": []}', id="overflow"),
        pytest.param(b'{"model": "m", "messages": ' + b"[" * 100_000 + b"]" * 100_000 + b"}", id="deep"),
        pytest.param(b'{"model": "m", "seed": ' + b"9" * 5000 + b', "messages": []}', id="long-int"),
        pytest.param(b'{"model": "m", "messages": [{"role": "user", "content": "\\ud800"}]}', id="lone-surrogate"),
    ],
)
async def test_ambiguous_json_rejected(
    sidecar: RunningSidecar, fake_upstream: RunningUpstream, data: bytes
) -> None:
    status, body, _ = await post(sidecar, "/v1/chat/completions", data)
    assert status == 400
    assert body["error"]["code"] == "invalid_body"
    assert fake_upstream.fake.requests == []


@pytest.mark.parametrize(
    "path",
    [
        "/v1/models/../files",
        "/v1/models/..%2Ffiles",
        "/v1/models/%2e%2e/files",
        "//v1/chat/completions",
        "/v1/models/./x",
        "/v1/models\\..\\files",
    ],
)
async def test_path_tricks_rejected(sidecar: RunningSidecar, fake_upstream: RunningUpstream, path: str) -> None:
    async with aiohttp.ClientSession() as session, session.get(
        yarl.URL(sidecar.url + path, encoded=True)
    ) as response:
        assert response.status == 400
        body = await response.json()
    assert body["error"]["code"] == "invalid_path"
    assert fake_upstream.fake.requests == []


async def test_timed_out_detection_frees_the_thread(
    start_sidecar: SidecarFactory, fake_upstream: RunningUpstream
) -> None:
    sidecar = await start_sidecar(detect_timeout=2.0)
    long_text = "Zebulon Quartermaine wrote a long letter. " * 8000
    big = json.dumps({"model": "m", "messages": [{"role": "user", "content": long_text}]}).encode()
    status, _, _ = await post(sidecar, "/v1/chat/completions", big)
    assert status == 503
    # Had the analysis of the long text kept running, this request would wait
    # behind it past its own 2 s deadline and fail too.
    status, _, _ = await post(sidecar, "/v1/chat/completions", CHAT)
    assert status == 200


def test_detector_stops_at_deadline(detector: Detector) -> None:
    import time

    from sidecar.detect.engine import DetectionExpired
    from sidecar.policy.load import load_policy
    from tests.conftest import DEFAULT_POLICY

    policy = load_policy(DEFAULT_POLICY)
    with pytest.raises(DetectionExpired):
        detector.analyze(["Ann Lee is here. " * 2000], policy, deadline=time.monotonic() - 1)


@pytest.mark.parametrize("method", ["GET", "PUT", "PATCH", "DELETE"])
async def test_scanned_endpoint_takes_only_post(
    sidecar: RunningSidecar, fake_upstream: RunningUpstream, method: str
) -> None:
    status, body, _ = await post(sidecar, "/v1/chat/completions", CHAT, method=method)
    assert status == 405
    assert body["error"]["code"] == "method_not_allowed"
    assert fake_upstream.fake.requests == []
