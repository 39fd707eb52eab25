"""The `Finding` span type and the merging of overlapping findings."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any


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


def _default_rank(finding: Finding) -> tuple[float, int]:
    return (finding.score, finding.end - finding.start)


def merge_overlapping(
    findings: Iterable[Finding], rank: Callable[[Finding], Any] = _default_rank
) -> list[Finding]:
    """Merge overlapping findings into one finding per group, sorted by start.

    The merged span covers the union of the group, so no character of any
    detection is left behind. The group takes the entity type of its
    member with the highest `rank`, by default the highest score and then the
    longer span, so an email address beats the URL found inside its domain.
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
    return [_merge_group(group, rank) for group in groups]


def _merge_group(group: list[Finding], rank: Callable[[Finding], Any]) -> Finding:
    if len(group) == 1:
        return group[0]
    best = max(group, key=rank)
    return Finding(
        entity_type=best.entity_type,
        start=min(f.start for f in group),
        end=max(f.end for f in group),
        score=best.score,
        recognizer=best.recognizer,
    )
