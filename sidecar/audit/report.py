"""Summaries of audit records: requests, entities, blocks, tokens and cost, over time.

`ReportBuilder.add` takes parsed JSON lines one at a time and keeps only counters, so a
report over millions of records needs memory for the distinct models, clients, entity
types and minutes, not for the records. Lines that are not request records (checkpoints,
operational log lines collected from the same stdout) are counted and skipped.
`render_text` formats a `Report` as terminal tables, and `sidecar.audit.report_html`
renders it as an HTML page. Nothing here reads files.
"""

from __future__ import annotations

import json
import math
import re
from collections import Counter
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, Literal, TypeGuard

BucketChoice = Literal["auto", "minute", "hour", "day"]
ValueFormatter = Callable[[float], str]

UNKNOWN = "(unknown)"
MAX_AUTO_BUCKETS = 60
MAX_CHART_BARS = 15
_AUTO_WIDTHS = (
    timedelta(minutes=1),
    timedelta(minutes=5),
    timedelta(minutes=15),
    timedelta(hours=1),
    timedelta(hours=6),
    timedelta(days=1),
    timedelta(days=7),
)
_FIXED_WIDTHS = {
    "minute": timedelta(minutes=1),
    "hour": timedelta(hours=1),
    "day": timedelta(days=1),
}
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_NUMERIC_CELL = re.compile(r"[$\d,.%-]+")
_TEXT_BAR_WIDTH = 30


@dataclass
class _Totals:
    requests: int = 0
    blocked: int = 0
    entities: int = 0
    input_tokens: int = 0
    output_tokens: int = 0
    cached_tokens: int = 0
    cost_usd: float = 0.0
    unpriced: int = 0

    def add(self, other: _Totals) -> None:
        self.requests += other.requests
        self.blocked += other.blocked
        self.entities += other.entities
        self.input_tokens += other.input_tokens
        self.output_tokens += other.output_tokens
        self.cached_tokens += other.cached_tokens
        self.cost_usd += other.cost_usd
        self.unpriced += other.unpriced


@dataclass(frozen=True)
class UsageRow:
    """Requests, tokens and estimated cost of one model or client.

    `unpriced` counts requests that reported usage but carry no `cost_usd`, because their
    model is not in the pricing table.
    """

    name: str
    requests: int
    blocked: int
    input_tokens: int
    output_tokens: int
    cached_tokens: int
    cost_usd: float
    unpriced: int


@dataclass(frozen=True)
class EntityRow:
    """How often an entity type was found and handled with one action."""

    entity_type: str
    action: str
    occurrences: int
    requests: int


@dataclass(frozen=True)
class TimeBucket:
    """Activity in the interval [start, start + width)."""

    start: datetime
    requests: int
    blocked: int
    entities: int
    cost_usd: float


@dataclass(frozen=True)
class SkippedLines:
    """Lines that did not count as request records."""

    checkpoints: int = 0
    other_records: int = 0
    not_json: int = 0
    outside_range: int = 0
    without_timestamp: int = 0


@dataclass(frozen=True)
class Report:
    """The summary of a set of audit records."""

    requests: int
    blocked: int
    first: datetime | None
    last: datetime | None
    totals: UsageRow
    statuses: tuple[tuple[str, int], ...]
    modes: tuple[tuple[str, int], ...]
    block_reasons: tuple[tuple[str, int], ...]
    entities: tuple[EntityRow, ...]
    by_model: tuple[UsageRow, ...]
    by_client: tuple[UsageRow, ...]
    bucket_width: timedelta
    timeline: tuple[TimeBucket, ...]
    skipped: SkippedLines
    sources: tuple[str, ...] = ()


