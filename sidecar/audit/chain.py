"""Hash chain of audit records: sealing records into JSON lines and verifying chained files.

A sealed record is one line of canonical JSON (sorted keys, no spaces, ASCII only) that
carries three fields besides the record's own:

    seq        the record's position in the chain, 0 for the first record ever written
    prev_hash  the `hash` of the record before it, null only for seq 0
    hash       "sha256:<hex>", or "hmac-sha256:<hex>" when the chain is keyed, computed
               over the canonical JSON of the record without its `hash` field

Editing a byte changes the record's hash (or makes the line non-canonical), and deleting,
inserting or reordering a line breaks the `prev_hash` link of the line after it. Anyone can
recompute an unkeyed chain after an edit, so only a keyed chain (HMAC-SHA256) proves that
nobody without the key rewrote it. A chain alone cannot show that whole records were cut
from the end of the last file: the closing checkpoint and anchors (see `ChainVerifier`)
cover that case.

Bytes that are not a JSON object, such as the torn last line of a write cut short by a
crash, are accepted inside a file only when the next record is a "recover" checkpoint that
states their length and SHA-256. The file sink writes that checkpoint when it resumes.

Nothing here touches files: `ChainWriter` turns records into lines, `ChainVerifier` is fed
bytes, and `find_resume_point` reads the tail of a file that the caller loaded.
"""

from __future__ import annotations

import enum
import hashlib
import hmac
import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from sidecar.audit.keys import key_id
from sidecar.errors import SidecarError

CHAIN_FIELDS = frozenset({"seq", "prev_hash", "hash"})
CHECKPOINT_TYPE = "checkpoint"
SEALING_REASONS = frozenset({"close"})
UNKEYED_PREFIX = "sha256:"
KEYED_PREFIX = "hmac-sha256:"


class AuditError(SidecarError):
    """Error raised when an audit file cannot be written, continued or read."""


class RecordError(ValueError):
    """Error for a line that is a JSON object but not a valid sealed record.

    The message names the check that failed.
    """


class KeyRequiredError(RecordError):
    """Error for a record of a keyed chain checked without a key."""


@dataclass(frozen=True)
class ChainHead:
    """The last record of a chain: its `seq` (-1 before the first record) and `hash`."""

    seq: int
    hash: str | None


GENESIS = ChainHead(seq=-1, hash=None)


def canonical_json(value: Mapping[str, Any]) -> bytes:
    """Serialise `value` as canonical JSON: sorted keys, no spaces, ASCII, no NaN.

    Raise TypeError or ValueError when a value is not JSON-serialisable.
    """
    text = json.dumps(
        value, sort_keys=True, separators=(",", ":"), ensure_ascii=True, allow_nan=False
    )
    return text.encode("ascii")


def record_hash(body: bytes, key: bytes | None) -> str:
    """Return the chain hash of `body`: SHA-256, or HMAC-SHA256 when `key` is given."""
    if key is None:
        return UNKEYED_PREFIX + hashlib.sha256(body).hexdigest()
    return KEYED_PREFIX + hmac.new(key, body, hashlib.sha256).hexdigest()


def checkpoint_reason(record: Mapping[str, Any]) -> str | None:
    """Return the `checkpoint.reason` of a checkpoint record, or None for other records."""
    if record.get("record_type") != CHECKPOINT_TYPE:
        return None
    details = record.get("checkpoint")
    if not isinstance(details, dict):
        return None
    reason = details.get("reason")
    return reason if isinstance(reason, str) else None


@dataclass(frozen=True)
class SealedRecord:
    """A record as written: its line (ending in a newline), `seq` and `hash`."""

    line: bytes
    seq: int
    hash: str


class ChainWriter:
    """Writer that seals records into chained JSON lines, without any I/O."""

    def __init__(self, key: bytes | None, head: ChainHead = GENESIS) -> None:
        self._key = key
        self._head = head

    @property
    def head(self) -> ChainHead:
        return self._head

    def seal(self, record: Mapping[str, Any]) -> SealedRecord:
        """Add `seq`, `prev_hash` and `hash` to a copy of `record` and advance the head.

        Raise ValueError when `record` already has one of those fields, and TypeError or
        ValueError when it is not JSON-serialisable. The head does not move on an error.
        """
        reserved = CHAIN_FIELDS & record.keys()
        if reserved:
            raise ValueError(f"an audit record must not set the chain fields {sorted(reserved)}")

        seq = self._head.seq + 1
        body = {**record, "seq": seq, "prev_hash": self._head.hash}
        digest = record_hash(canonical_json(body), self._key)
        line = canonical_json({**body, "hash": digest}) + b"\n"

        self._head = ChainHead(seq=seq, hash=digest)
        return SealedRecord(line=line, seq=seq, hash=digest)


