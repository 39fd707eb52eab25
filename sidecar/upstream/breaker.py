"""A circuit breaker per upstream, which skips an upstream after repeated failures.

    closed ──(failure_threshold consecutive failures)──► open
    open ──(cool_down elapsed, next allow())──► half-open, one probe allowed
    half-open ──(success)──► closed
    half-open ──(failure)──► open, for another cool_down

The breaker only counts: the caller asks `allow()` before an attempt and reports
the attempt with `record_success()` or `record_failure()`. Results do not carry
an attempt id, so a result that arrives late from an attempt started before the
breaker opened is ignored while it is open, and counts as the probe's result
while it is half-open. A breaker is meant for one event loop and has no lock.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from enum import StrEnum

import structlog

from sidecar.upstream.settings import BreakerSettings, UpstreamTarget

logger = structlog.get_logger("sidecar.upstream")


class BreakerState(StrEnum):
    CLOSED = "closed"
    OPEN = "open"
    HALF_OPEN = "half_open"


@dataclass(frozen=True)
class BreakerTransition:
    """A change of a breaker's state; `failures` is the count of consecutive failures."""

    upstream: str
    old: BreakerState
    new: BreakerState
    failures: int


TransitionCallback = Callable[[BreakerTransition], None]


class CircuitBreaker:
    """The breaker of the upstream `name`; `clock` returns monotonic seconds."""

    def __init__(
        self,
        name: str,
        settings: BreakerSettings,
        *,
        clock: Callable[[], float] = time.monotonic,
        on_transition: TransitionCallback | None = None,
    ) -> None:
        """`on_transition` is called after each state change and must not raise."""
        self.name = name
        self.settings = settings
        self._clock = clock
        self._on_transition = on_transition
        self._state = BreakerState.CLOSED
        self._failures = 0
        self._opened_at = 0.0
        self._probe_started_at: float | None = None

    @property
    def state(self) -> BreakerState:
        """The current state. An open breaker turns half-open only in `allow()`."""
        return self._state

    @property
    def failures(self) -> int:
        """The count of consecutive failures since the last success."""
        return self._failures

    def allow(self) -> bool:
        """Return whether an attempt may go to the upstream now.

        In the half-open state a True result reserves the single probe, and the
        caller must report its result. A probe without a result stops blocking
        the next one after `probe_timeout` seconds, or when `release_probe()` is called.
        """
        if self._state is BreakerState.CLOSED:
            return True
        now = self._clock()
        if self._state is BreakerState.OPEN:
            if now - self._opened_at < self.settings.cool_down:
                return False
            self._transition(BreakerState.HALF_OPEN)
        return self._take_probe(now)

    def record_success(self) -> None:
        """Record an attempt that reached the upstream and got a response it could serve."""
        if self._state is BreakerState.OPEN:
            return
        self._failures = 0
        self._probe_started_at = None
        if self._state is BreakerState.HALF_OPEN:
            self._transition(BreakerState.CLOSED)

    def record_failure(self) -> None:
        """Record a failed attempt: a transport error, a timeout or a retryable status."""
        if self._state is BreakerState.OPEN:
            return
        self._failures += 1
        if (
            self._state is BreakerState.HALF_OPEN
            or self._failures >= self.settings.failure_threshold
        ):
            self._open()

    def release_probe(self) -> None:
        """Free the half-open probe of an attempt that ended without a result.

        An attempt cancelled because the client went away is such an attempt.
        """
        self._probe_started_at = None

    def _take_probe(self, now: float) -> bool:
        started = self._probe_started_at
        if started is not None and now - started < self.settings.probe_timeout:
            return False
        self._probe_started_at = now
        return True

    def _open(self) -> None:
        self._opened_at = self._clock()
        self._probe_started_at = None
        self._transition(BreakerState.OPEN)

    def _transition(self, new: BreakerState) -> None:
        change = BreakerTransition(self.name, self._state, new, self._failures)
        self._state = new
        _log_transition(change, self.settings)
        if self._on_transition is not None:
            self._on_transition(change)


def _log_transition(change: BreakerTransition, settings: BreakerSettings) -> None:
    fields = {"upstream": change.upstream, "old_state": change.old, "failures": change.failures}
    if change.new is BreakerState.OPEN:
        logger.warning("circuit breaker opened", **fields, cool_down=settings.cool_down)
    elif change.new is BreakerState.HALF_OPEN:
        logger.info("circuit breaker half-open, sending a probe", **fields)
    else:
        logger.info("circuit breaker closed", **fields)


def build_breakers(
    targets: Iterable[UpstreamTarget],
    settings: BreakerSettings,
    *,
    clock: Callable[[], float] = time.monotonic,
    on_transition: TransitionCallback | None = None,
) -> dict[str, CircuitBreaker]:
    """Create one closed breaker per target, keyed by target name."""
    return {
        target.name: CircuitBreaker(target.name, settings, clock=clock, on_transition=on_transition)
        for target in targets
    }
