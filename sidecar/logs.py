"""Operational logging with structlog: JSON or console lines on stderr, never a payload.

Audit records are a separate channel (`sidecar.audit`). Operational logs carry
ids, counts, timings and error types. `drop_payload_keys` is the last
processor before rendering: it removes any key whose name suggests request or
response content, as a second net behind the call sites.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import MutableMapping
from typing import Any, TextIO

import structlog

from sidecar.errors import SidecarError

# Keys that could carry prompt text, values or credentials if a call site slipped.
# Names are compared in lower case with "-" read as "_".
PAYLOAD_KEYS = frozenset(
    {
        "api_key",
        "arguments",
        "authorization",
        "body",
        "chunk",
        "completion",
        "content",
        "cookie",
        "data",
        "document",
        "exception",
        "headers",
        "input",
        "json",
        "match",
        "matches",
        "messages",
        "output",
        "payload",
        "prompt",
        "query",
        "query_string",
        "raw",
        "response",
        "set_cookie",
        "stack",
        "text",
        "texts",
        "url",
        "value",
        "values",
        "x_api_key",
    }
)
DROPPED = "[dropped]"
# Libraries whose DEBUG and INFO records quote the analyzed text: Presidio 2.2 logs the
# words around each finding ("Context list is: ..."). Their WARNING records repeat per
# request ("Entity CARDINAL is not mapped") or per start for every recognizer of another
# language, and tell an operator nothing to act on, so they log at ERROR or above only.
QUIET_LIBRARIES = ("presidio-analyzer", "presidio-anonymizer", "spacy")


def is_payload_key(key: str) -> bool:
    """Return whether a log key of this name could carry request or response content."""
    return key.lower().replace("-", "_") in PAYLOAD_KEYS


def drop_payload_keys(
    logger: Any, method_name: str, event_dict: MutableMapping[str, Any]
) -> MutableMapping[str, Any]:
    """Replace the value of every key that `is_payload_key` matches with "[dropped]"."""
    for key in [key for key in event_dict if is_payload_key(key)]:
        event_dict[key] = DROPPED
    return event_dict


def describe_exc_info(
    logger: Any, method_name: str, event_dict: MutableMapping[str, Any]
) -> MutableMapping[str, Any]:
    """Replace `exc_info` with the exception's type and place, as `describe_exception` does.

    A rendered traceback ends with the exception's message, which may quote request data,
    so no traceback reaches the log.
    """
    exc_info = event_dict.pop("exc_info", None)
    exception = _exception_of(exc_info)
    if exception is not None:
        for key, value in describe_exception(exception).items():
            event_dict.setdefault(key, value)
    return event_dict


def _exception_of(exc_info: Any) -> BaseException | None:
    if isinstance(exc_info, BaseException):
        return exc_info
    if isinstance(exc_info, tuple) and len(exc_info) == 3:
        value = exc_info[1]
        return value if isinstance(value, BaseException) else None
    if exc_info:
        return sys.exc_info()[1]
    return None


def configure_logging(
    log_format: str = "json", level: str = "info", stream: TextIO | None = None
) -> None:
    """Configure structlog, and standard library loggers such as aiohttp's, to write to `stream`.

    `stream` defaults to stderr. Both kinds of log pass `describe_exc_info` and then
    `drop_payload_keys` before rendering.
    """
    stream = stream if stream is not None else sys.stderr
    renderer = _renderer(log_format, stream)
    numeric_level = logging.getLevelNamesMapping()[level.upper()]
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            describe_exc_info,
            drop_payload_keys,
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(numeric_level),
        logger_factory=structlog.PrintLoggerFactory(file=stream),
        cache_logger_on_first_use=False,
    )
    _route_standard_logging(renderer, numeric_level, stream)


def _renderer(log_format: str, stream: TextIO) -> Any:
    if log_format == "console":
        return structlog.dev.ConsoleRenderer(colors=stream.isatty())
    return structlog.processors.JSONRenderer()


def _route_standard_logging(renderer: Any, level: int, stream: TextIO) -> None:
    """Send records of `logging` loggers through the same processors as structlog's."""
    formatter = structlog.stdlib.ProcessorFormatter(
        foreign_pre_chain=[
            structlog.contextvars.merge_contextvars,
            structlog.stdlib.add_log_level,
            structlog.stdlib.add_logger_name,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
        ],
        processors=[
            structlog.stdlib.ProcessorFormatter.remove_processors_meta,
            describe_exc_info,
            drop_payload_keys,
            renderer,
        ],
    )
    handler = logging.StreamHandler(stream)
    handler.setFormatter(formatter)
    root = logging.getLogger()
    root.handlers = [handler]
    root.setLevel(level)
    for name in QUIET_LIBRARIES:
        logging.getLogger(name).setLevel(max(level, logging.ERROR))


def get_logger(name: str) -> Any:
    return structlog.get_logger(name)


def describe_exception(exc: BaseException) -> dict[str, str]:
    """Describe an exception by type and place, without its message.

    Messages of third-party exceptions may quote request data (a `KeyError`
    names its key), so operational logs carry only where and what failed.
    """
    where = ""
    traceback = exc.__traceback__
    while traceback is not None and traceback.tb_next is not None:
        traceback = traceback.tb_next
    if traceback is not None:
        code = traceback.tb_frame.f_code
        where = f"{code.co_filename.rsplit('/', 1)[-1]}:{traceback.tb_lineno} in {code.co_name}"
    described = {"error_type": type(exc).__name__, "error_where": where}
    if isinstance(exc, SidecarError):
        # The project's own messages never quote request data.
        described["error"] = str(exc)
    return described
