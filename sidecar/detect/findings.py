"""The `Finding` span type and the merging of overlapping findings."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Finding:
    """A detected PII span in one text, with offsets in Unicode code points."""

    entity_type: str
    start: int
    end: int
    score: float
    recognizer: str = ""

    def overlaps(self, other: Finding) -> bool:
        return self.start < other.end and other.start < self.end


def merge_overlapping(findings: Iterable[Finding]) -> list[Finding]:
    """Merge overlapping findings into one finding per group, sorted by start.

    The merged span covers the union of the group, so no character of any
    detection is left behind. The group takes the entity type of its
    highest-scoring member; on equal scores the longer span wins, so an email
    address beats the URL found inside its domain.
    """
    ordered = sorted(findings, key=lambda f: (f.start, -f.end))
    groups: list[list[Finding]] = []
    group_end = -1
    for finding in ordered:
        if groups and finding.start < group_end:
            groups[-1].append(finding)
            group_end = max(group_end, finding.end)
        else:
            groups.append([finding])
            group_end = finding.end
    return [_merge_group(group) for group in groups]


def _merge_group(group: list[Finding]) -> Finding:
    if len(group) == 1:
        return group[0]
    best = max(group, key=lambda f: (f.score, f.end - f.start))
    return Finding(
        entity_type=best.entity_type,
        start=min(f.start for f in group),
        end=max(f.end for f in group),
        score=best.score,
        recognizer=best.recognizer,
    )
