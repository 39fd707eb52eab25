"""Tests of the audit hash chain, the chained file sink and `pii-sidecar audit verify`."""

from __future__ import annotations

import io
import itertools
import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from sidecar.audit import cli
from sidecar.audit.chain import (
    AuditError,
    ChainHead,
    ChainStatus,
    ChainVerifier,
    ChainWriter,
    Verification,
    canonical_json,
)
from sidecar.audit.sink import ChainedFileSink, StdoutSink, TeeSink, format_timestamp

KEY = b"0123456789abcdef0123456789abcdef"
OTHER_KEY = b"fedcba9876543210fedcba9876543210"
REPO = Path(__file__).resolve().parent.parent


def request_record(index: int) -> dict[str, Any]:
    """An audit record shaped like the ones the proxy writes."""
    return {
        "schema_version": 1,
        "timestamp": f"2026-12-04T19:{index // 60 % 60:02d}:{index % 60:02d}.123Z",
        "request_id": f"req-{index:04d}",
        "route": "/v1/chat/completions",
        "dialect": "openai.chat",
        "upstream": "https://api.openai.com",
        "model": "gpt-4o-mini",
        "stream": index % 2 == 0,
        "policy": {"name": "default", "hash": "sha256:" + "ab" * 32},
        "mode": "enforce",
        "entities": {"PERSON": {"count": 2, "action": "placeholder"}},
        "blocked": False,
        "block_reason": None,
        "status": 200,
        "retries": 0,
        "timings_ms": {"detection": 12.3, "upstream": 200.1, "total": 215.0},
        "client": {"service": "checkout", "pod": "checkout-7d9f", "key_fingerprint": "a1b2c3d4"},
        "usage": {"input_tokens": 10, "output_tokens": 20, "cached_tokens": 0},
        "cost_usd": 0.0000135,
    }


def write_file(
    path: Path,
    count: int,
    key: bytes | None = None,
    *,
    close: bool = True,
    checkpoint_every: int = 5,
    rotate_bytes: int | None = None,
    **options: Any,
) -> ChainedFileSink:
    sink = ChainedFileSink(
        path, key, checkpoint_every=checkpoint_every, rotate_bytes=rotate_bytes, **options
    )
    for index in range(count):
        sink.write(request_record(index))
    if close:
        sink.close()
    return sink


def abandon(sink: ChainedFileSink) -> None:
    """Leave the file as a killed process would: descriptors closed, no closing checkpoint."""
    sink._release()
    os.close(sink._lock_fd)


def verify(*paths: Path, key: bytes | None = None, **options: Any) -> Verification:
    return cli.verify_files(cli.order_by_chain(list(paths)), key, **options)


def verify_bytes(data: bytes, key: bytes | None = None) -> Verification:
    verifier = ChainVerifier(key)
    verifier.start_file("audit.log")
    verifier.feed(data)
    verifier.end_file()
    return verifier.result()


def run_verify(*arguments: str) -> tuple[int, str]:
    parser = cli.argparse.ArgumentParser()
    commands = parser.add_subparsers()
    cli.register(commands)
    args = parser.parse_args(["audit", "verify", *arguments])
    out = io.StringIO()
    status = cli.run_verify(args, out=out)
    return status, out.getvalue()


def lines_of(path: Path) -> list[bytes]:
    return path.read_bytes().splitlines(keepends=True)


# Intact files


def test_intact_file_is_sealed(tmp_path: Path) -> None:
    path = tmp_path / "audit.log"
    write_file(path, 12)

    result = verify(path)

    assert result.status is ChainStatus.SEALED
    assert result.chain_break is None
    assert result.first_seq == 0
    assert result.records == len(lines_of(path))


def test_verify_command_exits_zero_for_intact_file(tmp_path: Path) -> None:
    path = tmp_path / "audit.log"
    write_file(path, 3)

    status, output = run_verify(str(path))

    assert status == 0
    assert output.startswith("OK: ")


def test_each_line_is_canonical_json(tmp_path: Path) -> None:
    path = tmp_path / "audit.log"
    write_file(path, 3)

    for line in lines_of(path):
        record = json.loads(line)
        assert line == canonical_json(record) + b"\n"


