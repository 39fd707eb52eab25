"""The audit trail of the running sidecar: every schema field, per dialect, streamed and not."""

from __future__ import annotations

import asyncio
import json
import re
import threading
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from sidecar.audit import cli as audit_cli
from sidecar.audit.chain import ChainStatus
from sidecar.audit.keys import api_key_fingerprint, fingerprint, normalize_value
from sidecar.audit.pricing import load_pricing
from sidecar.audit.record import AuditRecord, model_identifier
from sidecar.audit.sink import AuditSink
from sidecar.audit.trail import AuditTrail, open_audit_trail
from sidecar.audit.writer import BackgroundWriter
from sidecar.cli import main as cli_main
from sidecar.config import Settings
from sidecar.detect.engine import Detector
from sidecar.errors import ConfigError
from sidecar.server.app import STATE, create_app
from tests.conftest import (
    DEFAULT_POLICY,
    RunningSidecar,
    RunningUpstream,
    SidecarFactory,
    start_site,
)
from tests.conftest_protocols import (
    RunningAnthropic,
    fake_anthropic_fixture,  # noqa: F401 (a fixture, found by its name)
)

NAME = "Zebulon Quartermaine"
EMAIL = "zebulon.q@example.com"
CARD = "4111 1111 1111 1111"
PROMPT = f"I am {NAME}, mail {EMAIL}."
API_KEY = "sk-audit-test-0123456789abcdef"
FINGERPRINT_KEY = b"fingerprint-key-for-tests-0123456789"
TIMESTAMP = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z")
HEX = re.compile(r"[0-9a-f]+")


@dataclass(frozen=True)
class Case:
    """One request of a dialect: where it goes, its body, and the usage the fake reports."""

    dialect: str
    path: str
    model: str
    body: dict[str, Any]
    usage: dict[str, int] | None
    anthropic: bool = False


def chat(stream: bool) -> Case:
    body: dict[str, Any] = {"messages": [{"role": "user", "content": PROMPT}], "stream": stream}
    if stream:
        body["stream_options"] = {"include_usage": True}
    return Case(
        "openai.chat",
        "/v1/chat/completions",
        "gpt-4o",
        body,
        {"input_tokens": 11, "output_tokens": 7},
    )


def responses(stream: bool) -> Case:
    body = {"input": PROMPT, "stream": stream}
    return Case(
        "openai.responses",
        "/v1/responses",
        "gpt-4o-mini",
        body,
        {"input_tokens": 20, "output_tokens": 9, "cached_tokens": 4},
    )


def completions(stream: bool) -> Case:
    body: dict[str, Any] = {"prompt": PROMPT, "stream": stream}
    if stream:
        body["stream_options"] = {"include_usage": True}
    return Case(
        "openai.completions",
        "/v1/completions",
        "gpt-4o",
        body,
        {"input_tokens": 10, "output_tokens": 6},
    )


def embeddings() -> Case:
    # The fake counts the words of the rewritten input, placeholders included.
    words = len(["I", "am", "<PERSON_1>,", "mail", "<EMAIL_ADDRESS_1>."])
    return Case(
        "openai.embeddings",
        "/v1/embeddings",
        "text-embedding-3-small",
        {"input": PROMPT},
        {"input_tokens": words},
    )


def messages(stream: bool) -> Case:
    body = {"max_tokens": 64, "messages": [{"role": "user", "content": PROMPT}], "stream": stream}
    # Anthropic's input_tokens leave out cache reads, which the record adds back.
    usage = {"input_tokens": 30, "output_tokens": 12, "cached_tokens": 5, "cache_write_tokens": 0}
    return Case(
        "anthropic.messages", "/v1/messages", "claude-sonnet-4-5", body, usage, anthropic=True
    )


