"""Audit sinks: JSON lines on standard output, and a hash-chained, append-only file.

`ChainedFileSink` writes each record with one `write(2)` on a file opened with O_APPEND,
so a crash leaves at most one torn last line. On start it finds the last valid record
(see `sidecar.audit.chain.find_resume_point`) and continues the chain from it, writing a
"recover" checkpoint that commits to any torn bytes when the previous writer did not
close the file.

Durability trade-off: every record reaches the kernel before `write` returns, so a crash
of the sidecar process loses nothing that `write` accepted. Only a crash of the machine
can lose records that are not yet on disk. By default the sink calls fsync after each
checkpoint (open, every `checkpoint_every` records, rotation and close), which bounds that
loss to the records since the last checkpoint. `fsync_each_record=True` calls fsync after
every record instead, at the cost of one disk flush per request on the event loop.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import re
import socket
import sys
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from types import TracebackType
from typing import Any, BinaryIO, Protocol, TextIO

from sidecar.audit.chain import (
    GENESIS,
    AuditError,
    ChainHead,
    ChainWriter,
    ResumePoint,
    canonical_json,
    checkpoint_reason,
    find_resume_point,
)
from sidecar.audit.keys import key_id

SCHEMA_VERSION = 1
ROTATED_SEQ_DIGITS = 12
_FILE_MODE = 0o640
_TAIL_WINDOW_BYTES = 64 * 1024


class AuditSink(Protocol):
    """Destination of audit records: `write` takes one record dict, and `close` releases it."""

    def write(self, record: Mapping[str, Any]) -> None: ...

    def close(self) -> None: ...


def format_timestamp(moment: datetime) -> str:
    """Format `moment` as UTC ISO 8601 with milliseconds and a Z: 2026-12-04T19:49:46.123Z."""
    utc = moment.astimezone(UTC)
    return utc.strftime("%Y-%m-%dT%H:%M:%S.") + f"{utc.microsecond // 1000:03d}Z"


def _with_record_type(record: Mapping[str, Any]) -> dict[str, Any]:
    return {"record_type": "request", **record}


class StdoutSink:
    """Write each record as one compact JSON line to standard output and flush it.

    A cluster log shipper collects these lines. The `record_type` field, which defaults to
    "request", distinguishes them from operational log lines.
    """

    def __init__(self, stream: TextIO | None = None) -> None:
        self._stream = stream

    def write(self, record: Mapping[str, Any]) -> None:
        line = canonical_json(_with_record_type(record)).decode("ascii")
        stream = self._stream if self._stream is not None else sys.stdout
        stream.write(line + "\n")
        stream.flush()

    def close(self) -> None:
        stream = self._stream if self._stream is not None else sys.stdout
        stream.flush()


class TeeSink:
    """Write each record to several sinks, even when one of them raises.

    The first error is raised after every sink has had the record.
    """

    def __init__(self, *sinks: AuditSink) -> None:
        self._sinks = sinks

    def write(self, record: Mapping[str, Any]) -> None:
        self._each(lambda sink: sink.write(record))

    def close(self) -> None:
        self._each(lambda sink: sink.close())

    def _each(self, action: Callable[[AuditSink], None]) -> None:
        first_error: Exception | None = None
        for sink in self._sinks:
            try:
                action(sink)
            except Exception as exc:  # re-raised below, after the other sinks ran
                first_error = first_error or exc
        if first_error is not None:
            raise first_error


@dataclass(frozen=True)
class _Start:
    """The point where a newly opened file continues the chain."""

    resume: ResumePoint
    previous_file: str | None


class ChainedFileSink:
    """Append sealed records to `path`, with checkpoints, rotation and crash recovery.

    `key` makes the chain keyed (HMAC-SHA256), and None makes it plain SHA-256.
    `checkpoint_every` writes an "interval" checkpoint and calls fsync after that many
    request records (0 disables interval checkpoints). Once the file reaches
    `rotate_bytes` bytes, the sink renames it to `<name>.<seq of its last record, 12
    digits>` and starts a new file that chains to it. A file may exceed `rotate_bytes` by
    one record and one checkpoint, and None disables rotation. `on_checkpoint` receives
    each checkpoint record after it is on disk, for example to copy the chain head to the
    operational log as an anchor. It runs while the sink's lock is held, so it must not
    call the sink, and its exceptions propagate. `clock` returns the current time for
    checkpoint timestamps.

    One sink may write a file at a time: the constructor takes an exclusive `flock` on
    `.<name>.lock` next to it and raises AuditError if another sink holds it. A lock
    serialises calls, so the sink is safe to use from the asyncio thread and from worker
    threads. Each call blocks for one `write(2)` and, at checkpoints, one fsync. Files are
    created with mode 0640, less the umask.

    Raise AuditError when the file cannot be opened, locked or written, or when its last
    record does not verify with `key`. After a failed write the next `write` first resumes
    the chain from what is on disk.
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        key: bytes | None,
        checkpoint_every: int = 1000,
        rotate_bytes: int | None = None,
        *,
        fsync_each_record: bool = False,
        on_checkpoint: Callable[[dict[str, Any]], None] | None = None,
        clock: Callable[[], datetime] | None = None,
    ) -> None:
        if checkpoint_every < 0:
            raise ValueError(f"checkpoint_every must be 0 or more, got {checkpoint_every}")
        if rotate_bytes is not None and rotate_bytes <= 0:
            raise ValueError(f"rotate_bytes must be positive or None, got {rotate_bytes}")

        self._path = Path(path)
        self._key = key
        self._checkpoint_every = checkpoint_every
        self._rotate_bytes = rotate_bytes
        self._fsync_each_record = fsync_each_record
        self._on_checkpoint = on_checkpoint
        self._clock = clock or (lambda: datetime.now(UTC))

        self._lock = threading.Lock()
        self._fd: int | None = None
        self._writer = ChainWriter(key)
        self._size = 0
        self._since_checkpoint = 0
        self._needs_recovery = False
        self._closed = False

        self._lock_fd = _lock_exclusively(self._lock_path())
        try:
            self._open(self._locate_start())
        except BaseException:
            self._release()
            os.close(self._lock_fd)
            raise

    @property
    def path(self) -> Path:
        return self._path

    @property
    def head(self) -> ChainHead:
        """The seq and hash of the last record written."""
        return self._writer.head

    def write(self, record: Mapping[str, Any]) -> None:
        """Seal `record` into the chain and append it as one line.

        Raise ValueError when the record sets `seq`, `prev_hash` or `hash`, TypeError or
        ValueError when it is not JSON-serialisable (nothing is written then), and
        AuditError when the file cannot be written. An AuditError from the checkpoint or
        rotation that follows the record leaves the record itself on disk.
        """
        with self._lock:
            self._ensure_writable()
            sealed = self._writer.seal(_with_record_type(record))
            self._append(sealed.line)
            if self._fsync_each_record:
                self._fsync()

            self._since_checkpoint += 1
            if self._checkpoint_every and self._since_checkpoint >= self._checkpoint_every:
                self._write_checkpoint("interval", {})
            if self._rotate_bytes is not None and self._size >= self._rotate_bytes:
                self._rotate()

    def close(self) -> None:
        """Write a "close" checkpoint, which seals the file, and close it. Idempotent."""
        with self._lock:
            if self._closed:
                return
            try:
                self._ensure_writable()
                self._write_checkpoint("close", {})
            finally:
                self._closed = True
                self._release()
                os.close(self._lock_fd)

    def __enter__(self) -> ChainedFileSink:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()

    # Opening and resuming

    def _locate_start(self) -> _Start:
        """Find where the chain continues: in this file, or after the newest rotated file.

        A file whose last record is a "rotate" checkpoint was not renamed before a crash,
        so the rename is finished here.
        """
        if self._path.exists() and self._path.stat().st_size > 0:
            resume = self._read_resume_point(self._path)
            if resume.last_record is None:
                return self._start_after_sibling(discarded=resume.discarded)
            if not _ends_with_rotation(resume):
                return _Start(resume, previous_file=None)
            self._rename_rotated(self._rotated_path(resume.head.seq))
        return self._start_after_sibling(discarded=b"")

    def _start_after_sibling(self, discarded: bytes) -> _Start:
        sibling = self._newest_rotated_file()
        if sibling is None:
            resume = ResumePoint(GENESIS, None, unterminated=False, discarded=discarded)
            return _Start(resume, previous_file=None)

        previous = self._read_resume_point(sibling)
        if previous.last_record is None or previous.unterminated or previous.discarded:
            raise AuditError(
                f"{sibling}: the rotated file does not end with a complete record. "
                "Run `pii-sidecar audit verify` on it"
            )
        resume = ResumePoint(
            previous.head, previous.last_record, unterminated=False, discarded=discarded
        )
        return _Start(resume, previous_file=sibling.name)

    def _newest_rotated_file(self) -> Path | None:
        pattern = re.compile(re.escape(self._path.name) + rf"\.(\d{{{ROTATED_SEQ_DIGITS}}})")
        candidates = [
            (int(match.group(1)), entry)
            for entry in self._path.parent.iterdir()
            if (match := pattern.fullmatch(entry.name))
        ]
        return max(candidates)[1] if candidates else None

    def _read_resume_point(self, path: Path) -> ResumePoint:
        try:
            with path.open("rb") as file:
                return _scan_tail(file, path, self._key)
        except OSError as exc:
            raise AuditError(f"{path}: cannot read the audit file: {exc.strerror}") from exc

    def _open(self, start: _Start) -> None:
        self._open_descriptor()
        self._writer = ChainWriter(self._key, start.resume.head)

        prefix, discarded = _separators(start.resume)
        details: dict[str, Any] = {}
        if start.previous_file is not None:
            details["previous_file"] = start.previous_file
        reason = "open" if _closed_cleanly(start.resume) else "recover"
        if reason == "recover":
            details["discarded_bytes"] = len(discarded)
            details["discarded_sha256"] = hashlib.sha256(discarded).hexdigest()
        self._write_checkpoint(reason, details, prefix=prefix)

    def _open_descriptor(self) -> None:
        created = not self._path.exists()
        flags = os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC
        try:
            fd = os.open(self._path, flags, _FILE_MODE)
        except OSError as exc:
            raise AuditError(f"{self._path}: cannot open the audit file: {exc.strerror}") from exc

        self._fd = fd
        self._size = os.fstat(fd).st_size
        if created:
            self._fsync_directory()

    # Writing

    def _ensure_writable(self) -> None:
        if self._closed:
            raise AuditError(f"{self._path}: the audit sink is closed")
        if self._needs_recovery:
            self._release()
            self._open(self._locate_start())
            self._needs_recovery = False

    def _write_checkpoint(
        self, reason: str, details: Mapping[str, Any], prefix: bytes = b""
    ) -> dict[str, Any]:
        record = {
            "schema_version": SCHEMA_VERSION,
            "record_type": "checkpoint",
            "timestamp": format_timestamp(self._clock()),
            "checkpoint": {
                "reason": reason,
                "key_id": key_id(self._key) if self._key is not None else None,
                "pid": os.getpid(),
                "host": socket.gethostname(),
                **details,
            },
        }
        sealed = self._writer.seal(record)
        self._append(prefix + sealed.line)
        self._fsync()
        self._since_checkpoint = 0

        written: dict[str, Any] = json.loads(sealed.line)
        if self._on_checkpoint is not None:
            self._on_checkpoint(written)
        return written

    def _append(self, data: bytes) -> None:
        assert self._fd is not None
        view = memoryview(data)
        try:
            while view:
                written = os.write(self._fd, view)
                view = view[written:]
                self._size += written
        except OSError as exc:
            self._needs_recovery = True
            raise AuditError(
                f"{self._path}: writing the audit record failed: {exc.strerror}"
            ) from exc

    def _fsync(self) -> None:
        assert self._fd is not None
        try:
            os.fsync(self._fd)
        except OSError as exc:
            self._needs_recovery = True
            raise AuditError(
                f"{self._path}: fsync of the audit file failed: {exc.strerror}"
            ) from exc

    def _fsync_directory(self) -> None:
        fd = os.open(self._path.parent, os.O_RDONLY | os.O_DIRECTORY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)

    def _release(self) -> None:
        if self._fd is not None:
            fd, self._fd = self._fd, None
            os.close(fd)

    # Rotation

    def _rotate(self) -> None:
        rotated = self._rotated_path(self._writer.head.seq + 1)
        checkpoint = self._write_checkpoint("rotate", {"renamed_to": rotated.name})

        # Until the new file is open, a failure leaves no usable descriptor, and the next
        # write resumes from the files on disk, finishing the rename if needed.
        self._needs_recovery = True
        self._release()
        self._rename_rotated(rotated)
        resume = ResumePoint(self._writer.head, checkpoint, unterminated=False, discarded=b"")
        self._open(_Start(resume, previous_file=rotated.name))
        self._needs_recovery = False

    def _lock_path(self) -> Path:
        return self._path.with_name(f".{self._path.name}.lock")

    def _rotated_path(self, seq: int) -> Path:
        return self._path.with_name(f"{self._path.name}.{seq:0{ROTATED_SEQ_DIGITS}d}")

    def _rename_rotated(self, target: Path) -> None:
        if target.exists():
            raise AuditError(
                f"{target}: cannot rotate the audit file, because this file exists already"
            )
        try:
            os.rename(self._path, target)
        except OSError as exc:
            raise AuditError(
                f"{self._path}: renaming the audit file to {target.name} failed: {exc.strerror}"
            ) from exc
        self._fsync_directory()