def test_request_record_gets_chain_fields(tmp_path: Path) -> None:
    path = tmp_path / "audit.log"
    write_file(path, 1)

    records = [json.loads(line) for line in lines_of(path)]
    request = records[1]

    assert [record["seq"] for record in records] == [0, 1, 2]
    assert records[0]["prev_hash"] is None
    assert request["prev_hash"] == records[0]["hash"]
    assert request["record_type"] == "request"
    assert request["hash"].startswith("sha256:")
    assert request["request_id"] == "req-0000"


def test_checkpoints_mark_open_interval_and_close(tmp_path: Path) -> None:
    path = tmp_path / "audit.log"
    write_file(path, 10, checkpoint_every=4)

    reasons = [
        json.loads(line)["checkpoint"]["reason"]
        for line in lines_of(path)
        if json.loads(line)["record_type"] == "checkpoint"
    ]

    assert reasons == ["open", "interval", "interval", "close"]


# Tampering


def _edit_one_byte(lines: list[bytes]) -> list[bytes]:
    line = lines[3]
    position = line.index(b'"req-0002"') + 5
    lines[3] = line[:position] + b"9" + line[position + 1 :]
    return lines


def _delete_line(lines: list[bytes]) -> list[bytes]:
    del lines[3]
    return lines


def _swap_lines(lines: list[bytes]) -> list[bytes]:
    lines[3], lines[4] = lines[4], lines[3]
    return lines


def _duplicate_line(lines: list[bytes]) -> list[bytes]:
    lines.insert(4, lines[3])
    return lines


def _insert_forged_line(lines: list[bytes]) -> list[bytes]:
    """Insert a record sealed correctly after line 4, as anyone can for an unkeyed chain."""
    previous = json.loads(lines[3])
    writer = ChainWriter(None, head=head_of(previous))
    lines.insert(4, writer.seal(request_record(99)).line)
    return lines


def head_of(record: dict[str, Any]) -> ChainHead:
    return ChainHead(seq=record["seq"], hash=record["hash"])


def _truncate_whole_lines(lines: list[bytes]) -> list[bytes]:
    return lines[:-2]


def _truncate_mid_line(lines: list[bytes]) -> list[bytes]:
    return [*lines[:-1], lines[-1][:40]]


def _delete_first_line(lines: list[bytes]) -> list[bytes]:
    return lines[1:]


def _rewrite_value_keeping_form(lines: list[bytes]) -> list[bytes]:
    lines[3] = lines[3].replace(b'"status":200', b'"status":201')
    return lines


def _reformat_line(lines: list[bytes]) -> list[bytes]:
    lines[3] = json.dumps(json.loads(lines[3]), indent=None).encode() + b"\n"
    return lines


TAMPERING = [
    pytest.param(_edit_one_byte, 4, id="edit-one-byte"),
    pytest.param(_rewrite_value_keeping_form, 4, id="edit-value"),
    pytest.param(_reformat_line, 4, id="reformat-json"),
    pytest.param(_delete_line, 4, id="delete-line"),
    pytest.param(_delete_first_line, 1, id="delete-first-line"),
    pytest.param(_swap_lines, 4, id="swap-lines"),
    pytest.param(_duplicate_line, 5, id="insert-copied-line"),
    pytest.param(_insert_forged_line, 6, id="insert-forged-line"),
]


@pytest.mark.parametrize(("tamper", "broken_line"), TAMPERING)
def test_tampering_breaks_chain(
    tmp_path: Path, tamper: Callable[[list[bytes]], list[bytes]], broken_line: int
) -> None:
    path = tmp_path / "audit.log"
    write_file(path, 8)
    path.write_bytes(b"".join(tamper(lines_of(path))))

    result = verify(path)
    status, output = run_verify(str(path))

    assert result.status is ChainStatus.BROKEN
    assert result.chain_break is not None
    assert result.chain_break.location.line == broken_line
    assert status == 1
    assert output.startswith(f"BROKEN at {path}:{broken_line}")


@pytest.mark.parametrize(
    ("tamper", "expected"),
    [
        pytest.param(_truncate_whole_lines, ChainStatus.OPEN, id="truncate-at-line-end"),
        pytest.param(_truncate_mid_line, ChainStatus.TORN, id="truncate-mid-line"),
    ],
)
def test_truncation_fails_verify(
    tmp_path: Path, tamper: Callable[[list[bytes]], list[bytes]], expected: ChainStatus
) -> None:
    path = tmp_path / "audit.log"
    write_file(path, 8)
    path.write_bytes(b"".join(tamper(lines_of(path))))

    result = verify(path)
    status, _ = run_verify(str(path))

    assert result.status is expected
    assert status == 3


