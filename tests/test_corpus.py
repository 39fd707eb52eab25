"""The labelled evaluation corpus: valid spans, enough text, and in sync with its builder."""

from __future__ import annotations

import importlib.util
import itertools
import sys
from collections import Counter
from pathlib import Path
from types import ModuleType

import pytest

from sidecar.evaluate import CorpusText, load_corpus

CORPUS_DIR = Path(__file__).resolve().parent / "data" / "corpus"
PII_CATEGORIES = {
    "support_ticket",
    "email",
    "crm_note",
    "chat",
    "medical",
    "hr",
    "invoice",
    "app_log",
    "formatting",
    "multilingual",
}
TECHNICAL_CATEGORIES = {"source_code", "sql", "config", "stack_trace", "vcs", "data", "log"}


@pytest.fixture(scope="module")
def corpus() -> list[CorpusText]:
    return load_corpus(CORPUS_DIR)


def _load_builder() -> ModuleType:
    spec = importlib.util.spec_from_file_location("corpus_build", CORPUS_DIR / "build.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def test_corpus_files_match_builder() -> None:
    built = _load_builder().build()
    for name, content in built.items():
        committed = (CORPUS_DIR / name).read_text(encoding="utf-8")
        assert committed == content, f"{name} is stale: run python {CORPUS_DIR / 'build.py'}"


def test_spans_in_range_and_stripped(corpus: list[CorpusText]) -> None:
    for record in corpus:
        for span in record.spans:
            value = record.text[span.start : span.end]
            assert 0 <= span.start < span.end <= len(record.text), record.id
            assert value.strip(), record.id
            assert value == value.strip(), f"{record.id}: {span}"


def test_spans_do_not_overlap(corpus: list[CorpusText]) -> None:
    for record in corpus:
        ordered = sorted(record.spans, key=lambda s: s.start)
        for before, after in itertools.pairwise(ordered):
            assert before.end <= after.start, f"{record.id}: {before} overlaps {after}"


def test_corpus_size(corpus: list[CorpusText]) -> None:
    technical_bytes = sum(len(r.text.encode("utf-8")) for r in corpus if r.technical)
    assert len(corpus) >= 250
    assert technical_bytes >= 30 * 1024


def test_corpus_covers_categories(corpus: list[CorpusText]) -> None:
    categories = {r.category for r in corpus}
    assert categories >= PII_CATEGORIES
    assert categories >= TECHNICAL_CATEGORIES


def test_technical_texts_label_secrets_only(corpus: list[CorpusText]) -> None:
    for record in corpus:
        if record.technical:
            assert {s.entity_type for s in record.spans} <= {"SECRET"}, record.id


def test_required_entity_types_present(corpus: list[CorpusText]) -> None:
    counts = Counter(s.entity_type for r in corpus for s in r.spans)
    for entity_type in ("EMAIL_ADDRESS", "CREDIT_CARD", "IBAN_CODE", "US_SSN", "SECRET", "PERSON"):
        assert counts[entity_type] >= 10, entity_type


def test_corpus_cards_pass_luhn(corpus: list[CorpusText]) -> None:
    for record in corpus:
        for span in record.spans:
            if span.entity_type != "CREDIT_CARD":
                continue
            card = record.text[span.start : span.end]
            digits = [int(c) for c in card if c.isdigit()][::-1]
            doubled = [d * 2 - 9 if d * 2 > 9 else d * 2 for d in digits[1::2]]
            assert (sum(digits[::2]) + sum(doubled)) % 10 == 0, card


def test_corpus_ibans_pass_checksum(corpus: list[CorpusText]) -> None:
    for record in corpus:
        for span in record.spans:
            if span.entity_type != "IBAN_CODE":
                continue
            compact = record.text[span.start : span.end].replace(" ", "")
            rearranged = compact[4:] + compact[:4]
            assert int("".join(str(int(c, 36)) for c in rearranged)) % 97 == 1, compact
