"""Retry decisions for one upstream: which failures are retried, and after which delay.

`RetryPolicy.decide` reads no clock. The caller passes the time spent on the
upstream so far and the wall-clock time for `Retry-After` dates, and the jitter
comes from an injectable random number generator.

The sidecar retries POST requests, which LLM APIs do not treat as idempotent.
A retry after a timeout can therefore run a generation twice and bill it twice.
The official OpenAI Python SDK (version 3.60) retries timeouts in the same way.
"""

from __future__ import annotations

import random
import re
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC
from email.utils import parsedate_to_datetime
from enum import StrEnum

from sidecar.upstream.settings import RetrySettings

# 529 is Anthropic's "overloaded" status, which its Python SDK (version 2.17) retries.
RETRYABLE_STATUSES = frozenset({429, 500, 502, 503, 504, 529})

_DELAY_SECONDS = re.compile(r"[0-9]+(\.[0-9]+)?")
# 2**60 times any useful base delay exceeds every max_delay, and 2**1024 overflows a float.
_MAX_BACKOFF_EXPONENT = 60


class ErrorKind(StrEnum):
    """A failure of an attempt, reported by the HTTP client.

    Every kind is retryable while no response byte has reached the client.
    """

    CONNECTION_ERROR = "connection_error"
    """Refused, reset or closed connection, DNS or TLS failure, or a malformed response."""

    CONNECT_TIMEOUT = "connect_timeout"
    FIRST_BYTE_TIMEOUT = "first_byte_timeout"
    IDLE_TIMEOUT = "idle_timeout"
    TOTAL_TIMEOUT = "total_timeout"
    ERROR_EVENT = "error_event"
    """The upstream sent its dialect's error event in a stream that had already begun."""


@dataclass(frozen=True)
class Outcome:
    """The result of one attempt: a response status or a transport error.

    `retry_after` is the raw `Retry-After` header of the response, if any.
    """

    status: int | None = None
    error: ErrorKind | None = None
    retry_after: str | None = None

    def __post_init__(self) -> None:
        if (self.status is None) == (self.error is None):
            raise ValueError("an Outcome needs exactly one of status and error")

    @property
    def retryable(self) -> bool:
        """Whether the attempt failed in a way that a retry or another upstream can fix."""
        return self.error is not None or self.status in RETRYABLE_STATUSES

    @property
    def cause(self) -> str:
        """A short label for logs and metrics, such as `status_503` or `connect_timeout`."""
        if self.error is not None:
            return self.error.value
        return f"status_{self.status}"


class GiveUpReason(StrEnum):
    """The reason that no further attempt goes to the same upstream."""

    NOT_RETRYABLE = "not_retryable"
    ATTEMPTS_EXHAUSTED = "attempts_exhausted"
    RETRY_AFTER_TOO_LONG = "retry_after_too_long"
    DEADLINE = "deadline"
    CIRCUIT_OPEN = "circuit_open"
    """The upstream's circuit breaker is open. `AttemptPlan` sets it, `RetryPolicy` never does."""


@dataclass(frozen=True)
class Retry:
    """A decision to retry the same upstream after `delay` seconds."""

    delay: float
    from_retry_after: bool


@dataclass(frozen=True)
class GiveUp:
    """A decision to stop sending to this upstream."""

    reason: GiveUpReason


class RetryPolicy:
    """Retry decisions with exponential backoff and full jitter.

    The backoff before retry n+1 is uniform in [0, min(max_delay, base_delay * 2**(n-1))).
    A parseable `Retry-After` replaces the backoff if it does not exceed `max_retry_after`,
    and a longer one gives up on the upstream at once.
    """

    def __init__(self, settings: RetrySettings, rng: Callable[[], float] = random.random) -> None:
        """`rng` returns a float in [0, 1). Tests pass a fixed one."""
        self.settings = settings
        self._rng = rng

    def decide(
        self, outcome: Outcome, *, attempt: int, elapsed: float, now: float
    ) -> Retry | GiveUp:
        """Decide what follows failed attempt number `attempt` (1 for the first).

        `elapsed` is the time in seconds since the first attempt on this upstream
        started, and `now` the current wall-clock time in seconds since the epoch.
        """
        if not outcome.retryable:
            return GiveUp(GiveUpReason.NOT_RETRYABLE)
        if attempt >= self.settings.max_attempts:
            return GiveUp(GiveUpReason.ATTEMPTS_EXHAUSTED)

        server_delay = parse_retry_after(outcome.retry_after, now)
        if server_delay is not None and server_delay > self.settings.max_retry_after:
            return GiveUp(GiveUpReason.RETRY_AFTER_TOO_LONG)
        delay = server_delay if server_delay is not None else self.backoff(attempt)

        if elapsed + delay > self.settings.deadline:
            return GiveUp(GiveUpReason.DEADLINE)
        return Retry(delay=delay, from_retry_after=server_delay is not None)

    def backoff(self, attempt: int) -> float:
        """Draw the full-jitter delay in seconds after failed attempt number `attempt`."""
        exponent = min(max(attempt - 1, 0), _MAX_BACKOFF_EXPONENT)
        cap = min(self.settings.max_delay, self.settings.base_delay * 2.0**exponent)
        return cap * self._rng()


def parse_retry_after(value: str | None, now: float) -> float | None:
    """Parse a `Retry-After` header into a delay in seconds, or None when it is missing or invalid.

    The header contains delay seconds or an HTTP date (RFC 9110, section 10.2.3).
    Decimal seconds are accepted too. `now` is the wall-clock time in seconds
    since the epoch, and a date in the past gives a delay of 0.
    """
    if value is None:
        return None
    value = value.strip()
    if _DELAY_SECONDS.fullmatch(value):
        return float(value)
    return _seconds_until_date(value, now)


def _seconds_until_date(value: str, now: float) -> float | None:
    try:
        moment = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    # A date with the zone "-0000" parses as naive and means UTC, as HTTP dates do.
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return max(0.0, moment.timestamp() - now)