def parse_line(raw: bytes) -> dict[str, Any] | None:
    """Parse one line (without its newline) and return it if it is a JSON object, else None."""
    try:
        value = json.loads(raw)
    except (UnicodeDecodeError, ValueError):
        return None
    return value if isinstance(value, dict) else None


def check_sealed(record: Mapping[str, Any], raw: bytes, key: bytes | None) -> None:
    """Raise RecordError unless `record`, parsed from the line `raw`, is a valid sealed record.

    The line must be canonical JSON, `seq` a non-negative integer, `prev_hash` a string or
    null, and `hash` must match the record under `key` with the algorithm that `key` implies.
    This checks one record alone. `ChainVerifier` checks the links between records.
    """
    if raw != canonical_json(record):
        raise RecordError("the line is not in canonical JSON form, so it was edited")

    seq = record.get("seq")
    if type(seq) is not int or seq < 0:
        raise RecordError(f"seq is missing or not a non-negative integer (got {seq!r})")
    prev_hash = record.get("prev_hash")
    if prev_hash is not None and not isinstance(prev_hash, str):
        raise RecordError(f"prev_hash must be a string or null (got {type(prev_hash).__name__})")
    digest = record.get("hash")
    if not isinstance(digest, str):
        raise RecordError("hash is missing")

    _check_algorithm(digest, key)
    body = canonical_json({name: value for name, value in record.items() if name != "hash"})
    if not hmac.compare_digest(digest, record_hash(body, key)):
        raise RecordError(_mismatch_reason(record, key))


def _check_algorithm(digest: str, key: bytes | None) -> None:
    if key is None and digest.startswith(KEYED_PREFIX):
        raise KeyRequiredError("the record is keyed (hmac-sha256), so verifying it needs the key")
    if key is not None and not digest.startswith(KEYED_PREFIX):
        raise RecordError(
            "the record is not keyed, but a key was given: the chain was rewritten without the key"
        )
    if key is None and not digest.startswith(UNKEYED_PREFIX):
        raise RecordError(f"hash has an unknown algorithm prefix: {digest.split(':', 1)[0]!r}")


def _mismatch_reason(record: Mapping[str, Any], key: bytes | None) -> str:
    details = record.get("checkpoint")
    written_with = details.get("key_id") if isinstance(details, dict) else None
    if key is not None and isinstance(written_with, str) and written_with != key_id(key):
        return (
            f"hash does not match: the record was written with key id {written_with}, "
            f"but the given key has key id {key_id(key)}"
        )
    return "hash does not match the record's content: the record was edited, or the key is wrong"


@dataclass(frozen=True)
class ResumePoint:
    """The position where a writer continues a file: the last valid record and the bytes after it.

    `unterminated` means the last record lacks its newline. `discarded` are the bytes after
    the last record's line that form no record (a torn write), which the writer must commit
    to in a "recover" checkpoint. `last_record` is None when the file contains no record.
    """

    head: ChainHead
    last_record: dict[str, Any] | None
    unterminated: bool
    discarded: bytes


def find_resume_point(window: bytes, whole_file: bool, key: bytes | None) -> ResumePoint | None:
    """Find the last valid record in `window`, the last bytes of a file.

    Return None when the window contains no complete valid record and is not the whole
    file, so that the caller retries with a larger window. Raise AuditError when a line
    is a JSON object but fails `check_sealed`, because continuing after it would extend a
    chain that does not verify.
    """
    start = 0
    if not whole_file:
        first_newline = window.find(b"\n")
        if first_newline == -1:
            return None
        start = first_newline + 1
    segment = window[start:]

    last_newline = segment.rfind(b"\n")
    tail = segment[last_newline + 1 :]
    record = _parse_resumable(tail, key)
    if record is not None:
        return ResumePoint(_head_of(record), record, unterminated=True, discarded=b"")

    end = last_newline
    while end >= 0:
        begin = segment.rfind(b"\n", 0, end) + 1
        record = _parse_resumable(segment[begin:end], key)
        if record is not None:
            return ResumePoint(
                _head_of(record), record, unterminated=False, discarded=segment[end + 1 :]
            )
        end = begin - 1

    if whole_file:
        return ResumePoint(GENESIS, None, unterminated=False, discarded=segment)
    return None


def _parse_resumable(raw: bytes, key: bytes | None) -> dict[str, Any] | None:
    if not raw:
        return None
    record = parse_line(raw)
    if record is None:
        return None
    try:
        check_sealed(record, raw, key)
    except RecordError as exc:
        raise AuditError(f"the last record does not verify: {exc}") from exc
    return record


def _head_of(record: Mapping[str, Any]) -> ChainHead:
    return ChainHead(seq=record["seq"], hash=record["hash"])


@dataclass(frozen=True)
class Location:
    """A line of an audit file. `line` counts from 1."""

    file: str
    line: int

    def __str__(self) -> str:
        return f"{self.file}:{self.line}"