def test_every_single_byte_edit_fails(tmp_path: Path) -> None:
    path = tmp_path / "audit.log"
    write_file(path, 3, checkpoint_every=2)
    original = path.read_bytes()
    last_line_start = len(original) - len(lines_of(path)[-1])

    for position in range(len(original)):
        replacement = b"0" if original[position : position + 1] != b"0" else b"1"
        edited = original[:position] + replacement + original[position + 1 :]
        result = verify_bytes(edited)
        assert result.status is not ChainStatus.SEALED, f"edit at byte {position} went unnoticed"
        if position < last_line_start - 1:
            assert result.status is ChainStatus.BROKEN, f"edit at byte {position}: {result.status}"


def test_broken_chain_reports_count_before_break(tmp_path: Path) -> None:
    path = tmp_path / "audit.log"
    write_file(path, 8)
    path.write_bytes(b"".join(_delete_line(lines_of(path))))

    result = verify(path)

    assert result.records == 3
    assert result.chain_break is not None
    assert "prev_hash" in result.chain_break.reason


# Keyed chains


def test_keyed_chain_verifies_with_key(tmp_path: Path) -> None:
    path = tmp_path / "audit.log"
    write_file(path, 5, key=KEY)
    key_file = tmp_path / "key"
    key_file.write_bytes(KEY + b"\n")

    result = verify(path, key=KEY)
    status, _ = run_verify(str(path), "--key-file", str(key_file))

    assert result.status is ChainStatus.SEALED
    assert status == 0
    assert json.loads(lines_of(path)[1])["hash"].startswith("hmac-sha256:")


def test_keyed_chain_fails_with_wrong_key(tmp_path: Path) -> None:
    path = tmp_path / "audit.log"
    write_file(path, 5, key=KEY)

    result = verify(path, key=OTHER_KEY)

    assert result.status is ChainStatus.BROKEN
    assert result.chain_break is not None
    assert result.chain_break.location.line == 1
    assert "key id" in result.chain_break.reason


def test_keyed_chain_without_key_is_usage_error(tmp_path: Path) -> None:
    path = tmp_path / "audit.log"
    write_file(path, 2, key=KEY)

    status, output = run_verify(str(path))

    assert status == 2
    assert output.startswith("KEY REQUIRED")


def test_unkeyed_chain_fails_when_key_given(tmp_path: Path) -> None:
    path = tmp_path / "audit.log"
    write_file(path, 2)

    result = verify(path, key=KEY)

    assert result.status is ChainStatus.BROKEN


def test_keyed_chain_rejects_forged_insert(tmp_path: Path) -> None:
    path = tmp_path / "audit.log"
    write_file(path, 6, key=KEY)
    lines = lines_of(path)
    writer = ChainWriter(OTHER_KEY, head=head_of(json.loads(lines[3])))
    lines.insert(4, writer.seal(request_record(99)).line)
    path.write_bytes(b"".join(lines))

    result = verify(path, key=KEY)

    assert result.chain_break is not None
    assert result.chain_break.location.line == 5


def test_record_spliced_from_other_chain_fails(tmp_path: Path) -> None:
    first, second = tmp_path / "a" / "audit.log", tmp_path / "b" / "audit.log"
    first.parent.mkdir()
    second.parent.mkdir()
    write_file(first, 6, key=KEY)
    write_file(second, 6, key=KEY, clock=lambda: datetime(2026, 1, 1, tzinfo=UTC))
    lines = lines_of(first)
    lines[0] = lines_of(second)[0]
    first.write_bytes(b"".join(lines))

    result = verify(first, key=KEY)

    assert result.status is ChainStatus.BROKEN
    assert result.chain_break is not None
    assert result.chain_break.location.line == 2
    assert "prev_hash" in result.chain_break.reason


def test_keyed_chain_rewritten_unkeyed_fails(tmp_path: Path) -> None:
    path = tmp_path / "audit.log"
    write_file(path, 3, key=KEY)
    writer = ChainWriter(None)
    rewritten = b""
    for line in lines_of(path):
        record = {
            name: value
            for name, value in json.loads(line).items()
            if name not in {"seq", "prev_hash", "hash"}
        }
        rewritten += writer.seal(record).line
    path.write_bytes(rewritten)

    assert verify(path, key=KEY).status is ChainStatus.BROKEN


