"""Tuned recognizers: code tokens are not PII, names in any case are, and targets hold on the corpus."""

from __future__ import annotations

from pathlib import Path

import pytest

from sidecar.detect.engine import Detector
from sidecar.detect.recognizers.code import is_epoch_timestamp, is_glued, timestamp_spans
from sidecar.detect.recognizers.names import NameGazetteerRecognizer
from sidecar.detect.recognizers.network import TunedIpRecognizer
from sidecar.detect.recognizers.numbers import (
    TunedCreditCardRecognizer,
    TunedPhoneRecognizer,
    TunedSsnRecognizer,
)

CORPUS_DIR = Path(__file__).resolve().parent / "data" / "corpus"


def _values(recognizer: object, text: str, entity: str) -> list[str]:
    results = recognizer.analyze(text, [entity])  # type: ignore[attr-defined]
    return [text[r.start : r.end] for r in results if r.score >= 0.5]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        pytest.param("call (415) 555-0100 today", ["(415) 555-0100"], id="us-brackets"),
        pytest.param("tel:+1 415 555 0100", ["+1 415 555 0100"], id="glued-prefix"),
        pytest.param("ring 212-555-0146.", ["212-555-0146"], id="us-dashes"),
        pytest.param("ts=1717171717 ms=1717171717123", [], id="epoch-timestamps"),
        pytest.param("at 2024-06-03T16:20:07.980-07:00 ok", [], id="iso-timestamp"),
        pytest.param("build 10.0.19041.0 from 192.168.1.20", [], id="version-and-ip"),
        pytest.param("digest a94a8fe5ccb19ba61c4c0873d391e987982fbbd3", [], id="hex-digest"),
        pytest.param("SSN 664-83-1076", [], id="ssn-shape"),
        pytest.param("on 2024-05-21 and 05/21/2024", [], id="dates"),
    ],
)
def test_phone_recognizer(text: str, expected: list[str]) -> None:
    assert _values(TunedPhoneRecognizer(), text, "PHONE_NUMBER") == expected


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        pytest.param("my IP is 203.0.113.7", ["203.0.113.7"], id="public"),
        pytest.param("upstream 10.0.1.21:8000", [], id="private"),
        pytest.param("nameservers: [8.8.8.8, 1.1.1.1]", [], id="resolvers"),
        pytest.param('cidr_blocks = ["203.0.113.0/24"]', [], id="cidr"),
        pytest.param('let a = "198.51.100.4";', [], id="code-literal"),
    ],
)
def test_ip_recognizer(text: str, expected: list[str]) -> None:
    assert _values(TunedIpRecognizer(), text, "IP_ADDRESS") == expected


def test_card_recognizer_mastercard_2_series() -> None:
    text = "card 2223 0031 2200 3222 and id 2223003122003223"
    assert _values(TunedCreditCardRecognizer(), text, "CREDIT_CARD") == ["2223 0031 2200 3222"]


def test_ssn_recognizer_rejects_area_9xx() -> None:
    text = "SSN 912-34-5678 and SSN 536-22-8147"
    assert _values(TunedSsnRecognizer(), text, "US_SSN") == ["536-22-8147"]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        pytest.param("cc priya murphy", ["priya murphy"], id="lower-case"),
        pytest.param("EMPLOYEE: MARIA GARCIA", ["MARIA GARCIA"], id="upper-case"),
        pytest.param("Lead: Sofia E. Lopez | x", ["Sofia E. Lopez"], id="middle-initial"),
        pytest.param("Signed, Robert Smith Jr.", ["Robert Smith Jr."], id="suffix"),
        pytest.param("Is this Maria's laptop?", ["Maria"], id="possessive"),
        pytest.param("Murphy, Julia called", ["Murphy, Julia"], id="last-comma-first"),
        pytest.param("will smith the metal", [], id="common-words"),
        pytest.param("def daniel_smith(x):\n    return x", [], id="identifier"),
        pytest.param("const Maria = new Garcia();", [], id="code-line"),
    ],
)
def test_name_gazetteer(text: str, expected: list[str]) -> None:
    assert _values(NameGazetteerRecognizer(), text, "PERSON") == expected


@pytest.mark.parametrize(
    ("text", "start", "end", "glued"),
    [
        pytest.param("v1.2.3", 1, 4, True, id="version-part"),
        pytest.param("u16::from", 0, 3, True, id="rust-path"),
        pytest.param("x=555-0100,", 2, 10, False, id="key-value"),
        pytest.param("ab12cd", 2, 4, True, id="inside-word"),
    ],
)
def test_is_glued(text: str, start: int, end: int, glued: bool) -> None:
    assert is_glued(text, start, end) is glued


def test_epoch_timestamps() -> None:
    assert is_epoch_timestamp("1717171717")
    assert is_epoch_timestamp("1717171717123")
    assert not is_epoch_timestamp("2025550143")


def test_timestamp_is_one_span() -> None:
    text = "at 2024-06-03T16:20:07.980-07:00 ok"
    assert timestamp_spans(text) == [(3, 32)]


@pytest.mark.slow
def test_corpus_targets(detector: Detector) -> None:
    from sidecar.evaluate import evaluate, load_corpus
    from sidecar.policy.load import load_policy

    corpus = load_corpus(CORPUS_DIR)
    policy = load_policy(CORPUS_DIR / "policy.yaml")
    report = evaluate(corpus, lambda texts: detector.analyze(texts, policy), policy)

    assert report.overall.f2 >= 0.90
    assert report.false_positives_per_10kb <= 1.0
    for entity_type in ("EMAIL_ADDRESS", "CREDIT_CARD", "IBAN_CODE", "US_SSN", "SECRET"):
        assert report.per_type[entity_type].recall == 1.0, entity_type
