"""Analysis of long texts in overlapping chunks, so cost grows linearly with length.

spaCy rejects a text longer than `nlp.max_length` (1,000,000 characters by
default), and parts of Presidio's analysis and of the tuned recognizers cost
results x text length, which makes a 256 KB text take tens of seconds in one
piece. `analyze_in_chunks` cuts every text longer than `CHUNK_CHARS` into
chunks that each own a stretch of the text and see `MARGIN_CHARS` more on each
side. A chunk keeps only the findings that start in the stretch it owns, so
each finding is reported once, by a chunk that also saw the text around it.

Cut points are chosen at a line break when the last quarter of the stretch
has one, else at whitespace, so chunks rarely split a line or a word. Texts
up to `CHUNK_CHARS` long are analyzed whole, unchanged.

Limits: an entity longer than `MARGIN_CHARS` that crosses a cut point is cut
at the edge of the chunk that owns its start. A recognizer that reads the
whole line around a match (such as a check whether the line is code) gets
at most `MARGIN_CHARS` of that line beyond the owned stretch, so a line
longer than that may be judged differently than in the whole text.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TypeVar

from sidecar.detect.findings import Finding

P = TypeVar("P")
Analyze = Callable[[Sequence[str], P], list[list[Finding]]]

CHUNK_CHARS = 8192
MARGIN_CHARS = 512
# How far before a cut point a line break or a space may be to move the cut there.
_SNAP_FRACTION = 4


@dataclass(frozen=True, slots=True)
class Chunk:
    """A window `[start, end)` of a text, owning the findings that start in [own_start, own_end)."""

    start: int
    end: int
    own_start: int
    own_end: int

    def owns(self, finding: Finding) -> bool:
        position = self.start + finding.start
        return self.own_start <= position < self.own_end


def split_text(
    text: str, chunk_chars: int = CHUNK_CHARS, margin_chars: int = MARGIN_CHARS
) -> list[Chunk]:
    """Cut `text` into chunks whose owned stretches cover it without gaps or overlap."""
    if chunk_chars <= 0 or margin_chars < 0:
        raise ValueError(
            f"chunk size {chunk_chars} must be positive and margin {margin_chars} not negative"
        )
    length = len(text)
    if length <= chunk_chars:
        return [Chunk(0, length, 0, length)]

    chunks = []
    own_start = 0
    while own_start < length:
        own_end = (
            length
            if length - own_start <= chunk_chars
            else _cut_point(text, own_start + chunk_chars, chunk_chars)
        )
        start = max(0, own_start - margin_chars)
        end = min(length, own_end + margin_chars)
        chunks.append(Chunk(start, end, own_start, own_end))
        own_start = own_end
    return chunks


def _cut_point(text: str, limit: int, chunk_chars: int) -> int:
    """Return a cut point at most `limit`: after a line break, else after a space, else `limit`."""
    floor = limit - chunk_chars // _SNAP_FRACTION
    line_break = text.rfind("\n", floor, limit)
    if line_break >= 0:
        return line_break + 1
    for position in range(limit - 1, floor - 1, -1):
        if text[position].isspace():
            return position + 1
    return limit


def analyze_in_chunks(
    analyze: Analyze[P],
    texts: Sequence[str],
    options: P,
    chunk_chars: int = CHUNK_CHARS,
    margin_chars: int = MARGIN_CHARS,
) -> list[list[Finding]]:
    """Run `analyze(pieces, options)` once over every chunk of every text; return findings per text.

    Findings carry offsets into the whole text, and come chunk by chunk in
    the order `analyze` returned them.
    """
    plans = [split_text(text, chunk_chars, margin_chars) for text in texts]
    pieces = [
        text[chunk.start : chunk.end]
        for text, chunks in zip(texts, plans, strict=True)
        for chunk in chunks
    ]
    if all(len(chunks) == 1 for chunks in plans):
        return analyze(pieces, options)

    found = iter(analyze(pieces, options))
    results = []
    for chunks in plans:
        findings: list[Finding] = []
        for chunk in chunks:
            findings.extend(_shift(f, chunk.start) for f in next(found) if chunk.owns(f))
        results.append(findings)
    return results


def _shift(finding: Finding, offset: int) -> Finding:
    if offset == 0:
        return finding
    return Finding(
        entity_type=finding.entity_type,
        start=finding.start + offset,
        end=finding.end + offset,
        score=finding.score,
        recognizer=finding.recognizer,
    )