# Rotation


def rotated_set(tmp_path: Path, count: int = 40) -> list[Path]:
    path = tmp_path / "audit.log"
    write_file(path, count, rotate_bytes=3000)
    return sorted(tmp_path.glob("audit.log*"))


def test_rotation_creates_several_files(tmp_path: Path) -> None:
    files = rotated_set(tmp_path)

    assert len(files) >= 3
    assert (tmp_path / "audit.log") in files
    assert all(path.stat().st_size < 3000 + 2000 for path in files)


def test_rotated_files_verify_together(tmp_path: Path) -> None:
    files = rotated_set(tmp_path)

    result = verify(*files)
    status, _ = run_verify(str(tmp_path / "audit.log*"))

    assert result.status is ChainStatus.SEALED
    assert len(result.files) == len(files)
    assert status == 0


def test_rotated_files_verify_in_any_argument_order(tmp_path: Path) -> None:
    files = rotated_set(tmp_path)

    status, _ = run_verify(*(str(path) for path in reversed(files)))

    assert status == 0


def test_new_file_chains_to_previous_file(tmp_path: Path) -> None:
    files = cli.order_by_chain(rotated_set(tmp_path))

    for previous, current in itertools.pairwise(files):
        last = json.loads(lines_of(previous)[-1])
        first = json.loads(lines_of(current)[0])
        assert last["checkpoint"]["reason"] == "rotate"
        assert first["prev_hash"] == last["hash"]
        assert first["checkpoint"]["previous_file"] == previous.name


def test_rotated_set_missing_middle_file_fails(tmp_path: Path) -> None:
    files = cli.order_by_chain(rotated_set(tmp_path))
    del files[1]

    result = verify(*files)

    assert result.status is ChainStatus.BROKEN
    assert result.chain_break is not None
    assert result.chain_break.location.line == 1


def test_last_file_alone_needs_allow_partial(tmp_path: Path) -> None:
    rotated_set(tmp_path)
    active = tmp_path / "audit.log"

    strict = verify(active)
    partial = verify(active, allow_partial=True)
    status, output = run_verify(str(active))

    assert strict.status is ChainStatus.BROKEN
    assert partial.status is ChainStatus.SEALED
    assert status == 1
    assert "--allow-partial" in output


def test_sink_continues_after_newest_rotated_file(tmp_path: Path) -> None:
    rotated_set(tmp_path)
    (tmp_path / "audit.log").unlink()
    write_file(tmp_path / "audit.log", 2, rotate_bytes=3000)

    result = verify(*tmp_path.glob("audit.log*"))

    assert result.status is ChainStatus.SEALED


def test_interrupted_rotation_is_finished_on_open(tmp_path: Path) -> None:
    files = cli.order_by_chain(rotated_set(tmp_path))
    active, newest_rotated = tmp_path / "audit.log", files[-2]
    active.unlink()
    newest_rotated.rename(active)

    write_file(active, 1)

    assert newest_rotated.exists()
    assert verify(*tmp_path.glob("audit.log*")).status is ChainStatus.SEALED


# Crashes and restarts


def test_open_file_exits_three_unless_allowed(tmp_path: Path) -> None:
    path = tmp_path / "audit.log"
    abandon(write_file(path, 3, close=False))

    result = verify(path)
    strict, _ = run_verify(str(path))
    allowed, output = run_verify(str(path), "--allow-open")

    assert result.status is ChainStatus.OPEN
    assert strict == 3
    assert allowed == 0
    assert output.startswith("OK (open)")


def test_torn_tail_is_reported_and_earlier_records_verify(tmp_path: Path) -> None:
    path = tmp_path / "audit.log"
    abandon(write_file(path, 6, close=False))
    intact_lines = len(lines_of(path))
    with path.open("ab") as file:
        file.write(b'{"schema_version":1,"request_id":"req-torn","tim')

    result = verify(path)
    status, output = run_verify(str(path))

    assert result.status is ChainStatus.TORN
    assert result.records == intact_lines
    assert result.torn is not None
    assert result.torn.location.line == intact_lines + 1
    assert result.torn.size == 48
    assert status == 3
    assert output.startswith(f"TORN at {path}:{intact_lines + 1}")


