"""Cutting long texts into overlapping chunks and merging the chunks' findings."""

from __future__ import annotations

import itertools
import re
from collections.abc import Sequence

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sidecar.detect.chunking import Chunk, analyze_in_chunks, split_text
from sidecar.detect.findings import Finding

# Words, e-mail addresses and separators, so cut points fall everywhere.
WORDS = st.sampled_from(
    ["Ada", "Lovelace", "wrote", "to", "ada@example.org", "about", "42", "notes", "x" * 40]
)
SEPARATORS = st.sampled_from([" ", " ", " ", "\n", "\n\n", ", ", "\t"])
TEXTS = st.lists(st.tuples(WORDS, SEPARATORS), min_size=0, max_size=400).map(
    lambda pairs: "".join(word + separator for word, separator in pairs)
)
EMAIL = re.compile(r"[a-z]+@[a-z]+\.[a-z]+")
# "Lovelace" counts only after "Ada ", so the pattern reads context before its match.
SURNAME = re.compile(r"(?<=Ada )Lovelace")


def regex_analyze(texts: Sequence[str], options: None) -> list[list[Finding]]:
    """A detector whose findings depend on at most four characters before a match."""
    results = []
    for text in texts:
        findings = [Finding("EMAIL_ADDRESS", m.start(), m.end(), 1.0) for m in EMAIL.finditer(text)]
        findings += [Finding("PERSON", m.start(), m.end(), 0.85) for m in SURNAME.finditer(text)]
        results.append(findings)
    return results


def by_start(findings: list[Finding]) -> list[Finding]:
    return sorted(findings, key=lambda f: (f.start, f.end, f.entity_type))


def assert_tiles(text: str, chunks: list[Chunk]) -> None:
    assert chunks[0].own_start == 0
    assert chunks[-1].own_end == len(text)
    for before, after in itertools.pairwise(chunks):
        assert before.own_end == after.own_start


def test_short_text_single_chunk() -> None:
    text = "Ada Lovelace\n" * 10

    assert split_text(text, chunk_chars=200) == [Chunk(0, len(text), 0, len(text))]


def test_empty_text_single_chunk() -> None:
    assert split_text("", chunk_chars=10) == [Chunk(0, 0, 0, 0)]


@settings(max_examples=200, deadline=None)
@given(text=TEXTS, chunk_chars=st.integers(8, 300), margin_chars=st.integers(0, 60))
def test_chunks_tile_text(text: str, chunk_chars: int, margin_chars: int) -> None:
    chunks = split_text(text, chunk_chars, margin_chars)

    assert_tiles(text, chunks)
    for chunk in chunks:
        assert 0 < chunk.own_end - chunk.own_start <= chunk_chars or text == ""
        assert chunk.start == max(0, chunk.own_start - margin_chars)
        assert chunk.end == min(len(text), chunk.own_end + margin_chars)


def test_cut_after_line_break() -> None:
    text = "a" * 90 + "\n" + "b" * 200

    chunks = split_text(text, chunk_chars=100, margin_chars=10)

    assert chunks[0].own_end == 91


def test_cut_after_space_without_line_break() -> None:
    text = "a" * 80 + " " + "b" * 18 + "\n" + "c" * 200

    chunks = split_text(text, chunk_chars=100, margin_chars=10)

    assert chunks[0].own_end == 100


def test_line_break_preferred_over_later_space() -> None:
    text = "a" * 80 + "\n" + "b" * 10 + " " + "c" * 200

    chunks = split_text(text, chunk_chars=100, margin_chars=10)

    assert chunks[0].own_end == 81


def test_hard_cut_without_whitespace() -> None:
    text = "a" * 250

    chunks = split_text(text, chunk_chars=100, margin_chars=10)

    assert [(c.own_start, c.own_end) for c in chunks] == [(0, 100), (100, 200), (200, 250)]


def test_split_rejects_zero_chunk_size() -> None:
    with pytest.raises(ValueError, match="chunk size 0 must be positive"):
        split_text("text", chunk_chars=0)


@settings(max_examples=200, deadline=None)
@given(text=TEXTS, chunk_chars=st.integers(30, 300), margin_chars=st.integers(20, 60))
def test_findings_match_whole_text(text: str, chunk_chars: int, margin_chars: int) -> None:
    whole = regex_analyze([text], None)[0]

    chunked = analyze_in_chunks(regex_analyze, [text], None, chunk_chars, margin_chars)[0]

    assert by_start(chunked) == by_start(whole)


def test_entity_across_cut_reported_once() -> None:
    text = "x" * 95 + " ada@example.org " + "y" * 200
    start = text.index("ada@")

    findings = analyze_in_chunks(regex_analyze, [text], None, chunk_chars=100, margin_chars=30)[0]

    assert findings == [Finding("EMAIL_ADDRESS", start, start + len("ada@example.org"), 1.0)]


def test_every_text_of_request_chunked() -> None:
    long_text = ("Ada Lovelace wrote to ada@example.org\n") * 30
    texts = ["short ada@example.org", long_text, ""]

    results = analyze_in_chunks(regex_analyze, texts, None, chunk_chars=100, margin_chars=30)

    expected = regex_analyze(texts, None)
    for got, want in zip(results, expected, strict=True):
        assert by_start(got) == by_start(want)


def test_pieces_bounded_by_chunk_and_margins() -> None:
    sizes: list[int] = []

    def record(texts: Sequence[str], options: None) -> list[list[Finding]]:
        sizes.extend(len(text) for text in texts)
        return [[] for _ in texts]

    analyze_in_chunks(record, ["word " * 10_000], None, chunk_chars=1000, margin_chars=100)

    assert max(sizes) <= 1000 + 2 * 100
    assert len(sizes) == 50


def test_one_analyze_call_per_request() -> None:
    calls: list[int] = []

    def record(texts: Sequence[str], options: None) -> list[list[Finding]]:
        calls.append(len(texts))
        return [[] for _ in texts]

    analyze_in_chunks(record, ["a " * 300, "b " * 300], None, chunk_chars=100, margin_chars=10)

    assert calls == [12]