CASES = [
    pytest.param(chat(False), id="openai.chat"),
    pytest.param(chat(True), id="openai.chat-stream"),
    pytest.param(responses(False), id="openai.responses"),
    pytest.param(responses(True), id="openai.responses-stream"),
    pytest.param(completions(False), id="openai.completions"),
    pytest.param(completions(True), id="openai.completions-stream"),
    pytest.param(embeddings(), id="openai.embeddings"),
    pytest.param(messages(False), id="anthropic.messages"),
    pytest.param(messages(True), id="anthropic.messages-stream"),
]


@pytest.fixture
def fingerprint_key_file(tmp_path: Path) -> Path:
    path = tmp_path / "fingerprint.key"
    path.write_bytes(FINGERPRINT_KEY + b"\n")
    return path


async def send(sidecar: RunningSidecar, case: Case) -> tuple[int, str, bytes]:
    """Send `case` with an API key and return the status, request id header and body."""
    key_header = (
        {"x-api-key": API_KEY} if case.anthropic else {"Authorization": f"Bearer {API_KEY}"}
    )
    body = {"model": case.model, **case.body}
    async with (
        aiohttp.ClientSession() as session,
        session.post(sidecar.url + case.path, json=body, headers=key_header) as response,
    ):
        raw = await response.read()
        return response.status, response.headers["X-Request-Id"], raw


async def audit_of(sidecar: RunningSidecar, request_id: str) -> dict[str, Any]:
    """Return the audit record of `request_id`, waiting for its handler to finish writing it."""
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        for record in sidecar.audits:
            if record["request_id"] == request_id:
                return record
        await asyncio.sleep(0.005)
    raise AssertionError(f"no audit record for {request_id}")


@pytest.mark.parametrize("case", CASES)
async def test_every_schema_field_is_filled(
    start_sidecar: SidecarFactory,
    fake_upstream: RunningUpstream,
    fake_anthropic: RunningAnthropic,
    fingerprint_key_file: Path,
    case: Case,
) -> None:
    upstream = fake_anthropic.url if case.anthropic else fake_upstream.url
    sidecar = await start_sidecar(
        upstream=upstream,
        fingerprint_key_file=str(fingerprint_key_file),
        client_service="checkout",
        client_pod="checkout-7d9f8",
    )
    status, request_id, _ = await send(sidecar, case)
    record = await audit_of(sidecar, request_id)
    stream = bool(case.body.get("stream"))

    assert status == 200
    assert record["schema_version"] == 1
    assert record["record_type"] == "request"
    assert TIMESTAMP.fullmatch(record["timestamp"])
    assert record["request_id"] == request_id
    assert record["route"] == case.path
    assert record["dialect"] == case.dialect
    assert record["upstream"] == upstream
    assert record["upstream_name"] == "primary"
    assert record["attempts"] == [{"upstream": "primary", "result": "status_200"}]
    assert record["model"] == case.model
    assert record["stream"] is stream
    assert record["policy"]["name"] == "default"
    assert record["policy"]["hash"].startswith("sha256:")
    assert record["mode"] == "enforce"
    assert record["entities"]["EMAIL_ADDRESS"] == {"count": 1, "action": "placeholder"}
    assert record["entities"]["PERSON"] == {"count": 1, "action": "placeholder"}
    assert record["blocked"] is False
    assert record["block_reason"] is None
    assert record["status"] == 200
    assert record["error"] is None
    assert record["retries"] == 0
    assert record["failovers"] == 0
    assert record["stream_error"] is None
    assert set(record["timings_ms"]) == {"detection", "upstream", "first_byte", "total"}
    assert all(value >= 0 for value in record["timings_ms"].values())
    assert record["client"] == {
        "service": "checkout",
        "pod": "checkout-7d9f8",
        "key_fingerprint": api_key_fingerprint(API_KEY, FINGERPRINT_KEY),
    }
    assert record["usage"] == case.usage
    assert record["cost_usd"] == load_pricing().estimate_cost(case.model, case.usage)
    expected = fingerprint(normalize_value("EMAIL_ADDRESS", EMAIL), FINGERPRINT_KEY)
    assert record["value_fingerprints"]["EMAIL_ADDRESS"] == [expected]


