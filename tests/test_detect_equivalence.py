"""Each speed-up of detection leaves the findings on the labelled corpus unchanged.

The reference is the detector with every speed-up undone: the full spaCy
pipeline, Presidio's own context enhancer, one text per spaCy call, each
text analyzed whole and no cache. Findings are compared exactly, scores
included.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from presidio_analyzer.context_aware_enhancers import LemmaContextAwareEnhancer

from sidecar.detect import engine
from sidecar.detect.cache import FindingsCache
from sidecar.detect.chunking import CHUNK_CHARS, MARGIN_CHARS, analyze_in_chunks
from sidecar.detect.engine import Detector
from sidecar.detect.findings import Finding
from sidecar.detect.pipeline import IndexedContextEnhancer
from sidecar.evaluate import load_corpus
from sidecar.policy.load import load_policy, parse_policy
from sidecar.policy.model import Policy

pytestmark = pytest.mark.slow

CORPUS_DIR = Path(__file__).resolve().parent / "data" / "corpus"


@pytest.fixture(scope="module")
def texts() -> list[str]:
    return [record.text for record in load_corpus(CORPUS_DIR)]


@pytest.fixture(scope="module")
def policy() -> Policy:
    return load_policy(CORPUS_DIR / "policy.yaml")


@pytest.fixture(scope="module")
def own_detector() -> Detector:
    """A detector of this module's own, because the tests switch its speed-ups on and off."""
    return Detector()


@contextmanager
def parser_on(detector: Detector) -> Iterator[None]:
    nlp = detector._nlp_engine.get_nlp(detector.language)
    nlp.enable_pipe("parser")
    try:
        yield
    finally:
        nlp.disable_pipe("parser")


@contextmanager
def stock_enhancer(detector: Detector) -> Iterator[None]:
    detector._analyzer.context_aware_enhancer = LemmaContextAwareEnhancer()
    try:
        yield
    finally:
        detector._analyzer.context_aware_enhancer = IndexedContextEnhancer()


def one_by_one(detector: Detector, texts: list[str], policy: Policy) -> list[list[Finding]]:
    return [detector._analyze_pieces([text], policy)[0] for text in texts]


def ordered(findings: list[Finding]) -> list[Finding]:
    return sorted(findings, key=lambda f: (f.start, f.end, f.entity_type, f.recognizer, f.score))


def assert_same(expected: list[list[Finding]], actual: list[list[Finding]]) -> None:
    assert len(actual) == len(expected)
    for index, (want, got) in enumerate(zip(expected, actual, strict=True)):
        assert ordered(got) == ordered(want), f"text {index} differs"


@pytest.fixture(scope="module")
def reference(own_detector: Detector, texts: list[str], policy: Policy) -> list[list[Finding]]:
    with parser_on(own_detector), stock_enhancer(own_detector):
        return one_by_one(own_detector, texts, policy)


def test_reference_finds_entities(reference: list[list[Finding]]) -> None:
    assert sum(len(findings) for findings in reference) > 500


def test_all_speedups_same_findings(
    own_detector: Detector, texts: list[str], policy: Policy, reference: list[list[Finding]]
) -> None:
    assert_same(reference, own_detector.analyze(texts, policy))


def test_parser_off_same_findings(
    own_detector: Detector, texts: list[str], policy: Policy, reference: list[list[Finding]]
) -> None:
    with stock_enhancer(own_detector):
        assert_same(reference, one_by_one(own_detector, texts, policy))


def test_indexed_enhancer_same_findings(
    own_detector: Detector, texts: list[str], policy: Policy, reference: list[list[Finding]]
) -> None:
    with parser_on(own_detector):
        assert_same(reference, one_by_one(own_detector, texts, policy))


def test_batched_nlp_same_findings(
    own_detector: Detector,
    texts: list[str],
    policy: Policy,
    reference: list[list[Finding]],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(engine, "NLP_BATCH_SIZE", 64)
    with parser_on(own_detector), stock_enhancer(own_detector):
        assert_same(reference, own_detector._analyze_pieces(texts, policy))


@pytest.mark.parametrize(
    ("chunk_chars", "margin_chars"),
    [
        pytest.param(CHUNK_CHARS, MARGIN_CHARS, id="default"),
        pytest.param(1500, 300, id="small-chunks"),
    ],
)
def test_chunked_document_same_findings(
    own_detector: Detector, texts: list[str], policy: Policy, chunk_chars: int, margin_chars: int
) -> None:
    document = "\n\n".join(texts)
    whole = own_detector._analyze_pieces([document], policy)
    chunked = analyze_in_chunks(
        own_detector._analyze_pieces, [document], policy, chunk_chars, margin_chars
    )
    assert len(document) > 8 * chunk_chars
    assert_same(whole, chunked)


def test_cache_same_findings_cold_and_warm(
    own_detector: Detector, texts: list[str], policy: Policy, reference: list[list[Finding]]
) -> None:
    cache = FindingsCache(max_entries=10_000, max_bytes=64 * 1024 * 1024)
    cold = cache.analyze(own_detector, texts, policy)
    warm = cache.analyze(own_detector, texts, policy)

    assert_same(reference, cold)
    assert_same(reference, warm)
    assert cache.stats().hits == len(texts)


DENY_POLICY = b"""
version: 1
name: deny-ticket
recognizers:
  - name: ticket_words
    supported_entity: TICKET_WORD
    deny_list: [Ticket, customer]
"""


def test_cache_keeps_policies_apart(
    own_detector: Detector, texts: list[str], policy: Policy
) -> None:
    deny = parse_policy(DENY_POLICY, source="deny.yaml")
    sample = [text for text in texts if "Ticket" in text][:5]
    cache = FindingsCache(max_entries=10_000, max_bytes=64 * 1024 * 1024)

    plain = cache.analyze(own_detector, sample, policy)
    with_deny = cache.analyze(own_detector, sample, deny)

    assert sample
    assert not any(f.entity_type == "TICKET_WORD" for findings in plain for f in findings)
    assert all(any(f.entity_type == "TICKET_WORD" for f in findings) for findings in with_deny)
    assert_same(own_detector.analyze(sample, deny), with_deny)