def test_restart_after_torn_tail_recovers(tmp_path: Path) -> None:
    path = tmp_path / "audit.log"
    abandon(write_file(path, 6, close=False))
    with path.open("ab") as file:
        file.write(b'{"schema_version":1,"request_id":"req-torn","tim')

    write_file(path, 2)
    result = verify(path)

    assert result.status is ChainStatus.SEALED
    assert len(result.recoveries) == 1
    recover = next(json.loads(line) for line in lines_of(path) if b'"recover"' in line)
    assert recover["checkpoint"]["discarded_bytes"] == 49


def test_restart_after_unclean_stop_recovers_without_discarding(tmp_path: Path) -> None:
    path = tmp_path / "audit.log"
    abandon(write_file(path, 3, close=False))

    write_file(path, 1)
    recover = next(json.loads(line) for line in lines_of(path) if b'"recover"' in line)

    assert verify(path).status is ChainStatus.SEALED
    assert recover["checkpoint"]["discarded_bytes"] == 0


def test_restart_after_clean_close_opens(tmp_path: Path) -> None:
    path = tmp_path / "audit.log"
    write_file(path, 2)
    write_file(path, 2)

    result = verify(path)
    reasons = [json.loads(line).get("checkpoint", {}).get("reason") for line in lines_of(path)]

    assert result.status is ChainStatus.SEALED
    assert result.recoveries == ()
    assert reasons.count("open") == 2


def test_restart_keeps_record_missing_only_newline(tmp_path: Path) -> None:
    path = tmp_path / "audit.log"
    abandon(write_file(path, 3, close=False))
    path.write_bytes(path.read_bytes()[:-1])
    last_request = json.loads(lines_of(path)[-1])

    write_file(path, 1)
    result = verify(path)

    assert result.status is ChainStatus.SEALED
    assert json.loads(lines_of(path)[len(lines_of(path)) - 4])["hash"] == last_request["hash"]


def test_torn_bytes_differing_from_recover_checkpoint_fail(tmp_path: Path) -> None:
    path = tmp_path / "audit.log"
    abandon(write_file(path, 3, close=False))
    with path.open("ab") as file:
        file.write(b'{"torn":')
    write_file(path, 1)
    path.write_bytes(path.read_bytes().replace(b'{"torn":\n', b'{"TORN":\n'))

    result = verify(path)

    assert result.status is ChainStatus.BROKEN


def test_garbage_line_inside_file_fails(tmp_path: Path) -> None:
    path = tmp_path / "audit.log"
    write_file(path, 4)
    lines = lines_of(path)
    lines.insert(3, b"not a record\n")
    path.write_bytes(b"".join(lines))

    result = verify(path)

    assert result.status is ChainStatus.BROKEN
    assert result.chain_break is not None
    assert result.chain_break.location.line == 4


def test_killed_writer_leaves_verifiable_prefix(tmp_path: Path) -> None:
    path = tmp_path / "audit.log"
    script = textwrap.dedent(
        f"""
        import itertools
        from sidecar.audit.sink import ChainedFileSink
        sink = ChainedFileSink({str(path)!r}, None, checkpoint_every=50)
        for index in itertools.count():
            sink.write({{"schema_version": 1, "request_id": f"req-{{index}}", "padding": "x" * 4000}})
        """
    )
    writer = subprocess.Popen([sys.executable, "-c", script], cwd=REPO)
    try:
        while not path.exists() or path.stat().st_size < 400_000:
            assert writer.poll() is None, "the writer process exited early"
            time.sleep(0.01)
    finally:
        writer.send_signal(signal.SIGKILL)
        writer.wait()

    before_restart = verify(path)
    write_file(path, 1)
    after_restart = verify(path)

    assert before_restart.status in {ChainStatus.OPEN, ChainStatus.TORN}
    assert before_restart.records > 50
    assert after_restart.status is ChainStatus.SEALED
    assert after_restart.recoveries