@pytest.mark.parametrize("model", ["gpt-4o", "claude-sonnet-4-5"])
def test_priced_models_get_a_cost(model: str) -> None:
    cost = load_pricing().estimate_cost(model, {"input_tokens": 10, "output_tokens": 5})

    assert cost is not None
    assert cost > 0


async def test_unknown_model_gets_no_cost(sidecar: RunningSidecar) -> None:
    case = replace(chat(False), model="gpt-4o-unpriced-variant")
    _, request_id, _ = await send(sidecar, case)
    record = await audit_of(sidecar, request_id)

    assert record["usage"] == {"input_tokens": 11, "output_tokens": 7}
    assert record["cost_usd"] is None


async def test_fingerprints_off_without_key(sidecar: RunningSidecar) -> None:
    _, request_id, _ = await send(sidecar, chat(False))
    record = await audit_of(sidecar, request_id)

    assert "value_fingerprints" not in record
    assert record["client"] == {"service": None, "pod": None, "key_fingerprint": None}


async def test_same_value_same_fingerprint(
    start_sidecar: SidecarFactory, fingerprint_key_file: Path
) -> None:
    sidecar = await start_sidecar(fingerprint_key_file=str(fingerprint_key_file))
    spellings = ["4111 1111 1111 1111", "4111-1111-1111-1111"]
    records = []
    for card in spellings:
        body = {"messages": [{"role": "user", "content": f"My card number is {card} thanks"}]}
        _, request_id, _ = await send(sidecar, replace(chat(False), body=body))
        records.append(await audit_of(sidecar, request_id))

    first, second = (record["value_fingerprints"]["CREDIT_CARD"] for record in records)
    assert first == second
    assert len(first) == 1
    assert HEX.fullmatch(first[0])
    assert len(first[0]) == 16


@pytest.fixture
def blocking_policy(tmp_path: Path) -> Path:
    text = DEFAULT_POLICY.read_text().replace(
        "CREDIT_CARD: {action: placeholder}", "CREDIT_CARD: {action: block}"
    )
    assert "CREDIT_CARD: {action: block}" in text
    path = tmp_path / "blocking.yaml"
    path.write_text(text)
    return path


async def test_blocked_request_record(
    start_sidecar: SidecarFactory, fake_upstream: RunningUpstream, blocking_policy: Path
) -> None:
    sidecar = await start_sidecar(policy=str(blocking_policy))
    body = {"messages": [{"role": "user", "content": f"I am {NAME}, card {CARD}."}]}
    status, request_id, raw = await send(sidecar, replace(chat(False), body=body))
    record = await audit_of(sidecar, request_id)

    assert status == 400
    assert CARD not in raw.decode()
    assert fake_upstream.fake.requests == []
    assert record["blocked"] is True
    assert record["block_reason"] == "CREDIT_CARD x1"
    assert record["entities"]["CREDIT_CARD"] == {"count": 1, "action": "block"}
    assert record["status"] == 400
    assert record["error"] == "pii_blocked"
    assert record["usage"] is None
    assert record["cost_usd"] is None
    assert record["attempts"] == []
    assert "upstream" not in record["timings_ms"]
    assert "detection" in record["timings_ms"]


async def test_rejected_request_still_audited(
    sidecar: RunningSidecar, fake_upstream: RunningUpstream
) -> None:
    async with (
        aiohttp.ClientSession() as session,
        session.post(
            sidecar.url + "/v1/chat/completions",
            data=b"{not json",
            headers={"Content-Type": "application/json"},
        ) as response,
    ):
        request_id = response.headers["X-Request-Id"]
    record = await audit_of(sidecar, request_id)

    assert record["status"] == 400
    assert record["error"] == "invalid_body"
    assert record["dialect"] == "openai.chat"
    assert record["model"] is None
    assert record["entities"] == {}


