"""Placeholder restoration: tolerant forms, JSON escaping and streamed equivalence."""

from __future__ import annotations

import itertools

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sidecar.redact.restore import Restorer, json_string_escape
from sidecar.redact.vault import Vault, reserved_keys


def make_restorer(*pairs: tuple[str, str], reserved: set[tuple[str, int]] | None = None) -> Restorer:
    vault = Vault(reserved)
    for entity_type, value in pairs:
        vault.placeholder_for(entity_type, value)
    return Restorer(vault)


RESTORER = make_restorer(("PERSON", "Ana María"), ("EMAIL_ADDRESS", "ana@example.com"), ("PERSON", "Bo"))


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        pytest.param("Hi <PERSON_1>!", "Hi Ana María!", id="exact"),
        pytest.param("Hi <person_1>!", "Hi Ana María!", id="lower-case"),
        pytest.param("Hi [PERSON_1]!", "Hi Ana María!", id="square-brackets"),
        pytest.param("Hi PERSON_1!", "Hi Ana María!", id="bare"),
        pytest.param("Hi <PERSON 1>!", "Hi Ana María!", id="space-inside-brackets"),
        pytest.param("Hi &lt;PERSON_1&gt;!", "Hi Ana María!", id="html-escaped"),
        pytest.param("Hi \\u003cPERSON_1\\u003e!", "Hi Ana María!", id="json-escaped"),
        pytest.param("PERSON_1's file", "Ana María's file", id="possessive"),
        pytest.param("<PERSON_2> and <EMAIL_ADDRESS_1>", "Bo and ana@example.com", id="two-types"),
        pytest.param("Hi <PERSON>!", "Hi <PERSON>!", id="no-number-is-ambiguous"),
        pytest.param("Hi <PERSON_9>!", "Hi <PERSON_9>!", id="unknown-number"),
        pytest.param("PERSON_12", "PERSON_12", id="longer-number"),
        pytest.param("XPERSON_1", "XPERSON_1", id="glued-to-word"),
        pytest.param("for person_1 in people:", "for person_1 in people:", id="bare-lower-case-is-code"),
        pytest.param("<LOCATION_1>", "<LOCATION_1>", id="type-not-in-vault"),
        pytest.param("漢字<PERSON_1>😀", "漢字Ana María😀", id="cjk-and-emoji"),
    ],
)
def test_restore_forms(text: str, expected: str) -> None:
    assert RESTORER.restore(text) == expected


def test_restore_json_escape_keeps_json_valid() -> None:
    restorer = make_restorer(("PERSON", 'Jo "The Q" \\ Li'))
    restored = restorer.restore('{"name": "<PERSON_1>"}', json_string_escape)
    assert restored == '{"name": "Jo \\"The Q\\" \\\\ Li"}'


def test_user_typed_placeholder_never_restored() -> None:
    typed = "I literally typed <PERSON_1> here"
    restorer = make_restorer(("PERSON", "Ana"), reserved=reserved_keys([typed]))
    assert restorer.vault.placeholder_for("PERSON", "Ana") == "<PERSON_2>"
    assert restorer.restore(typed) == typed
    assert restorer.restore("<PERSON_2>") == "Ana"


def test_vault_one_placeholder_per_value() -> None:
    vault = Vault()
    first = vault.placeholder_for("PERSON", "Ana")
    again = vault.placeholder_for("LOCATION", "Ana")
    other = vault.placeholder_for("PERSON", "Bo")
    assert first == again == "<PERSON_1>"
    assert other == "<PERSON_2>"


def test_vault_repr_hides_values() -> None:
    vault = Vault()
    vault.placeholder_for("PERSON", "Zebulon Canary")
    assert "Zebulon" not in repr(vault)


def stream_restore(restorer: Restorer, pieces: list[str]) -> str:
    stream = restorer.stream()
    out = []
    for piece in pieces:
        out.append(stream.feed(piece))
        assert len(stream.held) <= restorer.window
    out.append(stream.flush())
    return "".join(out)


def split_at(text: str, cuts: list[int]) -> list[str]:
    points = sorted({0, len(text), *(c % (len(text) + 1) for c in cuts)})
    return [text[a:b] for a, b in itertools.pairwise(points)]


SAMPLE = (
    "Dear <PERSON_1>, [person_2] wrote to <EMAIL_ADDRESS_1> about PERSON_1's "
    "order; &lt;PERSON_2&gt; and <PERSON 1> <PERSON_3> <PERSON> PERSON_12 \\u003cPERSON_1\\u003e 😀"
)


def test_stream_split_at_every_offset() -> None:
    expected = RESTORER.restore(SAMPLE)
    for cut in range(len(SAMPLE) + 1):
        assert stream_restore(RESTORER, [SAMPLE[:cut], SAMPLE[cut:]]) == expected


def test_stream_single_characters() -> None:
    assert stream_restore(RESTORER, list(SAMPLE)) == RESTORER.restore(SAMPLE)


def test_stream_releases_plain_text_at_once() -> None:
    stream = RESTORER.stream()
    assert stream.feed("Hello there, ") == "Hello there, "
    assert stream.feed("dear <PER") == "dear "
    assert stream.feed("SON_1> ok") == "Ana María ok"


_PIECES = st.sampled_from(
    ["<PERSON_1>", "<PERSON_2>", "[EMAIL_ADDRESS_1]", "PERSON_1", "<person 2>", "&lt;PERSON_1&gt;",
     "<PERSON_7>", "<", "[", "PERSON", "_", "1", ">", "&lt;", " ", "é", "😀", "x"]
)


@settings(max_examples=300, deadline=None)
@given(
    parts=st.lists(st.one_of(_PIECES, st.text(max_size=5)), max_size=25),
    cuts=st.lists(st.integers(min_value=0, max_value=10_000), max_size=30),
)
def test_stream_equals_whole_restore(parts: list[str], cuts: list[int]) -> None:
    text = "".join(parts)
    assert stream_restore(RESTORER, split_at(text, cuts)) == RESTORER.restore(text)
