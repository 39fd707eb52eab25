"""The `pii-sidecar audit verify` and `pii-sidecar audit report` commands.

`register(subparsers)` adds the `audit` command to the main parser, and `main(argv)` runs
the same subcommands standalone (`python -m sidecar.audit.cli verify FILE`). Each subcommand
sets `handler`, which takes the parsed arguments and returns the exit status.

Exit status of `verify`:
    0  the chain is intact and sealed by a closing checkpoint (or open, with --allow-open)
    1  the chain is broken: a record was edited, deleted, inserted or reordered, or the
       key is wrong
    2  the command could not run: a file is missing or unreadable, an option is invalid,
       or the chain is keyed and no key was given
    3  the chain is intact but incomplete: the last line is torn, or (without --allow-open)
       the last file has no closing checkpoint
"""

from __future__ import annotations

import argparse
import glob
import sys
from collections.abc import Iterator, Sequence
from datetime import datetime
from pathlib import Path
from typing import TextIO

from sidecar.audit.chain import (
    ChainStatus,
    ChainVerifier,
    Verification,
    parse_line,
)
from sidecar.audit.keys import load_key
from sidecar.audit.report import ReportBuilder, parse_timestamp, render_text
from sidecar.audit.report_html import render_html
from sidecar.errors import ConfigError

EXIT_OK = 0
EXIT_BROKEN = 1
EXIT_USAGE = 2
EXIT_INCOMPLETE = 3
READ_CHUNK_BYTES = 1024 * 1024