async def test_upstream_error_status_recorded(
    sidecar: RunningSidecar, fake_upstream: RunningUpstream
) -> None:
    fake_upstream.fake.status = 400
    fake_upstream.fake.error_body = {"error": {"message": "bad", "type": "invalid_request_error"}}
    status, request_id, _ = await send(sidecar, chat(False))
    record = await audit_of(sidecar, request_id)

    assert status == 400
    assert record["status"] == 400
    assert record["attempts"] == [{"upstream": "primary", "result": "status_400"}]
    assert record["usage"] is None


async def test_retries_counted_in_record_and_metrics(
    start_sidecar: SidecarFactory, fake_upstream: RunningUpstream, tmp_path: Path
) -> None:
    config = tmp_path / "routes.yaml"
    config.write_text(
        "version: 1\nroutes:\n  - prefix: /\n    upstreams:\n"
        f"      - {{name: primary, url: '{fake_upstream.url}'}}\n"
        "    retry: {max_attempts: 3, base_delay: 0.0, max_delay: 0.0}\n"
    )
    sidecar = await start_sidecar(config=str(config))
    fake_upstream.fake.status = 503
    fake_upstream.fake.error_body = {"error": {"message": "overloaded", "type": "server_error"}}
    status, request_id, _ = await send(sidecar, chat(False))
    record = await audit_of(sidecar, request_id)
    metrics = sidecar.app[STATE].metrics

    assert status == 503
    assert record["retries"] == 2
    assert [attempt["result"] for attempt in record["attempts"]] == ["status_503"] * 3
    assert metrics.upstream_retries.labels("primary", "status_503")._value.get() == 2
    assert metrics.upstream_errors.labels("primary", "status_503")._value.get() == 3
    assert metrics.upstream_attempts.labels("primary", "status_503")._value.get() == 3


@pytest.mark.parametrize(
    ("model", "recorded"),
    [
        pytest.param("gpt-4o-2024-08-06", "gpt-4o-2024-08-06", id="dated-snapshot"),
        pytest.param("claude-3-5-sonnet@20240620", "claude-3-5-sonnet@20240620", id="vertex"),
        pytest.param(
            "accounts/fireworks/models/llama-v3p1-8b",
            "accounts/fireworks/models/llama-v3p1-8b",
            id="path",
        ),
        pytest.param(f"{NAME}", None, id="name-with-space"),
        pytest.param(EMAIL, None, id="email"),
        pytest.param("4111111111111111", None, id="card-digits"),
        pytest.param("+14155550134", None, id="phone"),
        pytest.param("x" * 129, None, id="too-long"),
        pytest.param(42, None, id="not-a-string"),
    ],
)
def test_record_keeps_only_model_identifiers(model: object, recorded: str | None) -> None:
    record = AuditRecord(request_id="req_1", route="default")
    record.model = model  # type: ignore[assignment]

    assert record.model == recorded
    assert model_identifier(model) == recorded


def test_entity_with_several_actions_reports_strictest() -> None:
    record = AuditRecord(request_id="req_1", route="default")
    record.set_entities({"PERSON": {"placeholder": 2, "allow": 1}, "URL": {"allow": 1}})

    assert record.entities["PERSON"] == {
        "count": 3,
        "action": "placeholder",
        "actions": {"allow": 1, "placeholder": 2},
    }
    assert record.entities["URL"] == {"count": 1, "action": "allow"}


@pytest.mark.parametrize(
    ("headers", "expected"),
    [
        pytest.param({"authorization": f"Bearer {API_KEY}"}, API_KEY, id="bearer"),
        pytest.param({"x-api-key": API_KEY}, API_KEY, id="x-api-key"),
        pytest.param({"api-key": API_KEY}, API_KEY, id="azure-api-key"),
        pytest.param({}, None, id="none"),
    ],
)
def test_client_key_fingerprint(headers: dict[str, str], expected: str | None) -> None:
    trail = AuditTrail(lambda record: None, fingerprint_key=FINGERPRINT_KEY, service="svc")
    identity = trail.identify_client(headers)

    assert identity.service == "svc"
    if expected is None:
        assert identity.key_fingerprint is None
    else:
        assert identity.key_fingerprint == api_key_fingerprint(expected, FINGERPRINT_KEY)
        assert len(identity.key_fingerprint) == 8