@dataclass(frozen=True)
class ChainBreak:
    """The first record that does not verify, and why.

    `key_required` marks a keyed chain checked without a key, and `missing_start` a chain
    whose first record is not seq 0. In both cases the files may well be intact.
    """

    location: Location
    seq: int | None
    reason: str
    key_required: bool = False
    missing_start: bool = False


@dataclass(frozen=True)
class TornTail:
    """Bytes at the end of the chain that form no record, starting at `location`."""

    location: Location
    size: int


class ChainStatus(enum.Enum):
    SEALED = "sealed"  # intact, and the last record is a closing checkpoint
    OPEN = "open"  # intact, but the writer is still running, crashed, or lines were cut off
    TORN = "torn"  # intact up to bytes at the end that form no record
    BROKEN = "broken"  # a record was edited, deleted, inserted or reordered
    EMPTY = "empty"  # no record at all


@dataclass(frozen=True)
class Verification:
    """The result of verifying a chain across one or more files."""

    status: ChainStatus
    files: tuple[str, ...]
    records: int
    first_seq: int | None
    head: ChainHead
    chain_break: ChainBreak | None
    torn: TornTail | None
    recoveries: tuple[int, ...]
    anchors_checked: int


class ChainVerifier:
    """Verify a hash chain fed as bytes, file by file, in chain order.

    Call `start_file`, `feed` any number of chunks, `end_file`, and after the last file
    `result`. Verification stops at the first broken record.

    `allow_partial` accepts a chain whose first record is not seq 0, for example after
    older rotated files were deleted. That first record is then trusted as given.
    `anchors` maps seqs to hashes copied out of the file earlier (from checkpoints sent to
    another log): each must appear in the chain, which detects records cut from the end
    and, for an unkeyed chain, a rewrite.
    """

    def __init__(
        self,
        key: bytes | None = None,
        *,
        allow_partial: bool = False,
        anchors: Mapping[int, str] | None = None,
    ) -> None:
        self._key = key
        self._allow_partial = allow_partial
        self._pending_anchors = dict(anchors or {})
        self._anchors_checked = 0

        self._files: list[str] = []
        self._file = ""
        self._line = 0
        self._buffer = bytearray()

        self._head = GENESIS
        self._head_location: Location | None = None
        self._first_seq: int | None = None
        self._records = 0
        self._sealed = False
        self._recoveries: list[int] = []
        self._discarded: bytearray | None = None
        self._discarded_at: Location | None = None
        self._break: ChainBreak | None = None

    def start_file(self, name: str) -> None:
        """Begin the next file of the chain. `name` appears in locations."""
        if self._discarded is not None and self._discarded_at is not None and self._break is None:
            self._fail(
                self._discarded_at,
                None,
                f"{len(self._discarded)} bytes here form no record, "
                f"but another file ({name}) follows",
            )
        self._files.append(name)
        self._file = name
        self._line = 0
        self._buffer.clear()

    def feed(self, data: bytes) -> None:
        """Verify every complete line in `data`, and keep a trailing partial line for later."""
        if self._break is not None:
            return
        self._buffer += data
        start = 0
        while self._break is None:
            newline = self._buffer.find(b"\n", start)
            if newline == -1:
                break
            self._line += 1
            self._check_line(bytes(self._buffer[start:newline]))
            start = newline + 1
        del self._buffer[:start]

    def end_file(self) -> None:
        """Finish the current file: a last line without a newline is a torn tail."""
        if self._break is not None or not self._buffer:
            return
        self._line += 1
        self._start_discard(Location(self._file, self._line))
        assert self._discarded is not None
        self._discarded += self._buffer
        self._buffer.clear()

    def result(self) -> Verification:
        """Return the verification of everything fed so far."""
        self._check_remaining_anchors()
        return Verification(
            status=self._status(),
            files=tuple(self._files),
            records=self._records,
            first_seq=self._first_seq,
            head=self._head,
            chain_break=self._break,
            torn=self._torn_tail(),
            recoveries=tuple(self._recoveries),
            anchors_checked=self._anchors_checked,
        )

    def _status(self) -> ChainStatus:
        if self._break is not None:
            return ChainStatus.BROKEN
        if self._discarded is not None:
            return ChainStatus.TORN
        if self._records == 0:
            return ChainStatus.EMPTY
        return ChainStatus.SEALED if self._sealed else ChainStatus.OPEN

    def _torn_tail(self) -> TornTail | None:
        if self._break is not None or self._discarded is None or self._discarded_at is None:
            return None
        return TornTail(self._discarded_at, len(self._discarded))

    def _check_line(self, raw: bytes) -> None:
        location = Location(self._file, self._line)
        record = parse_line(raw)
        if record is None:
            self._start_discard(location)
            assert self._discarded is not None
            self._discarded += raw + b"\n"
            return

        seq = record.get("seq")
        known_seq = seq if type(seq) is int else None
        try:
            check_sealed(record, raw, self._key)
        except RecordError as exc:
            key_required = isinstance(exc, KeyRequiredError)
            self._fail(location, known_seq, str(exc), key_required=key_required)
            return

        steps = (self._check_discarded, self._check_link, self._check_anchor)
        for step in steps:
            step(record, location)
            if self._break is not None:
                return
        self._advance(record, location)

    def _start_discard(self, location: Location) -> None:
        if self._discarded is None:
            self._discarded = bytearray()
            self._discarded_at = location

    def _check_discarded(self, record: Mapping[str, Any], location: Location) -> None:
        details = record.get("checkpoint") if checkpoint_reason(record) == "recover" else None
        claimed_size = details.get("discarded_bytes", 0) if isinstance(details, dict) else 0
        claimed_digest = details.get("discarded_sha256") if isinstance(details, dict) else None

        if self._discarded is None:
            if claimed_size:
                self._fail(
                    location,
                    record["seq"],
                    f"the record states {claimed_size} discarded bytes before it, "
                    "but there are none",
                )
            return

        assert self._discarded_at is not None
        if details is None:
            self._fail(
                self._discarded_at,
                None,
                f"this line is no JSON record, and the record at {location} "
                "does not account for it",
            )
            return
        actual_digest = hashlib.sha256(self._discarded).hexdigest()
        if claimed_size != len(self._discarded) or claimed_digest != actual_digest:
            self._fail(
                self._discarded_at,
                None,
                f"these {len(self._discarded)} bytes form no record and differ from the "
                f"{claimed_size} discarded bytes that the recover checkpoint at {location} states",
            )
            return
        self._discarded = None
        self._discarded_at = None

    def _check_link(self, record: Mapping[str, Any], location: Location) -> None:
        seq: int = record["seq"]
        prev_hash: str | None = record["prev_hash"]

        if self._head_location is None:
            self._check_first(seq, prev_hash, location)
            return
        if prev_hash != self._head.hash:
            self._fail(
                location,
                seq,
                "prev_hash does not match the hash of the record before it "
                f"({self._head_location}, seq {self._head.seq}): "
                "a record was deleted, inserted or moved here, "
                "or the record before it was edited",
            )
        elif seq != self._head.seq + 1:
            self._fail(
                location,
                seq,
                f"seq {seq} follows seq {self._head.seq}; expected {self._head.seq + 1}",
            )

    def _check_first(self, seq: int, prev_hash: str | None, location: Location) -> None:
        if seq == 0 and prev_hash is None:
            return
        if seq == 0:
            self._fail(location, seq, "seq 0 starts the chain, so its prev_hash must be null")
        elif prev_hash is None:
            self._fail(
                location,
                seq,
                f"prev_hash is null, but only seq 0 may start a chain (got seq {seq})",
            )
        elif not self._allow_partial:
            self._fail(
                location,
                seq,
                f"the chain starts at seq {seq}, not 0: the records before it are missing. "
                "Verify the earlier files too, "
                "or allow a partial chain if they were deleted on purpose",
                missing_start=True,
            )

    def _check_anchor(self, record: Mapping[str, Any], location: Location) -> None:
        seq: int = record["seq"]
        expected = self._pending_anchors.pop(seq, None)
        if expected is None:
            return
        if not hmac.compare_digest(expected, record["hash"]):
            self._fail(
                location,
                seq,
                f"hash differs from the anchor given for seq {seq}: the chain was rewritten",
            )
            return
        self._anchors_checked += 1

    def _check_remaining_anchors(self) -> None:
        if self._break is not None or not self._pending_anchors:
            return
        seq = min(self._pending_anchors)
        location = Location(self._file, self._line)
        if self._first_seq is not None and seq < self._first_seq:
            reason = (
                f"the anchor for seq {seq} lies before the first record verified "
                f"(seq {self._first_seq})"
            )
        else:
            reason = (
                f"the chain ends at seq {self._head.seq}, before the anchor for seq {seq}: "
                "records were removed from the end"
            )
        self._fail(location, None, reason)

    def _advance(self, record: Mapping[str, Any], location: Location) -> None:
        reason = checkpoint_reason(record)
        if reason == "recover":
            self._recoveries.append(record["seq"])
        if self._first_seq is None:
            self._first_seq = record["seq"]
        self._head = _head_of(record)
        self._head_location = location
        self._records += 1
        self._sealed = reason in SEALING_REASONS

    def _fail(
        self,
        location: Location,
        seq: int | None,
        reason: str,
        *,
        key_required: bool = False,
        missing_start: bool = False,
    ) -> None:
        if self._break is None:
            self._break = ChainBreak(location, seq, reason, key_required, missing_start)
