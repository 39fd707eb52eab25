"""Tests for values that are part of code: glued tokens, identifiers and epoch timestamps.

A value inside a longer token (a digest, a UUID, a dotted version, a snake_case
or CamelCase identifier) is not PII even when its characters look like a phone
number or a licence number, so tuned recognizers drop such matches.
"""

from __future__ import annotations

import re

# Characters that never occur in a person's or a place's name but are common in code.
CODE_CHARACTERS = frozenset('_(){}[]<>=;/\\`$@|"*&^~+:#%\n\t')
_CAMEL_CASE = re.compile(r"[a-z][A-Z]")
_NAME_PREFIX_CAMEL = re.compile(r"^(?:Mc|Mac|O'|D')")
_EPOCH_SECONDS = re.compile(r"1\d{9}")
# ISO 8601 dates with an optional time and offset, and times of day with seconds.
_TIMESTAMP = re.compile(
    r"\d{4}-\d{2}-\d{2}(?:[T ]\d{2}:\d{2}(?::\d{2}(?:[.,]\d+)?)?(?:Z|[+-]\d{2}:?\d{2})?)?"
    r"|\d{2}:\d{2}:\d{2}(?:[.,]\d+)?(?:Z|[+-]\d{2}:?\d{2})?"
)
_CODE_LINE = re.compile(
    r"^\s*(?:def|class|import|from|return|public|private|protected|static|final|const|let|var|"
    r"func|fn|package|use|struct|impl|pub|interface|export|assert|#include|#define)\b"
    r"|\s(?:=|:=|==|\+=|->|=>)\s|[{;]\s*$"
)
_EPOCH_MILLISECONDS = re.compile(r"1\d{12}")


def is_glued(text: str, start: int, end: int) -> bool:
    """Return True when `text[start:end]` continues a longer token on either side.

    A letter, digit or underscore next to the match continues it, and so does a
    dot or hyphen that is itself followed by a letter or digit (`v1.2.3`,
    `a94a8fe5-...`), and a `::` path separator (`u16::from`). Separators such
    as spaces, `=`, a single `:` and commas do not.
    """
    before = text[start - 1] if start > 0 else ""
    after = text[end] if end < len(text) else ""
    if _continues(before) or _continues(after):
        return True

    if text[end : end + 2] == "::" or text[max(0, start - 2) : start] == "::":
        return True
    before_2 = text[start - 2] if start > 1 else ""
    after_2 = text[end + 1] if end + 1 < len(text) else ""
    return (before in ".-" and _continues(before_2)) or (after in ".-" and _continues(after_2))


def _continues(char: str) -> bool:
    return bool(char) and (char.isalnum() or char == "_")


def is_epoch_timestamp(value: str) -> bool:
    """Return True for a bare Unix timestamp in seconds or milliseconds (2001 to 2033)."""
    return bool(_EPOCH_SECONDS.fullmatch(value) or _EPOCH_MILLISECONDS.fullmatch(value))


def looks_like_code(value: str) -> bool:
    """Return True when a span detected as a name contains code syntax or an identifier."""
    if any(char in CODE_CHARACTERS for char in value):
        return True
    if any(char.isdigit() for char in value):
        return True
    if re.search(r"\w\.\w", value):
        return True
    return any(
        _CAMEL_CASE.search(word) and not _NAME_PREFIX_CAMEL.match(word) for word in value.split()
    )


def timestamp_spans(text: str) -> list[tuple[int, int]]:
    """Return the (start, end) offsets of ISO 8601 dates, date-times and times in `text`."""
    return [match.span() for match in _TIMESTAMP.finditer(text)]


def overlaps_any(start: int, end: int, spans: list[tuple[int, int]]) -> bool:
    """Return True when [start, end) overlaps one of `spans`."""
    return any(start < span_end and span_start < end for span_start, span_end in spans)


def is_code_line(text: str, position: int) -> bool:
    """Return True when the line around `position` reads as a statement of source code.

    The line starts with a declaration keyword (`def`, `class`, `const`, ...),
    contains a spaced assignment or arrow (` = `, ` := `, ` -> `), or ends with
    `{` or `;`. JSON objects, YAML and log lines do not count.
    """
    line_start = text.rfind("\n", 0, position) + 1
    line_end = text.find("\n", position)
    line = text[line_start : line_end if line_end >= 0 else len(text)]
    return bool(_CODE_LINE.search(line))
