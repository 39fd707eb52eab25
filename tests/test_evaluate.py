"""The evaluation harness: matching, P/R/F2 arithmetic, policy filtering, corpus validation."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from sidecar.detect.findings import Finding
from sidecar.evaluate import (
    CorpusError,
    CorpusText,
    Report,
    Span,
    evaluate,
    f_beta,
    format_report,
    load_corpus,
    parse_record,
    report_figures,
)
from sidecar.policy.load import parse_policy

CORPUS_DIR = Path(__file__).resolve().parent / "data" / "corpus"

POLICY = parse_policy(
    b"version: 1\nname: t\nmin_score: 0.5\nentities:\n  DATE_TIME: {action: allow}\n",
    source="test",
)

# Two texts with 4 labelled spans; the fake detector below finds 3 of them and
# raises 1 false alarm, so precision is 3/4, recall 3/4 and F2 0.75.
TEXT_A = "Call Jane Roe at 555-0100 or jane@example.com"
TEXT_B = "build 1.2.3.4 by Ann Lee on 2024-01-02"
CORPUS = [
    CorpusText(
        "a",
        "chat",
        False,
        TEXT_A,
        (
            Span(5, 13, "PERSON"),
            Span(17, 25, "PHONE_NUMBER"),
            Span(29, 45, "EMAIL_ADDRESS"),
        ),
    ),
    CorpusText("b", "log", True, TEXT_B, (Span(17, 24, "PERSON"), Span(28, 38, "DATE_TIME"))),
]


def fake_detect(texts: list[str]) -> list[list[Finding]]:
    assert texts == [TEXT_A, TEXT_B]
    return [
        [
            Finding("PERSON", 5, 9, 0.85, "spacy"),  # "Jane": found, partial
            Finding("EMAIL_ADDRESS", 29, 45, 1.0, "email"),
            Finding("PHONE_NUMBER", 17, 25, 0.3, "phone"),  # below min_score: a miss
        ],
        [
            Finding("PHONE_NUMBER", 6, 13, 0.7, "phone"),  # "1.2.3.4": false alarm
            Finding("PERSON", 17, 24, 0.85, "spacy"),
            Finding("DATE_TIME", 28, 38, 0.9, "date"),  # allowed: not scored
        ],
    ]


@pytest.fixture()
def report() -> Report:
    return evaluate(CORPUS, fake_detect, POLICY)


def test_overall_precision_recall_f2(report: Report) -> None:
    overall = report.overall
    assert overall.labelled == 4
    assert overall.found == 3
    assert overall.predicted == 4
    assert overall.correct == 3
    assert overall.precision == pytest.approx(0.75)
    assert overall.recall == pytest.approx(0.75)
    assert overall.f2 == pytest.approx(0.75)


def test_per_type_counts(report: Report) -> None:
    phone = report.per_type["PHONE_NUMBER"]
    assert (phone.labelled, phone.found, phone.predicted, phone.correct) == (1, 0, 1, 0)
    assert phone.precision == 0.0
    assert phone.f2 == 0.0
    assert report.per_type["PERSON"].recall == 1.0
    assert report.per_type["PERSON"].partial == 1


def test_allowed_type_is_not_scored(report: Report) -> None:
    assert "DATE_TIME" not in report.per_type


def test_false_positives_per_10kb(report: Report) -> None:
    assert report.technical_bytes == len(TEXT_B)
    assert report.technical_false_positives == 1
    assert report.false_positives_per_10kb == pytest.approx(10 * 1024 / len(TEXT_B))


def test_misses_and_false_alarms_listed(report: Report) -> None:
    misses = {(m.text_id, m.entity_type, m.value, m.partial) for m in report.misses}
    alarms = [(a.text_id, a.entity_type, a.value) for a in report.false_alarms]
    assert misses == {("a", "PHONE_NUMBER", "555-0100", False), ("a", "PERSON", "Jane Roe", True)}
    assert alarms == [("b", "PHONE_NUMBER", "1.2.3.4")]


def test_overlapping_findings_merge_before_scoring() -> None:
    spans = (Span(5, 20, "EMAIL_ADDRESS"),)
    corpus = [CorpusText("c", "chat", False, "mail ann@example.com", spans)]

    def detect(texts: list[str]) -> list[list[Finding]]:
        return [[Finding("EMAIL_ADDRESS", 5, 20, 1.0), Finding("URL", 9, 20, 0.5)]]

    report = evaluate(corpus, detect, POLICY)
    assert report.overall.predicted == 1
    assert report.overall.precision == 1.0


def test_detect_must_return_one_list_per_text() -> None:
    with pytest.raises(ValueError, match="2 texts"):
        evaluate(CORPUS, lambda texts: [[]], POLICY)


@pytest.mark.parametrize(
    ("precision", "recall", "expected"),
    [
        pytest.param(1.0, 1.0, 1.0, id="perfect"),
        pytest.param(0.5, 1.0, 5 * 0.5 / (4 * 0.5 + 1), id="recall-weighted"),
        pytest.param(1.0, 0.5, 5 * 0.5 / (4 + 0.5), id="precision-weighted"),
        pytest.param(0.0, 0.0, 0.0, id="zero"),
    ],
)
def test_f2_formula(precision: float, recall: float, expected: float) -> None:
    assert f_beta(precision, recall, beta=2.0) == pytest.approx(expected)


def test_report_formats_every_run(report: Report) -> None:
    text = format_report([("one", report), ("two", report)], limit=5)
    assert "one: F2 0.750" in text
    assert "two: F2 0.750" in text
    assert "PHONE_NUMBER" in text
    assert "'1.2.3.4'" in text


def test_figures_hold_no_values(report: Report) -> None:
    figures = json.dumps(report_figures([("run", report)]))
    assert "Jane" not in figures
    assert "555-0100" not in figures


def _record(**changes: object) -> dict[str, object]:
    record: dict[str, object] = {
        "id": "x",
        "category": "chat",
        "technical": False,
        "text": "hi Ann Lee",
        "spans": [{"start": 3, "end": 10, "entity_type": "PERSON"}],
    }
    record.update(changes)
    return record


@pytest.mark.parametrize(
    ("spans", "message"),
    [
        pytest.param([{"start": 3, "end": 11, "entity_type": "PERSON"}], "out of range", id="end"),
        pytest.param([{"start": 5, "end": 5, "entity_type": "PERSON"}], "out of range", id="empty"),
        pytest.param([{"start": 2, "end": 6, "entity_type": "PERSON"}], "whitespace", id="space"),
        pytest.param(
            [
                {"start": 3, "end": 6, "entity_type": "PERSON"},
                {"start": 5, "end": 10, "entity_type": "PERSON"},
            ],
            "overlaps",
            id="overlap",
        ),
        pytest.param([{"start": 3}], "missing", id="missing-field"),
    ],
)
def test_invalid_span_rejected(spans: list[dict[str, object]], message: str) -> None:
    with pytest.raises(CorpusError, match=message):
        parse_record(_record(spans=spans))


def test_valid_record_parsed() -> None:
    record = parse_record(_record())
    assert record.spans == (Span(3, 10, "PERSON"),)


def test_duplicate_ids_rejected(tmp_path: Path) -> None:
    line = json.dumps(_record())
    (tmp_path / "a.jsonl").write_text(line + "\n" + line + "\n", encoding="utf-8")
    with pytest.raises(CorpusError, match="duplicate"):
        load_corpus(tmp_path)


def test_invalid_json_names_file_and_line(tmp_path: Path) -> None:
    (tmp_path / "a.jsonl").write_text(json.dumps(_record()) + "\n{oops\n", encoding="utf-8")
    with pytest.raises(CorpusError, match=r"a\.jsonl:2"):
        load_corpus(tmp_path)


def test_empty_directory_rejected(tmp_path: Path) -> None:
    with pytest.raises(CorpusError, match="no"):
        load_corpus(tmp_path)
