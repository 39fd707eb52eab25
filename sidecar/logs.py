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
from typing import Any

import structlog

from sidecar.errors import SidecarError

# Keys that could carry prompt text, values or credentials if a call site slipped.
PAYLOAD_KEYS = frozenset(
    {
        "api_key",
        "authorization",
        "body",
        "content",
        "headers",
        "input",
        "messages",
        "prompt",
        "response",
        "text",
        "value",
        "values",
        "x-api-key",
    }
)


def drop_payload_keys(
    logger: Any, method_name: str, event_dict: MutableMapping[str, Any]
) -> MutableMapping[str, Any]:
    for key in PAYLOAD_KEYS.intersection(event_dict):
        event_dict[key] = "[dropped]"
    return event_dict


def configure_logging(log_format: str = "json", level: str = "info") -> None:
    """Configure structlog to write operational logs to stderr."""
    renderer: Any
    if log_format == "console":
        renderer = structlog.dev.ConsoleRenderer(colors=sys.stderr.isatty())
    else:
        renderer = structlog.processors.JSONRenderer()
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.processors.format_exc_info,
            drop_payload_keys,
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(
            logging.getLevelNamesMapping()[level.upper()]
        ),
        logger_factory=structlog.PrintLoggerFactory(file=sys.stderr),
        cache_logger_on_first_use=False,
    )


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