@dataclass
class ReportBuilder:
    """Accumulate records into a `Report`.

    `since` and `until` (timezone-aware) keep records with since <= timestamp < until.
    `bucket` sets the width of the timeline intervals. With "auto", the width is the
    narrowest of 1 min, 5 min, 15 min, 1 h, 6 h, 1 day and 7 days that gives at most 60
    intervals.
    """

    since: datetime | None = None
    until: datetime | None = None
    bucket: BucketChoice = "auto"

    _totals: _Totals = field(default_factory=_Totals)
    _by_model: dict[str, _Totals] = field(default_factory=dict)
    _by_client: dict[str, _Totals] = field(default_factory=dict)
    _by_minute: dict[datetime, _Totals] = field(default_factory=dict)
    _statuses: Counter[str] = field(default_factory=Counter)
    _modes: Counter[str] = field(default_factory=Counter)
    _block_reasons: Counter[str] = field(default_factory=Counter)
    _entity_occurrences: Counter[tuple[str, str]] = field(default_factory=Counter)
    _entity_requests: Counter[tuple[str, str]] = field(default_factory=Counter)
    _skipped: Counter[str] = field(default_factory=Counter)
    _first: datetime | None = None
    _last: datetime | None = None

    def add_line(self, raw: bytes | str) -> None:
        """Parse one JSON line and add it. A line that is not a JSON object is only counted."""
        try:
            value = json.loads(raw)
        except (UnicodeDecodeError, ValueError):
            value = None
        if not isinstance(value, dict):
            self._skipped["not_json"] += 1
            return
        self.add(value)

    def add(self, record: Mapping[str, Any]) -> None:
        """Add one parsed record. Checkpoints and lines of other logs are counted and skipped."""
        kind = _record_kind(record)
        if kind != "request":
            self._skipped["checkpoints" if kind == "checkpoint" else "other_records"] += 1
            return

        moment = parse_timestamp(record.get("timestamp"))
        if moment is None:
            self._skipped["without_timestamp"] += 1
        elif not self._in_range(moment):
            self._skipped["outside_range"] += 1
            return

        totals = _totals_of(record)
        self._count_request(record, totals, moment)

    def build(self) -> Report:
        """Return the report of every record added so far."""
        width = self._bucket_width()
        return Report(
            requests=self._totals.requests,
            blocked=self._totals.blocked,
            first=self._first,
            last=self._last,
            totals=_usage_row("all", self._totals),
            statuses=_sorted_counts(self._statuses),
            modes=_sorted_counts(self._modes),
            block_reasons=_sorted_counts(self._block_reasons),
            entities=self._entity_rows(),
            by_model=_usage_rows(self._by_model),
            by_client=_usage_rows(self._by_client),
            bucket_width=width,
            timeline=self._timeline(width),
            skipped=SkippedLines(**self._skipped),
        )

    def _in_range(self, moment: datetime) -> bool:
        if self.since is not None and moment < self.since:
            return False
        return self.until is None or moment < self.until

    def _count_request(
        self, record: Mapping[str, Any], totals: _Totals, moment: datetime | None
    ) -> None:
        self._totals.add(totals)
        self._by_model.setdefault(_text(record.get("model")), _Totals()).add(totals)
        self._by_client.setdefault(_client_name(record), _Totals()).add(totals)
        self._statuses[_text(record.get("status"))] += 1
        self._modes[_text(record.get("mode"))] += 1
        if totals.blocked:
            self._block_reasons[_text(record.get("block_reason"))] += 1
        for key, count in _entity_counts(record).items():
            self._entity_occurrences[key] += count
            self._entity_requests[key] += 1

        if moment is not None:
            minute = moment.replace(second=0, microsecond=0)
            self._by_minute.setdefault(minute, _Totals()).add(totals)
            self._first = moment if self._first is None else min(self._first, moment)
            self._last = moment if self._last is None else max(self._last, moment)

    def _entity_rows(self) -> tuple[EntityRow, ...]:
        rows = [
            EntityRow(
                entity_type, action, occurrences, self._entity_requests[(entity_type, action)]
            )
            for (entity_type, action), occurrences in self._entity_occurrences.items()
        ]
        return tuple(sorted(rows, key=lambda row: (-row.occurrences, row.entity_type, row.action)))

    def _bucket_width(self) -> timedelta:
        if self.bucket != "auto":
            return _FIXED_WIDTHS[self.bucket]
        if self._first is None or self._last is None:
            return _AUTO_WIDTHS[0]
        span = self._last - self._first
        for width in _AUTO_WIDTHS:
            if span / width < MAX_AUTO_BUCKETS:
                return width
        return _AUTO_WIDTHS[-1]

    def _timeline(self, width: timedelta) -> tuple[TimeBucket, ...]:
        merged: dict[datetime, _Totals] = {}
        for minute, totals in self._by_minute.items():
            merged.setdefault(_floor(minute, width), _Totals()).add(totals)
        if not merged:
            return ()

        buckets = []
        start, end = min(merged), max(merged)
        while start <= end:
            totals = merged.get(start, _Totals())
            buckets.append(
                TimeBucket(start, totals.requests, totals.blocked, totals.entities, totals.cost_usd)
            )
            start += width
        return tuple(buckets)


def _record_kind(record: Mapping[str, Any]) -> str:
    kind = record.get("record_type")
    if kind == "checkpoint":
        return "checkpoint"
    if kind in (None, "request") and "schema_version" in record and "request_id" in record:
        return "request"
    return "other"


