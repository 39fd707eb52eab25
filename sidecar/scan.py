"""`pii-sidecar scan`: run a policy over one text the way the proxy runs it over a user message.

The text goes through the same detector, allow list, thresholds, merging and
actions as a request, and the output shows what the upstream would receive.
Offsets in the JSON output are Unicode code points into the input, which is
read as UTF-8 bytes so that line endings are counted as they are.
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from sidecar.errors import SidecarError
from sidecar.policy.load import load_policy
from sidecar.policy.model import Action, Mode, Policy
from sidecar.redact.plan import Decision, Plan, Span, build_plan

_RESET = "\x1b[0m"
# Red for values that never reach the upstream as they were, yellow for
# partial or one-way forms, green for reversible ones, dim for allowed values.
_COLOURS = {
    Action.BLOCK: "\x1b[1;41;97m",
    Action.REDACT: "\x1b[1;31m",
    Action.MASK: "\x1b[1;33m",
    Action.HASH: "\x1b[1;33m",
    Action.PLACEHOLDER: "\x1b[1;32m",
    Action.SURROGATE: "\x1b[1;36m",
    Action.ALLOW: "\x1b[2;4m",
}


@dataclass(frozen=True)
class ScanResult:
    """The rewritten text, the decisions on the input, and where each sits in the output."""

    policy: Policy
    input: str
    plan: Plan

    @property
    def text(self) -> str:
        return self.plan.texts[0]

    @property
    def decisions(self) -> list[Decision]:
        return self.plan.decisions[0]

    @property
    def output_spans(self) -> list[Span]:
        return self.plan.spans[0]

    @property
    def blocked(self) -> bool:
        return bool(self.plan.blocked_counts) and self.policy.mode is Mode.ENFORCE


def read_input(source: str) -> str:
    """Read `source` (a path, or `-` for standard input) as UTF-8 without newline translation."""
    try:
        raw = sys.stdin.buffer.read() if source == "-" else Path(source).read_bytes()
    except OSError as exc:
        raise SidecarError(f"{source}: cannot read input: {exc.strerror}") from exc
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise SidecarError(f"{source}: input is not valid UTF-8 (byte {exc.start})") from exc


def scan_text(text: str, policy: Policy, model: str | None = None) -> ScanResult:
    """Detect and plan `text` under `policy` with a freshly loaded detector."""
    from sidecar.detect.engine import DEFAULT_MODEL, Detector

    detector = Detector(model=model or DEFAULT_MODEL)
    findings = detector.analyze([text], policy)
    return ScanResult(policy, text, build_plan(policy, [text], findings))


def to_json(result: ScanResult) -> dict[str, Any]:
    """Return the JSON document of a scan: the text, the findings and the verdict."""
    return {
        "text": result.text,
        "findings": [
            {
                "entity_type": decision.finding.entity_type,
                "start": decision.finding.start,
                "end": decision.finding.end,
                "score": round(decision.finding.score, 4),
                "action": decision.action.value,
            }
            for decision in result.decisions
        ],
        "policy": {"name": result.policy.name, "hash": result.policy.content_hash},
        "mode": result.policy.mode.value,
        "blocked": result.plan.blocked_counts if result.blocked else {},
    }


def highlight(result: ScanResult, colour: bool) -> str:
    """Return the rewritten text with each decision's span in the colour of its action."""
    if not colour:
        return result.text
    pieces: list[str] = []
    position = 0
    for decision, (start, end) in zip(result.decisions, result.output_spans, strict=True):
        pieces += [
            result.text[position:start],
            _COLOURS[decision.action],
            result.text[start:end],
            _RESET,
        ]
        position = end
    pieces.append(result.text[position:])
    return "".join(pieces)


def findings_table(decisions: Sequence[Decision]) -> str:
    """Return a plain-text table of entity type, input offsets, score and action."""
    rows = [("ENTITY", "START", "END", "SCORE", "ACTION")]
    rows += [
        (
            d.finding.entity_type,
            str(d.finding.start),
            str(d.finding.end),
            f"{d.finding.score:.2f}",
            d.action.value,
        )
        for d in decisions
    ]
    widths = [max(len(row[column]) for row in rows) for column in range(len(rows[0]))]
    return "\n".join(
        "  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip()
        for row in rows
    )


def render_text(result: ScanResult, colour: bool) -> str:
    """Return the text report: the rewritten text, a table of findings and the verdict."""
    policy = result.policy
    lines = [highlight(result, colour), ""]
    if result.decisions:
        lines.append(findings_table(result.decisions))
    else:
        lines.append("no findings")
    lines.append("")
    lines.append(f"policy {policy.name} ({policy.content_hash}), mode {policy.mode.value}")
    if result.blocked:
        counts = ", ".join(
            f"{entity} x{count}" for entity, count in sorted(result.plan.blocked_counts.items())
        )
        lines.append(f"blocked: the proxy would reject this request, because it contains {counts}")
    elif policy.mode is Mode.AUDIT:
        lines.append("audit mode: the proxy would forward the text unchanged")
    return "\n".join(lines) + "\n"


def use_colour(choice: str, stream: IO[str]) -> bool:
    """Decide on colour: `always`, `never`, or `auto` (a terminal and no NO_COLOR variable)."""
    if choice == "always":
        return True
    if choice == "never":
        return False
    return stream.isatty() and not os.environ.get("NO_COLOR")


def run_scan(
    policy_path: str, source: str, output_format: str, colour: str, model: str | None
) -> int:
    """Run `pii-sidecar scan` and write the report to standard output; return the exit status."""
    policy = load_policy(policy_path)
    result = scan_text(read_input(source), policy, model)
    if output_format == "json":
        json.dump(to_json(result), sys.stdout, ensure_ascii=False, indent=2)
        sys.stdout.write("\n")
    else:
        sys.stdout.write(render_text(result, use_colour(colour, sys.stdout)))
    return 0