class UsageError(Exception):
    """Error raised when a command cannot run. Its message explains why and goes to stderr."""


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add the `audit` command, with `verify` and `report` under it, to `subparsers`."""
    audit = subparsers.add_parser("audit", help="verify and summarise audit files")
    _add_commands(audit)


def main(argv: Sequence[str] | None = None) -> int:
    """Run `verify` or `report` as `pii-sidecar audit ...` would, and return the exit status."""
    parser = argparse.ArgumentParser(
        prog="pii-sidecar audit", description="Verify and summarise audit files."
    )
    _add_commands(parser)
    args = parser.parse_args(argv)
    status: int = args.handler(args)
    return status


def _add_commands(parser: argparse.ArgumentParser) -> None:
    commands = parser.add_subparsers(dest="audit_command", required=True, metavar="{verify,report}")
    _add_verify(commands)
    _add_report(commands)


def _add_verify(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    verify = commands.add_parser(
        "verify",
        help="check the hash chain of audit files (exit status 0 only for an intact chain)",
        description=(
            "Check the hash chain across audit files and print the first broken record. "
            "Exit status: 0 intact and sealed, 1 broken, 2 usage error or missing key, "
            "3 intact but incomplete (torn last line, or no closing checkpoint)."
        ),
    )
    verify.add_argument(
        "files",
        nargs="+",
        metavar="FILE",
        help=(
            "audit files or glob patterns, such as 'audit.log*', "
            "verified in the order of their first record's seq"
        ),
    )
    _add_key_options(verify)
    verify.add_argument(
        "--allow-open",
        action="store_true",
        help="exit 0 when the last file has no closing checkpoint (the file of a running sidecar)",
    )
    verify.add_argument(
        "--allow-partial",
        action="store_true",
        help="accept a chain that does not start at seq 0 (older files deleted on purpose)",
    )
    verify.add_argument(
        "--anchor",
        action="append",
        default=[],
        type=_parse_anchor,
        metavar="SEQ:HASH",
        help="require record SEQ to have HASH, such as 1000:sha256:ab12... (repeatable)",
    )
    verify.set_defaults(handler=run_verify)


def _add_report(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    report = commands.add_parser(
        "report",
        help="summarise audit files as a terminal table or an HTML page",
        description=(
            "Summarise requests, entities, blocks, tokens and estimated cost by model, by client "
            "and over time. Checkpoints and lines of other logs are skipped."
        ),
    )
    report.add_argument("files", nargs="+", metavar="FILE", help="audit files or glob patterns")
    report.add_argument(
        "--format", choices=("text", "html"), default="text", help="output format (default: text)"
    )
    report.add_argument(
        "-o", "--output", metavar="PATH", help="write the report to PATH instead of stdout"
    )
    report.add_argument(
        "--bucket",
        choices=("auto", "minute", "hour", "day"),
        default="auto",
        help="width of the time intervals (default: auto, at most 60 intervals)",
    )
    report.add_argument(
        "--since", type=_parse_moment, metavar="TIME", help="skip records before this ISO 8601 time"
    )
    report.add_argument(
        "--until",
        type=_parse_moment,
        metavar="TIME",
        help="skip records at or after this ISO 8601 time",
    )
    report.add_argument(
        "--title", default="pii-sidecar audit report", help="title of the HTML page"
    )
    report.set_defaults(handler=run_report)


def _add_key_options(parser: argparse.ArgumentParser) -> None:
    keys = parser.add_mutually_exclusive_group()
    keys.add_argument(
        "--key-file", metavar="PATH", help="file containing the chain key of a keyed chain"
    )
    keys.add_argument(
        "--key-env", metavar="NAME", help="environment variable containing the chain key"
    )


def _parse_anchor(text: str) -> tuple[int, str]:
    seq, _, digest = text.partition(":")
    if not seq.isdigit() or not digest:
        raise argparse.ArgumentTypeError(
            f"invalid anchor {text!r}: expected SEQ:HASH, such as 1000:sha256:ab12..."
        )
    return int(seq), digest


def _parse_moment(text: str) -> datetime:
    moment = parse_timestamp(text)
    if moment is None:
        raise argparse.ArgumentTypeError(
            f"invalid time {text!r}: expected ISO 8601, such as 2026-12-04T19:00:00Z"
        )
    return moment


# verify


def run_verify(args: argparse.Namespace, out: TextIO | None = None) -> int:
    """Verify the files named in `args`, print the outcome, and return the exit status."""
    out = out or sys.stdout
    try:
        key = load_key(path=args.key_file, env_var=args.key_env)
        paths = order_by_chain(expand_paths(args.files))
        result = verify_files(
            paths, key, allow_partial=args.allow_partial, anchors=dict(args.anchor)
        )
    except (UsageError, ConfigError) as exc:
        print(f"pii-sidecar audit verify: error: {exc}", file=sys.stderr)
        return EXIT_USAGE

    for line in describe_verification(result, allow_open=args.allow_open):
        print(line, file=out)
    return verification_exit_status(result, allow_open=args.allow_open)


def verify_files(
    paths: Sequence[Path],
    key: bytes | None,
    *,
    allow_partial: bool = False,
    anchors: dict[int, str] | None = None,
) -> Verification:
    """Verify the chain across `paths`, read in the given order.

    Raise UsageError when a file cannot be read.
    """
    verifier = ChainVerifier(key, allow_partial=allow_partial, anchors=anchors)
    for path in paths:
        verifier.start_file(str(path))
        for chunk in _read_chunks(path):
            verifier.feed(chunk)
        verifier.end_file()
    return verifier.result()


def verification_exit_status(result: Verification, *, allow_open: bool = False) -> int:
    """Map a verification to the exit status documented in the module docstring."""
    if result.chain_break is not None and result.chain_break.key_required:
        return EXIT_USAGE
    if result.status is ChainStatus.BROKEN:
        return EXIT_BROKEN
    if result.status is ChainStatus.SEALED:
        return EXIT_OK
    if result.status is ChainStatus.OPEN and allow_open:
        return EXIT_OK
    return EXIT_INCOMPLETE


def describe_verification(result: Verification, *, allow_open: bool = False) -> list[str]:
    """Return the lines that `verify` prints for `result`."""
    span = _describe_span(result)
    lines: list[str]
    if result.chain_break is not None and result.chain_break.key_required:
        lines = [
            f"KEY REQUIRED at {result.chain_break.location}: {result.chain_break.reason}. "
            "Pass --key-file or --key-env."
        ]
    elif result.status is ChainStatus.BROKEN:
        assert result.chain_break is not None
        chain_break = result.chain_break
        seq = f" (seq {chain_break.seq})" if chain_break.seq is not None else ""
        lines = [
            f"BROKEN at {chain_break.location}{seq}: {chain_break.reason}",
            f"{_count(result.records, 'record')} before it verify.",
        ]
        if chain_break.missing_start:
            lines.append("Pass the earlier files too, or --allow-partial if they were deleted.")
    elif result.status is ChainStatus.TORN:
        assert result.torn is not None
        lines = [
            f"TORN at {result.torn.location}: the last {_count(result.torn.size, 'byte')} form no "
            "complete record, as after a crash during a write or a cut through the file.",
            f"{_count(result.records, 'record')} before them verify{span}. Exit status 3: "
            "the sidecar adds a recover checkpoint that accounts for these bytes when it restarts.",
        ]
    elif result.status is ChainStatus.EMPTY:
        lines = ["EMPTY: the files contain no records."]
    elif result.status is ChainStatus.OPEN:
        verdict = "OK (open)" if allow_open else "OPEN"
        lines = [
            f"{verdict}: {_count(result.records, 'record')} verify{span}, but the last file has no "
            "closing checkpoint: the sidecar is still writing it, stopped without closing it, "
            "or records were cut from the end.",
        ]
        if not allow_open:
            lines.append(
                "Exit status 3. Pass --allow-open to accept the file of a running sidecar."
            )
    else:
        lines = [
            f"OK: {_count(result.records, 'record')} verify{span}, sealed by a closing checkpoint."
        ]

    return lines + _notes(result)


def _describe_span(result: Verification) -> str:
    if result.first_seq is None:
        return f" in {_count(len(result.files), 'file')}"
    return f" (seq {result.first_seq} to {result.head.seq}, {_count(len(result.files), 'file')})"


def _notes(result: Verification) -> list[str]:
    notes = []
    if result.status is not ChainStatus.BROKEN and result.head.hash is not None:
        notes.append(f"head: {result.head.seq}:{result.head.hash}")
    if result.first_seq not in (None, 0):
        notes.append(
            f"note: the chain starts at seq {result.first_seq}. Records before it were not checked."
        )
    if result.recoveries:
        seqs = ", ".join(str(seq) for seq in result.recoveries)
        notes.append(f"note: the writer resumed after an unclean stop at seq {seqs}.")
    if result.anchors_checked:
        notes.append(f"anchors matched: {result.anchors_checked}")
    return notes


def _count(number: int, noun: str) -> str:
    return f"{number:,} {noun}" + ("" if number == 1 else "s")


# report


def run_report(args: argparse.Namespace, out: TextIO | None = None) -> int:
    """Summarise the files named in `args`, write the report, and return the exit status."""
    try:
        paths = expand_paths(args.files)
        builder = ReportBuilder(since=args.since, until=args.until, bucket=args.bucket)
        for path in paths:
            for line in _read_lines(path):
                builder.add_line(line)
        report = builder.build()
    except UsageError as exc:
        print(f"pii-sidecar audit report: error: {exc}", file=sys.stderr)
        return EXIT_USAGE

    text = render_html(report, title=args.title) if args.format == "html" else render_text(report)
    if args.output is None:
        (out or sys.stdout).write(text)
        return EXIT_OK
    try:
        Path(args.output).write_text(text, encoding="utf-8")
    except OSError as exc:
        print(
            f"pii-sidecar audit report: error: {args.output}: cannot write: {exc.strerror}",
            file=sys.stderr,
        )
        return EXIT_USAGE
    return EXIT_OK


# Reading files


def expand_paths(patterns: Sequence[str]) -> list[Path]:
    """Expand file names and glob patterns into existing files, without duplicates.

    Raise UsageError for a name that does not exist or a pattern that matches nothing.
    """
    paths: list[Path] = []
    seen: set[Path] = set()
    for pattern in patterns:
        for path in _expand(pattern):
            resolved = path.resolve()
            if resolved not in seen:
                seen.add(resolved)
                paths.append(path)
    return paths


def _expand(pattern: str) -> list[Path]:
    path = Path(pattern)
    if path.is_file():
        return [path]
    if glob.has_magic(pattern):
        matches = sorted(Path(match) for match in glob.glob(pattern) if Path(match).is_file())
        if not matches:
            raise UsageError(f"no file matches {pattern!r}")
        return matches
    raise UsageError(f"{pattern}: file not found")


def order_by_chain(paths: Sequence[Path]) -> list[Path]:
    """Sort files by the seq of their first record, and put files without a record last.

    Rotated files and the active file then come in chain order whatever their names, and
    a file that repeats or skips part of the chain still fails verification.
    """
    keyed = [(_first_seq(path), index, path) for index, path in enumerate(paths)]
    keyed.sort(key=lambda item: (item[0] is None, item[0] or 0, item[1]))
    return [path for _, _, path in keyed]


def _first_seq(path: Path) -> int | None:
    for line in _read_lines(path):
        record = parse_line(line.rstrip(b"\n"))
        if record is not None and type(record.get("seq")) is int:
            seq: int = record["seq"]
            return seq
    return None


def _read_chunks(path: Path) -> Iterator[bytes]:
    try:
        with path.open("rb") as file:
            while chunk := file.read(READ_CHUNK_BYTES):
                yield chunk
    except OSError as exc:
        raise UsageError(f"{path}: cannot read: {exc.strerror}") from exc


def _read_lines(path: Path) -> Iterator[bytes]:
    try:
        with path.open("rb") as file:
            yield from file
    except OSError as exc:
        raise UsageError(f"{path}: cannot read: {exc.strerror}") from exc


if __name__ == "__main__":
    sys.exit(main())
