"""Operational logs: JSON on stderr, request ids, and no payload even when a call site slips."""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Iterator
from contextlib import contextmanager

import pytest
import structlog

from sidecar.errors import InvalidBody
from sidecar.logs import (
    DROPPED,
    configure_logging,
    describe_exc_info,
    describe_exception,
    drop_payload_keys,
    get_logger,
    is_payload_key,
)

CANARY = "Canaryfirst Canarylast canary.leak@example.com"


@contextmanager
def logging_to(
    stream: io.StringIO, log_format: str = "json", level: str = "debug"
) -> Iterator[None]:
    """Configure logging as `serve` does, and restore structlog and the root logger afterwards."""
    root = logging.getLogger()
    handlers, root_level = root.handlers[:], root.level
    configure_logging(log_format, level, stream)
    try:
        yield
    finally:
        structlog.reset_defaults()
        root.handlers, root.level = handlers, root_level


@pytest.fixture
def stderr() -> Iterator[io.StringIO]:
    """A stream in place of stderr, with logging configured to write JSON lines to it."""
    stream = io.StringIO()
    with logging_to(stream):
        yield stream


def json_lines(text: str) -> list[dict[str, object]]:
    return [json.loads(line) for line in text.splitlines() if line.strip()]


@pytest.mark.parametrize(
    "key",
    [
        "body",
        "content",
        "messages",
        "prompt",
        "Authorization",
        "x-api-key",
        "X_API_KEY",
        "headers",
        "exception",
        "query_string",
        "arguments",
    ],
)
def test_payload_key_values_dropped(key: str) -> None:
    event = drop_payload_keys(None, "info", {"event": "x", key: CANARY})

    assert event[key] == DROPPED


@pytest.mark.parametrize(
    "key",
    ["event", "request_id", "status", "code", "error_type", "error_where", "upstream", "model"],
)
def test_operational_keys_kept(key: str) -> None:
    assert not is_payload_key(key)


def test_json_lines_with_request_id(stderr: io.StringIO) -> None:
    structlog.contextvars.bind_contextvars(request_id="req_1")
    try:
        get_logger("sidecar.test").info("request_rejected", status=400, body=CANARY)
    finally:
        structlog.contextvars.unbind_contextvars("request_id")
    (line,) = json_lines(stderr.getvalue())

    assert line["event"] == "request_rejected"
    assert line["request_id"] == "req_1"
    assert line["level"] == "info"
    assert line["body"] == DROPPED
    assert CANARY not in stderr.getvalue()


def test_exception_message_never_logged(stderr: io.StringIO) -> None:
    try:
        raise KeyError(CANARY)
    except KeyError:
        get_logger("sidecar.test").exception("request_failed")
    err = stderr.getvalue()
    (line,) = json_lines(err)

    assert CANARY not in err
    assert line["error_type"] == "KeyError"
    assert "test_logs.py" in str(line["error_where"])
    assert "exception" not in line


def test_standard_library_records_rendered_as_json(stderr: io.StringIO) -> None:
    try:
        raise ValueError(CANARY)
    except ValueError:
        logging.getLogger("aiohttp.server").error("Error handling request", exc_info=True)
    err = stderr.getvalue()
    (line,) = json_lines(err)

    assert CANARY not in err
    assert line["event"] == "Error handling request"
    assert line["logger"] == "aiohttp.server"
    assert line["level"] == "error"
    assert line["error_type"] == "ValueError"


def test_level_filters_standard_library() -> None:
    stream = io.StringIO()
    with logging_to(stream, level="warning"):
        logging.getLogger("presidio-analyzer").info("loading recognizers")
        get_logger("sidecar.test").info("sidecar_ready")
        get_logger("sidecar.test").warning("audit_queue_full")
    events = [line["event"] for line in json_lines(stream.getvalue())]

    assert events == ["audit_queue_full"]


def test_console_format_renders_without_payload() -> None:
    stream = io.StringIO()
    with logging_to(stream, log_format="console", level="info"):
        get_logger("sidecar.test").info("request_rejected", prompt=CANARY)
    err = stream.getvalue()

    assert "request_rejected" in err
    assert CANARY not in err


def test_describe_exception_keeps_own_messages_only() -> None:
    own = describe_exception(InvalidBody("messages must be a list"))
    foreign = describe_exception(ValueError(CANARY))

    assert own["error"] == "messages must be a list"
    assert "error" not in foreign
    assert foreign["error_type"] == "ValueError"


def test_exc_info_true_outside_handler_is_removed() -> None:
    event = describe_exc_info(None, "error", {"event": "x", "exc_info": True})

    assert "exc_info" not in event
    assert "error_type" not in event


def test_capture_logs_records_call_keys() -> None:
    with structlog.testing.capture_logs() as logs:
        get_logger("sidecar.test").info("request_rejected", request_id="req_9", code="invalid_body")

    assert logs == [
        {
            "event": "request_rejected",
            "request_id": "req_9",
            "code": "invalid_body",
            "log_level": "info",
        }
    ]


def test_presidio_debug_text_not_logged() -> None:
    stream = io.StringIO()
    with logging_to(stream, level="debug"):
        logging.getLogger("presidio-analyzer").debug("Context list is: %s", CANARY)
        logging.getLogger("presidio-analyzer").warning("Entity CARDINAL is not mapped")
        logging.getLogger("presidio-analyzer").error("Failed to load recognizer")
        get_logger("sidecar.test").debug("detector_loaded")
    # Other libraries may log at DEBUG meanwhile (httpcore closing a pooled
    # connection), so only the records of this test are compared.
    ours = {"Context list is: " + CANARY, "Entity CARDINAL is not mapped", "Failed to load recognizer",
            "detector_loaded"}
    events = [line["event"] for line in json_lines(stream.getvalue()) if line["event"] in ours]

    assert events == ["Failed to load recognizer", "detector_loaded"]
    assert CANARY not in stream.getvalue()