def test_api_key_fingerprint_differs_from_value_fingerprint() -> None:
    value = fingerprint(API_KEY, FINGERPRINT_KEY)

    assert not value.startswith(api_key_fingerprint(API_KEY, FINGERPRINT_KEY))


def test_same_key_for_chain_and_fingerprints_rejected(tmp_path: Path) -> None:
    key = tmp_path / "one.key"
    key.write_bytes(FINGERPRINT_KEY)
    settings = Settings(
        policy=str(DEFAULT_POLICY),
        audit_file=str(tmp_path / "audit.log"),
        audit_key_file=str(key),
        fingerprint_key_file=str(key),
    )

    with pytest.raises(ConfigError, match="same key"):
        open_audit_trail(settings)


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        pytest.param({"audit_stdout": False}, "nowhere to go", id="no-sink"),
        pytest.param({"audit_checkpoint_every": -1}, "checkpoint interval", id="checkpoints"),
        pytest.param({"audit_rotate_bytes": -5}, "rotation size", id="rotation"),
    ],
)
def test_invalid_audit_settings_rejected(overrides: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        Settings(policy=str(DEFAULT_POLICY), **overrides)


@pytest.mark.parametrize(
    ("audit_file", "audit_stdout", "expected"),
    [
        pytest.param(None, None, True, id="default"),
        pytest.param("audit.log", None, False, id="file-only"),
        pytest.param("audit.log", True, True, id="file-and-stdout"),
    ],
)
def test_stdout_sink_default(
    audit_file: str | None, audit_stdout: bool | None, expected: bool
) -> None:
    settings = Settings(
        policy=str(DEFAULT_POLICY), audit_file=audit_file, audit_stdout=audit_stdout
    )

    assert settings.audit_to_stdout is expected


# The sinks behind the running app


async def serve_with_sinks(
    settings: Settings, detector: Detector
) -> tuple[web.Application, web.AppRunner, str]:
    app = create_app(settings, detector_factory=lambda _: detector)
    runner, url = await start_site(app)
    while not app[STATE].ready:
        await asyncio.sleep(0.01)
    return app, runner, url


async def test_file_and_stdout_sinks_sealed_at_cleanup(
    fake_upstream: RunningUpstream,
    detector: Detector,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    chain_key = tmp_path / "chain.key"
    chain_key.write_bytes(b"chain-key-for-tests-0123456789abcdef")
    audit_file = tmp_path / "audit.log"
    settings = Settings(
        upstream=fake_upstream.url,
        policy=str(DEFAULT_POLICY),
        audit_file=str(audit_file),
        audit_stdout=True,
        audit_key_file=str(chain_key),
        audit_checkpoint_every=2,
    )
    _, runner, url = await serve_with_sinks(settings, detector)
    request_ids = []
    async with aiohttp.ClientSession() as session:
        for stream in (False, True, False):
            body = {
                "model": "gpt-4o",
                "stream": stream,
                "messages": [{"role": "user", "content": PROMPT}],
            }
            async with session.post(url + "/v1/chat/completions", json=body) as response:
                await response.read()
                request_ids.append(response.headers["X-Request-Id"])
    await runner.cleanup()

    lines = [json.loads(line) for line in audit_file.read_text().splitlines()]
    requests = [line for line in lines if line["record_type"] == "request"]
    # Without configure_logging, structlog prints its console lines to stdout as well.
    out = capsys.readouterr().out.splitlines()
    printed = [json.loads(line) for line in out if line.startswith("{")]
    result = audit_cli.verify_files([audit_file], chain_key.read_bytes().strip())
    assert [record["request_id"] for record in requests] == request_ids
    assert [record["request_id"] for record in printed] == request_ids
    assert lines[-1]["checkpoint"]["reason"] == "close"
    assert result.status is ChainStatus.SEALED
    assert cli_main(["audit", "verify", str(audit_file), "--key-file", str(chain_key)]) == 0
    assert PROMPT not in audit_file.read_text()


def test_audit_commands_wired_into_cli(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    audit_file = tmp_path / "audit.jsonl"
    record = AuditRecord(request_id="req_1", route="default", model="gpt-4o", status=200)
    record.usage = {"input_tokens": 10, "output_tokens": 5}
    audit_file.write_text(json.dumps(record.to_dict()) + "\n")

    status = cli_main(["audit", "report", str(audit_file)])

    assert status == 0
    assert "gpt-4o" in capsys.readouterr().out


# The writer thread


class ListSink:
    """A sink that stores records and fails on the request ids in `fail_on`."""

    def __init__(self, fail_on: frozenset[str] = frozenset()) -> None:
        self.records: list[dict[str, Any]] = []
        self.closed = False
        self.fail_on = fail_on

    def write(self, record: Any) -> None:
        if record["request_id"] in self.fail_on:
            raise OSError("disk full")
        self.records.append(dict(record))

    def close(self) -> None:
        self.closed = True


def test_writer_keeps_order_and_closes_sink() -> None:
    sink = ListSink()
    writer = BackgroundWriter(sink)
    for number in range(1000):
        writer.write({"request_id": f"req_{number}"})
    writer.close()

    assert [record["request_id"] for record in sink.records] == [f"req_{n}" for n in range(1000)]
    assert sink.closed is True
    assert writer.pending == 0


def test_writer_survives_a_failed_write() -> None:
    failures: list[None] = []
    sink = ListSink(fail_on=frozenset({"req_2"}))
    writer = BackgroundWriter(sink, on_error=lambda: failures.append(None))
    for number in range(4):
        writer.write({"request_id": f"req_{number}"})
    writer.close()

    assert [record["request_id"] for record in sink.records] == ["req_0", "req_1", "req_3"]
    assert len(failures) == 1


def test_writer_rejects_writes_after_close() -> None:
    failures: list[None] = []
    sink = ListSink()
    writer = BackgroundWriter(sink, on_error=lambda: failures.append(None))
    writer.close()
    writer.write({"request_id": "req_late"})
    writer.close()

    assert sink.records == []
    assert len(failures) == 1


def test_writer_blocks_when_queue_is_full(monkeypatch: pytest.MonkeyPatch) -> None:
    release = threading.Event()
    waiting = threading.Event()

    class StallingSink(ListSink):
        def write(self, record: Any) -> None:
            release.wait()
            super().write(record)

    sink = StallingSink()
    writer = BackgroundWriter(sink, max_pending=2)
    monkeypatch.setattr(writer, "_log_queue_full", waiting.set)

    def produce() -> None:
        for number in range(5):
            writer.write({"request_id": f"req_{number}"})

    producer = threading.Thread(target=produce)
    producer.start()
    # The sink has taken one record and the queue contains two, so a write has to wait.
    assert waiting.wait(10)
    release.set()
    producer.join()
    writer.close()

    assert [record["request_id"] for record in sink.records] == [f"req_{n}" for n in range(5)]


def test_file_sink_failure_counted_in_metrics(tmp_path: Path) -> None:
    from sidecar.metrics import Metrics

    class BrokenSink:
        def write(self, record: Any) -> None:
            raise OSError("disk full")

        def close(self) -> None:
            pass

    sink: AuditSink = BrokenSink()
    metrics = Metrics()
    writer = BackgroundWriter(sink, on_error=metrics.audit_write_failed)
    writer.write({"request_id": "req_1"})
    writer.close()

    assert metrics.audit_write_failures._value.get() == 1