def test_failed_write_is_recovered_on_next_write(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "audit.log"
    sink = write_file(path, 2, close=False)
    real_write = os.write

    def write_half_then_fail(fd: int, data: Any) -> int:
        real_write(fd, bytes(data[: len(data) // 2]))
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "write", write_half_then_fail)
    with pytest.raises(AuditError, match="No space left"):
        sink.write(request_record(2))
    monkeypatch.setattr(os, "write", real_write)
    sink.write(request_record(3))
    sink.close()

    result = verify(path)
    recover = next(json.loads(line) for line in lines_of(path) if b'"recover"' in line)

    assert result.status is ChainStatus.SEALED
    assert recover["checkpoint"]["discarded_bytes"] > 0
    assert b"req-0003" in path.read_bytes()


def test_failed_rotation_is_finished_on_next_write(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "audit.log"
    sink = ChainedFileSink(path, None, checkpoint_every=0, rotate_bytes=2000)
    real_rename = os.rename

    def fail_rename(source: Any, target: Any) -> None:
        raise OSError(13, "Permission denied")

    monkeypatch.setattr(os, "rename", fail_rename)
    with pytest.raises(AuditError, match="Permission denied"):
        for index in range(10):
            sink.write(request_record(index))
    monkeypatch.setattr(os, "rename", real_rename)
    sink.write(request_record(10))
    sink.close()

    files = list(tmp_path.glob("audit.log*"))

    assert len(files) == 2
    assert verify(*files).status is ChainStatus.SEALED


# Anchors


def test_anchor_detects_records_cut_from_end(tmp_path: Path) -> None:
    path = tmp_path / "audit.log"
    checkpoints: list[dict[str, Any]] = []
    abandon(write_file(path, 12, close=False, checkpoint_every=5, on_checkpoint=checkpoints.append))
    anchor = checkpoints[-1]
    lines = lines_of(path)
    path.write_bytes(b"".join(lines[: anchor["seq"] - 1]))

    without_anchor = verify(path)
    with_anchor = verify(path, anchors={anchor["seq"]: anchor["hash"]})
    status, _ = run_verify(
        str(path), "--allow-open", "--anchor", f"{anchor['seq']}:{anchor['hash']}"
    )

    assert without_anchor.status is ChainStatus.OPEN
    assert with_anchor.status is ChainStatus.BROKEN
    assert status == 1


def test_anchor_detects_rewritten_unkeyed_chain(tmp_path: Path) -> None:
    path = tmp_path / "audit.log"
    checkpoints: list[dict[str, Any]] = []
    write_file(path, 6, on_checkpoint=checkpoints.append)
    writer = ChainWriter(None)
    rewritten = b""
    for line in lines_of(path):
        record = {
            name: value
            for name, value in json.loads(line).items()
            if name not in {"seq", "prev_hash", "hash"}
        }
        record["status"] = 500
        rewritten += writer.seal(record).line
    path.write_bytes(rewritten)
    anchors = {checkpoint["seq"]: checkpoint["hash"] for checkpoint in checkpoints}

    assert verify(path).status is ChainStatus.SEALED
    assert verify(path, anchors=anchors).status is ChainStatus.BROKEN


def test_checkpoint_callback_gets_written_record(tmp_path: Path) -> None:
    path = tmp_path / "audit.log"
    checkpoints: list[dict[str, Any]] = []
    write_file(path, 1, key=KEY, on_checkpoint=checkpoints.append)

    written = [json.loads(line) for line in lines_of(path)]

    assert checkpoints == [written[0], written[-1]]
    assert checkpoints[0]["checkpoint"]["key_id"] is not None


# Sink behaviour


def test_second_sink_on_same_file_is_rejected(tmp_path: Path) -> None:
    path = tmp_path / "audit.log"
    first = ChainedFileSink(path, None)
    try:
        with pytest.raises(AuditError, match="another process"):
            ChainedFileSink(path, None)
    finally:
        first.close()


def test_sink_rejects_file_with_edited_last_record(tmp_path: Path) -> None:
    path = tmp_path / "audit.log"
    write_file(path, 2)
    path.write_bytes(path.read_bytes().replace(b'"reason":"close"', b'"reason":"cloze"'))

    with pytest.raises(AuditError, match="does not verify"):
        ChainedFileSink(path, None)


def test_sink_rejects_file_written_with_other_key(tmp_path: Path) -> None:
    path = tmp_path / "audit.log"
    write_file(path, 2, key=KEY)

    with pytest.raises(AuditError, match="key id"):
        ChainedFileSink(path, OTHER_KEY)


def test_sink_rejects_chain_fields(tmp_path: Path) -> None:
    with (
        ChainedFileSink(tmp_path / "audit.log", None) as sink,
        pytest.raises(ValueError, match="chain fields"),
    ):
        sink.write({**request_record(0), "seq": 7})


def test_unserialisable_record_writes_nothing(tmp_path: Path) -> None:
    path = tmp_path / "audit.log"
    sink = ChainedFileSink(path, None)
    size = path.stat().st_size

    with pytest.raises(TypeError):
        sink.write({**request_record(0), "when": datetime.now(UTC)})
    unchanged = path.stat().st_size
    sink.write(request_record(1))
    sink.close()

    assert unchanged == size
    assert verify(path).status is ChainStatus.SEALED


def test_write_after_close_raises(tmp_path: Path) -> None:
    sink = write_file(tmp_path / "audit.log", 1)

    with pytest.raises(AuditError, match="closed"):
        sink.write(request_record(2))


def test_close_is_idempotent(tmp_path: Path) -> None:
    path = tmp_path / "audit.log"
    sink = write_file(path, 1)
    size = path.stat().st_size

    sink.close()

    assert path.stat().st_size == size


def test_fsync_each_record_still_verifies(tmp_path: Path) -> None:
    path = tmp_path / "audit.log"
    write_file(path, 5, fsync_each_record=True)

    assert verify(path).status is ChainStatus.SEALED


def test_sink_rejects_invalid_options(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="checkpoint_every"):
        ChainedFileSink(tmp_path / "audit.log", None, checkpoint_every=-1)
    with pytest.raises(ValueError, match="rotate_bytes"):
        ChainedFileSink(tmp_path / "audit.log", None, rotate_bytes=0)


def test_missing_directory_raises_audit_error(tmp_path: Path) -> None:
    with pytest.raises(AuditError, match="cannot open"):
        ChainedFileSink(tmp_path / "missing" / "audit.log", None)


def test_checkpoint_timestamp_uses_clock(tmp_path: Path) -> None:
    path = tmp_path / "audit.log"
    moment = datetime(2026, 12, 4, 19, 49, 46, 123456, tzinfo=UTC)
    write_file(path, 0, clock=lambda: moment)

    first = json.loads(lines_of(path)[0])

    assert first["timestamp"] == "2026-12-04T19:49:46.123Z"


def test_format_timestamp_converts_to_utc() -> None:
    from datetime import timedelta, timezone

    moment = datetime(2026, 12, 4, 20, 49, 46, 7000, tzinfo=timezone(timedelta(hours=1)))

    assert format_timestamp(moment) == "2026-12-04T19:49:46.007Z"


def test_stdout_sink_writes_one_json_line() -> None:
    stream = io.StringIO()
    sink = StdoutSink(stream)

    sink.write(request_record(0))
    sink.close()
    lines = stream.getvalue().splitlines()

    assert len(lines) == 1
    assert json.loads(lines[0])["record_type"] == "request"
    assert json.loads(lines[0])["request_id"] == "req-0000"


class _FailingSink:
    def write(self, record: Any) -> None:
        raise OSError("disk full")

    def close(self) -> None:
        pass


def test_tee_sink_writes_to_all_then_raises() -> None:
    stream = io.StringIO()
    sink = TeeSink(_FailingSink(), StdoutSink(stream))

    with pytest.raises(OSError, match="disk full"):
        sink.write(request_record(0))

    assert json.loads(stream.getvalue())["request_id"] == "req-0000"


# Verify command


def test_verify_missing_file_is_usage_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    status, _ = run_verify(str(tmp_path / "absent.log"))

    assert status == 2
    assert "file not found" in capsys.readouterr().err


def test_verify_unmatched_glob_is_usage_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    status, _ = run_verify(str(tmp_path / "absent*.log"))

    assert status == 2
    assert "no file matches" in capsys.readouterr().err


def test_verify_rejects_invalid_anchor(tmp_path: Path) -> None:
    with pytest.raises(SystemExit):
        run_verify(str(tmp_path / "audit.log"), "--anchor", "head")


def test_verify_standalone_main(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "audit.log"
    write_file(path, 2)

    status = cli.main(["verify", str(path)])

    assert status == 0
    assert "sealed by a closing checkpoint" in capsys.readouterr().out


def test_empty_file_is_not_intact(tmp_path: Path) -> None:
    path = tmp_path / "audit.log"
    path.write_bytes(b"")

    status, output = run_verify(str(path))

    assert status == 3
    assert output.startswith("EMPTY")