def _totals_of(record: Mapping[str, Any]) -> _Totals:
    usage = record.get("usage")
    usage = usage if isinstance(usage, dict) else {}
    cost = record.get("cost_usd")
    cost_usd = float(cost) if _is_number(cost) else None

    return _Totals(
        requests=1,
        blocked=1 if record.get("blocked") is True else 0,
        entities=sum(_entity_counts(record).values()),
        input_tokens=_count(usage.get("input_tokens")),
        output_tokens=_count(usage.get("output_tokens")),
        cached_tokens=_count(usage.get("cached_tokens")),
        cost_usd=cost_usd if cost_usd is not None else 0.0,
        unpriced=1 if usage and cost_usd is None else 0,
    )


def _entity_counts(record: Mapping[str, Any]) -> dict[tuple[str, str], int]:
    entities = record.get("entities")
    if not isinstance(entities, dict):
        return {}
    counts: dict[tuple[str, str], int] = {}
    for entity_type, details in entities.items():
        if not isinstance(details, dict):
            continue
        key = (str(entity_type), _text(details.get("action")))
        counts[key] = counts.get(key, 0) + _count(details.get("count"))
    return counts


def _client_name(record: Mapping[str, Any]) -> str:
    client = record.get("client")
    return _text(client.get("service")) if isinstance(client, dict) else UNKNOWN


def _is_number(value: Any) -> TypeGuard[int | float]:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def _count(value: Any) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) and value > 0 else 0


def _text(value: Any) -> str:
    if value is None or value == "":
        return UNKNOWN
    return str(value)


def _sorted_counts(counter: Counter[str]) -> tuple[tuple[str, int], ...]:
    return tuple(sorted(counter.items(), key=lambda item: (-item[1], item[0])))


def _usage_row(name: str, totals: _Totals) -> UsageRow:
    return UsageRow(
        name=name,
        requests=totals.requests,
        blocked=totals.blocked,
        input_tokens=totals.input_tokens,
        output_tokens=totals.output_tokens,
        cached_tokens=totals.cached_tokens,
        cost_usd=totals.cost_usd,
        unpriced=totals.unpriced,
    )


def _usage_rows(groups: Mapping[str, _Totals]) -> tuple[UsageRow, ...]:
    rows = [_usage_row(name, totals) for name, totals in groups.items()]
    return tuple(sorted(rows, key=lambda row: (-row.cost_usd, -row.requests, row.name)))


def _floor(moment: datetime, width: timedelta) -> datetime:
    steps = (moment - _EPOCH) // width
    return _EPOCH + steps * width


def parse_timestamp(value: Any) -> datetime | None:
    """Parse an ISO 8601 timestamp into an aware UTC datetime, or return None if it is invalid.

    A timestamp without a UTC offset is taken as UTC.
    """
    if not isinstance(value, str):
        return None
    try:
        moment = datetime.fromisoformat(value)
    except ValueError:
        return None
    if moment.tzinfo is None:
        return moment.replace(tzinfo=UTC)
    return moment.astimezone(UTC)


def summarize(records: Iterable[Mapping[str, Any]], bucket: BucketChoice = "auto") -> Report:
    """Return the report of `records`, a convenience over `ReportBuilder`."""
    builder = ReportBuilder(bucket=bucket)
    for record in records:
        builder.add(record)
    return builder.build()


# Formatting shared by both renderers


def format_cost(value: float) -> str:
    """Format a USD amount: four decimals below $100, two above."""
    return f"${value:,.4f}" if value < 100 else f"${value:,.2f}"


def format_int(value: int) -> str:
    return f"{value:,}"


def format_share(part: int, whole: int) -> str:
    return f"{100 * part / whole:.1f}%" if whole else "0.0%"


def format_moment(moment: datetime | None) -> str:
    return moment.strftime("%Y-%m-%d %H:%M:%SZ") if moment else "-"


def format_width(width: timedelta) -> str:
    seconds = int(width.total_seconds())
    for unit, size in (("day", 86400), ("hour", 3600), ("min", 60)):
        if seconds % size == 0:
            count = seconds // size
            return f"{count} {unit}" if count != 1 else unit
    return f"{seconds} s"


