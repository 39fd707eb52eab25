"""The SSE decoder: any split of the byte stream yields the same events."""

from __future__ import annotations

import pytest

from sidecar.sse import MAX_EVENT_CHARS, Event, SSEDecoder, SSEError, encode

STREAM = (
    'data: {"a": "h\u00e9llo \U0001f600"}\n\n'
    ": keep-alive\n\n"
    "event: message_start\r\ndata: {\"x\": 1}\r\n\r\n"
    "data: line one\rdata: line two\r\r"
    "id: 7\nretry: 100\ndata:nospace\n\n"
    "data: [DONE]\n\n"
).encode()


def decode_all(chunks: list[bytes]) -> list[tuple[str | None, str]]:
    decoder = SSEDecoder()
    events: list[Event] = []
    for chunk in chunks:
        events += decoder.feed(chunk)
    events += decoder.flush()
    return [(event.event, event.data) for event in events]


EXPECTED = [
    (None, '{"a": "h\u00e9llo \U0001f600"}'),
    (None, ""),
    ("message_start", '{"x": 1}'),
    (None, "line one\nline two"),
    (None, "nospace"),
    (None, "[DONE]"),
]


def test_decoder_whole_stream() -> None:
    assert decode_all([STREAM]) == EXPECTED


def test_decoder_split_at_every_byte_offset() -> None:
    for cut in range(len(STREAM) + 1):
        assert decode_all([STREAM[:cut], STREAM[cut:]]) == EXPECTED, cut


def test_decoder_single_bytes() -> None:
    assert decode_all([bytes([b]) for b in STREAM]) == EXPECTED


def test_decoder_unterminated_last_event() -> None:
    assert decode_all([b"data: tail"]) == [(None, "tail")]


@pytest.mark.parametrize("raw", [b"data: x\n\n", b": ping\n\n", b"event: ping\ndata: {}\n\n"])
def test_encode_unmodified_event_is_identical(raw: bytes) -> None:
    decoder = SSEDecoder()
    (event,) = decoder.feed(raw)
    assert encode(event) == raw


def test_encode_modified_event_multiline() -> None:
    event = Event(event="e").with_data("a\nb")
    assert encode(event) == b"event: e\ndata: a\ndata: b\n\n"


def test_decoder_rejects_oversized_event() -> None:
    decoder = SSEDecoder()
    chunk = b"x" * 65536
    with pytest.raises(SSEError):
        for _ in range(MAX_EVENT_CHARS // len(chunk) + 2):
            decoder.feed(chunk)


def test_decoder_long_line_in_many_reads() -> None:
    line = b"data: " + b"y" * 200_000 + b"\n\n"
    chunks = [line[i : i + 1000] for i in range(0, len(line), 1000)]
    assert decode_all(chunks) == [(None, "y" * 200_000)]
