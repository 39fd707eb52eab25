"""Tests of audit report aggregation, its text and HTML renderings, and `audit report`."""

from __future__ import annotations

import io
import json
import re
import xml.etree.ElementTree as ElementTree
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from sidecar.audit import cli
from sidecar.audit.report import Report, ReportBuilder, render_text, summarize
from sidecar.audit.report_html import bar_chart, render_html
from sidecar.audit.sink import ChainedFileSink

START = datetime(2026, 12, 4, 8, 0, tzinfo=UTC)


def record(
    minute: int,
    *,
    model: str | None = "gpt-4o-mini",
    service: str = "checkout",
    blocked: bool = False,
    entities: dict[str, dict[str, Any]] | None = None,
    usage: dict[str, int] | None = None,
    cost: float | None = 0.001,
    status: int = 200,
) -> dict[str, Any]:
    moment = START + timedelta(minutes=minute)
    return {
        "schema_version": 1,
        "timestamp": moment.isoformat(timespec="milliseconds").replace("+00:00", "Z"),
        "request_id": f"req-{minute}",
        "route": "/v1/chat/completions",
        "model": model,
        "mode": "enforce",
        "entities": entities
        if entities is not None
        else {"PERSON": {"count": 2, "action": "placeholder"}},
        "blocked": blocked,
        "block_reason": "CREDIT_CARD" if blocked else None,
        "status": 400 if blocked else status,
        "client": {"service": service},
        "usage": usage
        if usage is not None
        else {"input_tokens": 100, "output_tokens": 40, "cached_tokens": 10},
        "cost_usd": cost,
    }


def sample_report() -> Report:
    records = [
        record(0),
        record(5, model="claude-sonnet-4-5", service="search", cost=0.01),
        record(
            10,
            blocked=True,
            entities={"CREDIT_CARD": {"count": 1, "action": "block"}},
            usage={},
            cost=None,
        ),
        record(70, model="mystery-model", cost=None),
        {"schema_version": 1, "record_type": "checkpoint", "checkpoint": {"reason": "open"}},
        {"event": "request finished", "level": "info"},
    ]
    return summarize(records)


# Aggregation


def test_report_counts_requests_and_blocks() -> None:
    report = sample_report()

    assert report.requests == 4
    assert report.blocked == 1
    assert report.block_reasons == (("CREDIT_CARD", 1),)
    assert dict(report.statuses) == {"200": 3, "400": 1}


def test_report_counts_entities_by_type_and_action() -> None:
    rows = {(row.entity_type, row.action): row for row in sample_report().entities}

    assert rows[("PERSON", "placeholder")].occurrences == 6
    assert rows[("PERSON", "placeholder")].requests == 3
    assert rows[("CREDIT_CARD", "block")].occurrences == 1


def test_report_sums_tokens_and_cost_by_model() -> None:
    rows = {row.name: row for row in sample_report().by_model}

    assert rows["gpt-4o-mini"].requests == 2
    assert rows["gpt-4o-mini"].input_tokens == 100
    assert rows["gpt-4o-mini"].cost_usd == pytest.approx(0.001)
    assert rows["claude-sonnet-4-5"].cost_usd == pytest.approx(0.01)
    assert rows["mystery-model"].unpriced == 1


def test_report_counts_unpriced_only_with_usage() -> None:
    report = sample_report()

    assert report.totals.unpriced == 1
    assert report.totals.cost_usd == pytest.approx(0.011)


def test_report_groups_by_client_service() -> None:
    rows = {row.name: row for row in sample_report().by_client}

    assert rows["checkout"].requests == 3
    assert rows["search"].requests == 1
    assert rows["checkout"].blocked == 1


def test_report_skips_checkpoints_and_other_logs() -> None:
    skipped = sample_report().skipped

    assert skipped.checkpoints == 1
    assert skipped.other_records == 1


def test_report_counts_lines_that_are_not_json() -> None:
    builder = ReportBuilder()
    builder.add_line(json.dumps(record(0)).encode() + b"\n")
    builder.add_line(b'{"schema_version":1,"request_id":"req-torn","ti')
    builder.add_line(b"[1, 2]\n")

    report = builder.build()

    assert report.requests == 1
    assert report.skipped.not_json == 2


def test_report_missing_fields_count_as_unknown() -> None:
    report = summarize([{"schema_version": 1, "request_id": "req-bare"}])

    assert report.requests == 1
    assert report.by_model[0].name == "(unknown)"
    assert report.by_client[0].name == "(unknown)"
    assert report.skipped.without_timestamp == 1
    assert report.timeline == ()


def test_report_ignores_malformed_numbers() -> None:
    bad = record(0, usage={"input_tokens": -5, "output_tokens": True}, cost=float("nan"))  # type: ignore[dict-item]
    bad["entities"] = {"PERSON": {"count": "many", "action": "redact"}, "EMAIL": "x"}

    report = summarize([bad])

    assert report.totals.input_tokens == 0
    assert report.totals.output_tokens == 0
    assert report.totals.cost_usd == 0.0
    assert report.entities[0].occurrences == 0


# Time


