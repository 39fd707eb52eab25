"""The deadlines of one attempt, from `TimeoutSettings`, in the event loop's clock.

An attempt moves through three phases, each with its own limit, and the total
limit cuts every one of them:

    connecting ──(request headers sent)──► waiting for the first byte
    ──(response head received)──► reading the body, one idle limit per chunk

The HTTP client enters each deadline with `asyncio.timeout_at` and reports a
`TimeoutError` as the `kind` of the deadline that was active.
"""

from __future__ import annotations

from dataclasses import dataclass

from sidecar.upstream.retry import ErrorKind
from sidecar.upstream.settings import TimeoutSettings


@dataclass(frozen=True)
class Deadline:
    """A point in event loop seconds, and the failure that passing it means."""

    when: float
    kind: ErrorKind


class AttemptTimer:
    """Computes the active deadline of one attempt that started at `start`."""

    def __init__(self, settings: TimeoutSettings, start: float) -> None:
        self._settings = settings
        self._total_end = start + settings.total
        self.current = self._cut(start + settings.connect, ErrorKind.CONNECT_TIMEOUT)

    def request_sent(self, now: float) -> Deadline:
        """Start the wait for the first response byte and return its deadline."""
        self.current = self._cut(now + self._settings.first_byte, ErrorKind.FIRST_BYTE_TIMEOUT)
        return self.current

    def next_chunk(self, now: float) -> Deadline:
        """Return the deadline of the next body chunk, read from `now` on."""
        self.current = self._cut(now + self._settings.idle, ErrorKind.IDLE_TIMEOUT)
        return self.current

    def _cut(self, when: float, kind: ErrorKind) -> Deadline:
        if when < self._total_end:
            return Deadline(when, kind)
        return Deadline(self._total_end, ErrorKind.TOTAL_TIMEOUT)
