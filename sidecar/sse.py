"""Server-sent events: an incremental decoder and an encoder.

The decoder follows the WHATWG event-stream format: lines end in CRLF, LF or
CR, an empty line ends an event, `:` starts a comment, and a field line is
`name: value` with one optional space after the colon. Network reads may split
anything, including a CRLF pair or a multi-byte UTF-8 character.
"""

from __future__ import annotations

import codecs
import re
from dataclasses import dataclass, field


@dataclass
class Event:
    """One event; `raw` keeps its original lines so an untouched event is sent back as it came."""

    event: str | None = None
    data: str = ""
    id: str | None = None
    retry: str | None = None
    raw: list[str] = field(default_factory=list)
    modified: bool = False

    def with_data(self, data: str) -> Event:
        return Event(event=self.event, data=data, id=self.id, retry=self.retry, modified=True)


_LINE_END = re.compile(r"\r\n|\r|\n")
# The largest event the decoder buffers, in characters. Providers send events
# of a few kilobytes, and a larger one means a broken or hostile upstream.
MAX_EVENT_CHARS = 8 * 1024 * 1024


class SSEError(ValueError):
    """The event stream is malformed beyond recovery, such as an event over `MAX_EVENT_CHARS`."""


class SSEDecoder:
    """Turns a byte stream into `Event`s with `feed()` and `flush()`."""

    def __init__(self) -> None:
        self._utf8 = codecs.getincrementaldecoder("utf-8")(errors="replace")
        self._partial: list[str] = []
        self._lines: list[str] = []
        self._pending_cr = False
        self._buffered = 0

    def feed(self, chunk: bytes) -> list[Event]:
        return self._feed_text(self._utf8.decode(chunk))

    def flush(self) -> list[Event]:
        """Return the events left when the stream ends, including an unterminated last one."""
        events = self._feed_text(self._utf8.decode(b"", final=True))
        partial = "".join(self._partial)
        self._partial = []
        if partial:
            self._lines.append(partial)
        if self._lines:
            event = _parse_event(self._lines)
            self._lines = []
            if event is not None:
                events.append(event)
        return events

    def _feed_text(self, text: str) -> list[Event]:
        if not text:
            return []
        if self._pending_cr and text.startswith("\n"):
            text = text[1:]
        # A CR at the end of a read may be the first half of a CRLF.
        self._pending_cr = text.endswith("\r")
        self._buffered += len(text)
        if "\n" not in text and "\r" not in text:
            # Keep the pieces of a long line apart: joining them on every read is quadratic.
            self._partial.append(text)
            self._check_size()
            return []
        lines = _LINE_END.split("".join(self._partial) + text)
        self._partial = [lines.pop()]
        events = []
        for line in lines:
            if line:
                self._lines.append(line)
                continue
            event = _parse_event(self._lines)
            self._lines = []
            if event is not None:
                events.append(event)
        self._buffered = sum(map(len, self._lines)) + len(self._partial[0])
        self._check_size()
        return events

    def _check_size(self) -> None:
        if self._buffered > MAX_EVENT_CHARS:
            raise SSEError(f"an event of the stream is longer than {MAX_EVENT_CHARS} characters")


def _parse_event(lines: list[str]) -> Event | None:
    event = Event(raw=list(lines))
    data_lines: list[str] = []
    for line in lines:
        name, _, value = line.partition(":")
        value = value[1:] if value.startswith(" ") else value
        if name == "data":
            data_lines.append(value)
        elif name == "event":
            event.event = value
        elif name == "id":
            event.id = value
        elif name == "retry":
            event.retry = value
    if not data_lines and event.event is None and all(line.startswith(":") for line in lines):
        # A comment-only block (keep-alive) is passed on as it came.
        return event
    event.data = "\n".join(data_lines)
    return event


def encode(event: Event) -> bytes:
    """Serialise an event; an unmodified event keeps its original lines."""
    if not event.modified and event.raw:
        return ("\n".join(event.raw) + "\n\n").encode()
    lines = []
    if event.event is not None:
        lines.append(f"event: {event.event}")
    if event.id is not None:
        lines.append(f"id: {event.id}")
    if event.retry is not None:
        lines.append(f"retry: {event.retry}")
    lines.extend(f"data: {line}" for line in event.data.split("\n"))
    return ("\n".join(lines) + "\n\n").encode()