def test_timeline_auto_width_and_empty_intervals() -> None:
    report = sample_report()

    assert report.bucket_width == timedelta(minutes=5)
    assert report.timeline[0].start == START
    assert len(report.timeline) == 15
    assert report.timeline[1].requests == 1
    assert report.timeline[3].requests == 0


def test_timeline_fixed_hour_width() -> None:
    report = summarize([record(0), record(30), record(70)], bucket="hour")

    assert [bucket.requests for bucket in report.timeline] == [2, 1]
    assert report.timeline[1].start == START + timedelta(hours=1)


def test_timeline_auto_width_for_long_span() -> None:
    report = summarize([record(0), record(60 * 24 * 20)])

    assert report.bucket_width == timedelta(days=1)
    assert len(report.timeline) == 21


def test_since_and_until_filter_records() -> None:
    builder = ReportBuilder(since=START + timedelta(minutes=5), until=START + timedelta(minutes=70))
    for minute in (0, 5, 69, 70):
        builder.add(record(minute))

    report = builder.build()

    assert report.requests == 2
    assert report.skipped.outside_range == 2


# Rendering


def test_text_report_lists_sections() -> None:
    text = render_text(sample_report())

    for heading in (
        "Audit report: 4 requests",
        "Entities by type and action",
        "Blocked requests by reason",
        "Tokens and cost by model",
        "Tokens and cost by client",
        "Over time (per 5 min)",
        "checkpoint records: 1",
    ):
        assert heading in text


def test_text_report_aligns_numbers_right() -> None:
    text = render_text(summarize([record(0, usage={"input_tokens": 12345, "output_tokens": 1})]))
    model_rows = text.split("Tokens and cost by model\n")[1].splitlines()

    assert model_rows[0].endswith("unpriced")
    assert re.search(r"\s12,345\s", model_rows[2])


def test_html_report_is_self_contained() -> None:
    page = render_html(sample_report())

    assert page.startswith("<!DOCTYPE html>")
    assert "<script" not in page
    assert "<link" not in page
    assert not re.search(r"(src|href)=", page)
    assert page.count("<svg") == 6


def test_html_report_svg_is_well_formed() -> None:
    page = render_html(sample_report())

    for svg in re.findall(r"<svg.*?</svg>", page, flags=re.DOTALL):
        element = ElementTree.fromstring(svg)
        assert element.tag == "{http://www.w3.org/2000/svg}svg"


def test_html_report_escapes_record_values() -> None:
    hostile = "<script>alert(1)</script>"
    report = summarize([record(0, service=hostile, model='"><img onerror=x>')])

    page = render_html(report, title="<b>audit</b>")

    assert "<script>" not in page
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page
    assert "<img" not in page
    assert "<b>audit</b>" not in page


def test_bar_chart_folds_long_tail_into_other() -> None:
    items = [(f"service-{index}", float(index)) for index in range(20)]

    svg = bar_chart(items, "cost", "cost", str)

    assert svg.count("<rect") == 15
    assert "other (6)" in svg


def test_empty_report_renders() -> None:
    report = summarize([])

    assert "0 requests" in render_text(report)
    assert "<svg" not in render_html(report)


# Report command


def run_report(*arguments: str) -> tuple[int, str]:
    parser = cli.argparse.ArgumentParser()
    commands = parser.add_subparsers()
    cli.register(commands)
    args = parser.parse_args(["audit", "report", *arguments])
    out = io.StringIO()
    status = cli.run_report(args, out=out)
    return status, out.getvalue()


def write_audit_files(directory: Path, count: int) -> Path:
    path = directory / "audit.log"
    with ChainedFileSink(path, None, checkpoint_every=3, rotate_bytes=2000) as sink:
        for minute in range(count):
            sink.write(record(minute, blocked=minute % 4 == 0))
    return path


def test_report_command_reads_rotated_files(tmp_path: Path) -> None:
    write_audit_files(tmp_path, 12)

    status, output = run_report(str(tmp_path / "audit.log*"))

    assert status == 0
    assert output.startswith("Audit report: 12 requests")
    assert "Blocked: 3 (25.0%)" in output


def test_report_command_writes_html_file(tmp_path: Path) -> None:
    write_audit_files(tmp_path, 5)
    target = tmp_path / "report.html"

    status, output = run_report(str(tmp_path / "audit.log*"), "--format", "html", "-o", str(target))

    assert status == 0
    assert output == ""
    assert "<svg" in target.read_text(encoding="utf-8")


def test_report_command_filters_by_time(tmp_path: Path) -> None:
    write_audit_files(tmp_path, 10)

    status, output = run_report(
        str(tmp_path / "audit.log*"), "--since", "2026-12-04T08:05:00Z", "--bucket", "minute"
    )

    assert status == 0
    assert output.startswith("Audit report: 5 requests")
    assert "Over time (per min)" in output


def test_report_command_rejects_invalid_time(tmp_path: Path) -> None:
    with pytest.raises(SystemExit):
        run_report(str(tmp_path / "audit.log"), "--since", "yesterday")


def test_report_command_missing_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    status, _ = run_report(str(tmp_path / "absent.log"))

    assert status == 2
    assert "file not found" in capsys.readouterr().err