def usage_table(rows: Sequence[UsageRow], label: str) -> tuple[list[str], list[list[str]]]:
    headers = [
        label,
        "requests",
        "blocked",
        "input tokens",
        "output tokens",
        "cached tokens",
        "cost (est.)",
        "unpriced",
    ]
    body = [
        [
            row.name,
            format_int(row.requests),
            format_int(row.blocked),
            format_int(row.input_tokens),
            format_int(row.output_tokens),
            format_int(row.cached_tokens),
            format_cost(row.cost_usd),
            format_int(row.unpriced),
        ]
        for row in rows
    ]
    return headers, body


def entity_table(rows: Sequence[EntityRow]) -> tuple[list[str], list[list[str]]]:
    headers = ["entity type", "action", "occurrences", "requests"]
    body = [
        [row.entity_type, row.action, format_int(row.occurrences), format_int(row.requests)]
        for row in rows
    ]
    return headers, body


def count_table(counts: Sequence[tuple[str, int]], label: str) -> tuple[list[str], list[list[str]]]:
    return [label, "requests"], [[name, format_int(count)] for name, count in counts]


def timeline_table(report: Report) -> tuple[list[str], list[list[str]]]:
    headers = ["start (UTC)", "requests", "blocked", "entities", "cost (est.)"]
    body = [
        [
            format_moment(bucket.start),
            format_int(bucket.requests),
            format_int(bucket.blocked),
            format_int(bucket.entities),
            format_cost(bucket.cost_usd),
        ]
        for bucket in report.timeline
    ]
    return headers, body


def skipped_lines(skipped: SkippedLines) -> list[str]:
    notes = {
        "checkpoint records": skipped.checkpoints,
        "lines of other logs": skipped.other_records,
        "lines that are not JSON (torn or foreign)": skipped.not_json,
        "records outside the time range": skipped.outside_range,
        "records without a valid timestamp (counted, not in the timeline)": (
            skipped.without_timestamp
        ),
    }
    return [f"{what}: {format_int(count)}" for what, count in notes.items() if count]


# Terminal tables


def render_text(report: Report) -> str:
    """Format `report` as plain-text tables for a terminal."""
    sections = [_text_summary(report)]
    tables = [
        ("Requests by status", count_table(report.statuses, "status")),
        ("Requests by mode", count_table(report.modes, "mode")),
        ("Entities by type and action", entity_table(report.entities)),
        ("Blocked requests by reason", count_table(report.block_reasons, "reason")),
        ("Tokens and cost by model", usage_table(report.by_model, "model")),
        ("Tokens and cost by client", usage_table(report.by_client, "client")),
        (f"Over time (per {format_width(report.bucket_width)})", _text_timeline(report)),
    ]
    for title, (headers, rows) in tables:
        if rows:
            sections.append(f"{title}\n{_text_table(headers, rows)}")
    skipped = skipped_lines(report.skipped)
    if skipped:
        sections.append("Skipped\n" + "\n".join(f"  {line}" for line in skipped))
    return "\n\n".join(sections) + "\n"


def _text_timeline(report: Report) -> tuple[list[str], list[list[str]]]:
    headers, rows = timeline_table(report)
    peak = max((bucket.requests for bucket in report.timeline), default=0)
    for row, bucket in zip(rows, report.timeline, strict=True):
        row.append("#" * math.ceil(_TEXT_BAR_WIDTH * bucket.requests / peak) if peak else "")
    return [*headers, "requests"], rows


def _text_summary(report: Report) -> str:
    totals = report.totals
    cost = f"Estimated cost: {format_cost(totals.cost_usd)}"
    if totals.unpriced:
        cost += f" ({format_int(totals.unpriced)} requests of unpriced models are not included)"
    lines = [
        f"Audit report: {format_int(report.requests)} requests, "
        f"{format_moment(report.first)} to {format_moment(report.last)}",
        f"Blocked: {format_int(report.blocked)} ({format_share(report.blocked, report.requests)})",
        f"Tokens: {format_int(totals.input_tokens)} input "
        f"({format_int(totals.cached_tokens)} cached), {format_int(totals.output_tokens)} output",
        cost,
    ]
    return "\n".join(lines)


def _text_table(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    columns = range(len(headers))
    widths = [max(len(headers[column]), *(len(row[column]) for row in rows)) for column in columns]
    numeric = [all(_NUMERIC_CELL.fullmatch(row[column]) for row in rows) for column in columns]

    def line(cells: Sequence[str]) -> str:
        padded = [
            cell.rjust(width) if right else cell.ljust(width)
            for cell, width, right in zip(cells, widths, numeric, strict=True)
        ]
        return "  " + "  ".join(padded).rstrip()

    rule = "  " + "  ".join("-" * width for width in widths)
    return "\n".join([line(headers), rule, *(line(row) for row in rows)])