def _lock_exclusively(path: Path) -> int:
    """Open `path` and take an exclusive `flock` on it, held until the descriptor closes."""
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, _FILE_MODE)
    except OSError as exc:
        raise AuditError(f"{path}: cannot open the audit lock file: {exc.strerror}") from exc
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as exc:
        os.close(fd)
        raise AuditError(f"{path}: another process is writing this audit file") from exc
    return fd


def _ends_with_rotation(resume: ResumePoint) -> bool:
    if resume.unterminated or resume.discarded or resume.last_record is None:
        return False
    return checkpoint_reason(resume.last_record) == "rotate"


def _closed_cleanly(resume: ResumePoint) -> bool:
    if resume.unterminated or resume.discarded:
        return False
    if resume.last_record is None:
        return True
    return checkpoint_reason(resume.last_record) in {"close", "rotate"}


def _separators(resume: ResumePoint) -> tuple[bytes, bytes]:
    """Return the bytes to write before the first checkpoint, and the discarded bytes it states.

    An unterminated last record gets its newline. Torn bytes get a newline too, which then
    counts as discarded, so that a verifier reads whole lines before the checkpoint.
    """
    if resume.unterminated:
        return b"\n", b""
    if resume.discarded and not resume.discarded.endswith(b"\n"):
        return b"\n", resume.discarded + b"\n"
    return b"", resume.discarded


def _scan_tail(file: BinaryIO, path: Path, key: bytes | None) -> ResumePoint:
    """Read ever larger windows from the end of `file` until one contains a valid record."""
    size = file.seek(0, os.SEEK_END)
    window = _TAIL_WINDOW_BYTES
    while True:
        start = max(0, size - window)
        file.seek(start)
        try:
            resume = find_resume_point(file.read(size - start), whole_file=start == 0, key=key)
        except AuditError as exc:
            raise AuditError(
                f"{path}: {exc}. Run `pii-sidecar audit verify` on it, "
                "and move it aside to start a new chain"
            ) from exc
        if resume is not None:
            return resume
        window *= 4
