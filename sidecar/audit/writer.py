"""A writer thread in front of an audit sink, which takes disk and pipe writes off the event loop.

`BackgroundWriter.write` puts a record on a queue and returns. One thread takes records
off the queue in order and passes them to the sink, which does the JSON encoding, the
hashing, the `write(2)` and any fsync. `close` lets the thread write every queued record
and then closes the sink, which writes the file sink's closing checkpoint.

When the queue contains `max_pending` records, because the disk or the reader of stdout
stalls, `write` blocks the caller until the thread catches up. On the event loop this
stalls every request: the sidecar slows down rather than lose audit records.
"""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Callable, Mapping
from typing import Any

from sidecar.audit.chain import AuditError
from sidecar.audit.sink import AuditSink
from sidecar.logs import describe_exception, get_logger

log = get_logger("sidecar.audit")

DEFAULT_MAX_PENDING = 10_000
_QUEUE_FULL_LOG_INTERVAL_SECONDS = 10.0
_STOP = object()

ErrorHook = Callable[[], None]


class BackgroundWriter:
    """A thread of its own that passes records to `sink` in the order `write` received them.

    A record the sink fails to write is logged with its request id and the error type, and
    `on_error` is called, then the thread goes on with the next record. `close` is
    idempotent, and a `write` after it is logged as an error and dropped.
    """

    def __init__(
        self,
        sink: AuditSink,
        *,
        max_pending: int = DEFAULT_MAX_PENDING,
        on_error: ErrorHook | None = None,
    ) -> None:
        if max_pending < 1:
            raise ValueError(f"max_pending must be at least 1, got {max_pending}")
        self._sink = sink
        self._on_error = on_error
        self._queue: queue.Queue[object] = queue.Queue(maxsize=max_pending)
        self._closed = False
        self._close_lock = threading.Lock()
        self._waits_since_log = 0
        self._last_wait_log = 0.0
        self._thread = threading.Thread(target=self._run, name="audit-writer", daemon=True)
        self._thread.start()

    @property
    def pending(self) -> int:
        """The number of records waiting for the thread."""
        return self._queue.qsize()

    def write(self, record: Mapping[str, Any]) -> None:
        """Queue `record` for the sink; block only while the queue is full."""
        with self._close_lock:
            closed = self._closed
            if not closed:
                try:
                    self._queue.put_nowait(record)
                    return
                except queue.Full:
                    pass
        if closed:
            self._report_failure(record, "audit_write_after_close", None)
            return
        self._log_queue_full()
        self._queue.put(record)

    def close(self) -> None:
        """Write every queued record, then close the sink. Blocks until both are done."""
        with self._close_lock:
            if self._closed:
                return
            self._closed = True
        self._queue.put(_STOP)
        self._thread.join()
        try:
            self._sink.close()
        except (AuditError, OSError) as exc:
            log.error("audit_sink_close_failed", **describe_exception(exc))
            if self._on_error is not None:
                self._on_error()

    def _run(self) -> None:
        while True:
            item = self._queue.get()
            if item is _STOP:
                break
            self._write_one(item)
        # A write that found the queue full may have queued its record after the stop mark.
        while True:
            try:
                item = self._queue.get_nowait()
            except queue.Empty:
                return
            self._write_one(item)

    def _write_one(self, record: object) -> None:
        assert isinstance(record, Mapping)
        try:
            self._sink.write(record)
        except Exception as exc:  # logged and counted; the thread must go on
            self._report_failure(record, "audit_write_failed", exc)

    def _report_failure(self, record: Mapping[str, Any], event: str, exc: Exception | None) -> None:
        details = describe_exception(exc) if exc is not None else {}
        log.error(event, request_id=record.get("request_id"), **details)
        if self._on_error is not None:
            self._on_error()

    def _log_queue_full(self) -> None:
        self._waits_since_log += 1
        now = time.monotonic()
        if now - self._last_wait_log < _QUEUE_FULL_LOG_INTERVAL_SECONDS:
            return
        log.warning(
            "audit_queue_full",
            max_pending=self._queue.maxsize,
            waits=self._waits_since_log,
            interval_seconds=_QUEUE_FULL_LOG_INTERVAL_SECONDS,
        )
        self._waits_since_log = 0
        self._last_wait_log = now
