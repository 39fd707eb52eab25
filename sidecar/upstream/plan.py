"""The attempts of one request: retries on an upstream, then failover to the next.

`AttemptPlan` is an iterator that performs no I/O and never sleeps. The HTTP
client sleeps for `Attempt.delay_before`, sends the request to `Attempt.target`
and reports the result with `record()` before it requests the next attempt:

    with AttemptPlan(group.upstreams, breakers, group.retry, request_id=rid) as plan:
        for attempt in plan:
            await asyncio.sleep(attempt.delay_before)
            outcome, response = await send(attempt.target)
            plan.record(outcome)
    if plan.status is not PlanStatus.COMPLETED:
        ...  # every upstream failed, was skipped, or the plan was cancelled

The client must call `record()` before it sends any response byte on to its own
client, because the plan may retry after every recorded failure. A response that
the sidecar buffers whole is recorded after its body is read, so that a failure
while reading it is retried too. A failure of a response body that has already
begun to stream goes to `record_stream_error()`, which counts it against the
breaker and never retries.

A recorded response with a status outside `RETRYABLE_STATUSES` completes the
plan, so a 400 or 401 from an upstream reaches the client and does not fail over.
Every retry, abandoned upstream, skipped upstream and failover is logged and
passed to the `on_event` callback as a `PlanEvent`.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from enum import StrEnum
from types import TracebackType
from typing import Any

import structlog

from sidecar.upstream.breaker import BreakerState, CircuitBreaker
from sidecar.upstream.retry import ErrorKind, GiveUp, GiveUpReason, Outcome, Retry, RetryPolicy
from sidecar.upstream.settings import RetrySettings, UpstreamTarget

logger = structlog.get_logger("sidecar.upstream")


@dataclass(frozen=True)
class Attempt:
    """One request to send: `number` counts attempts on `target` from 1."""

    target: UpstreamTarget
    number: int
    delay_before: float
    """Seconds to wait before sending."""


@dataclass(frozen=True)
class RetryScheduled:
    """Attempt `attempt` on `upstream` failed with `cause` and is retried after `delay` seconds."""

    upstream: str
    attempt: int
    cause: str
    delay: float
    from_retry_after: bool


@dataclass(frozen=True)
class UpstreamAbandoned:
    """No further attempt goes to `upstream` after `attempts` failed ones."""

    upstream: str
    attempts: int
    cause: str
    reason: GiveUpReason


@dataclass(frozen=True)
class UpstreamSkipped:
    """`upstream` was not tried, or not retried, because its circuit breaker is open."""

    upstream: str


@dataclass(frozen=True)
class FailedOver:
    """The request moves from the tried `from_upstream` to the next allowed `to_upstream`.

    A primary skipped because of its open breaker yields only `UpstreamSkipped`.
    """

    from_upstream: str
    to_upstream: str


@dataclass(frozen=True)
class StreamFailed:
    """The response of `upstream` failed with `cause` after it began to stream."""

    upstream: str
    cause: str


PlanEvent = RetryScheduled | UpstreamAbandoned | UpstreamSkipped | FailedOver | StreamFailed
EventCallback = Callable[[PlanEvent], None]


class PlanStatus(StrEnum):
    RUNNING = "running"
    COMPLETED = "completed"
    """An upstream returned a response that goes to the client."""
    EXHAUSTED = "exhausted"
    """Every upstream failed or was skipped."""
    CANCELLED = "cancelled"
    """The plan was closed with an attempt in progress."""


class AttemptPlan:
    """Yields the attempts of one request over `targets`, the primary first.

    `breakers` maps every target name to the breaker shared by all requests.
    `clock` returns monotonic seconds for the retry deadline, `wall_clock`
    returns seconds since the epoch for `Retry-After` dates, and `rng` draws the
    backoff jitter in [0, 1).
    """

    def __init__(
        self,
        targets: Sequence[UpstreamTarget],
        breakers: Mapping[str, CircuitBreaker],
        retry: RetrySettings,
        *,
        clock: Callable[[], float] = time.monotonic,
        wall_clock: Callable[[], float] = time.time,
        rng: Callable[[], float] = random.random,
        on_event: EventCallback | None = None,
        request_id: str | None = None,
    ) -> None:
        """`on_event` is called once per event and must not raise."""
        missing = [target.name for target in targets if target.name not in breakers]
        if missing:
            raise ValueError(f"no circuit breaker for upstream {', '.join(missing)}")

        self._targets = list(targets)
        self._breakers = breakers
        self._policy = RetryPolicy(retry, rng)
        self._clock = clock
        self._wall_clock = wall_clock
        self._on_event = on_event
        self._log = logger.bind(request_id=request_id) if request_id else logger

        self.status = PlanStatus.RUNNING
        self.attempt_count = 0
        self.last_outcome: Outcome | None = None
        self._next_index = 0
        self._current: UpstreamTarget | None = None
        self._current_started_at = 0.0
        self._pending: Attempt | None = None
        self._holds_probe = False
        self._retry: Attempt | None = None

    @property
    def served_by(self) -> UpstreamTarget | None:
        """The target whose response completed the plan, if one did."""
        return self._current if self.status is PlanStatus.COMPLETED else None

    def __iter__(self) -> AttemptPlan:
        return self

    def __next__(self) -> Attempt:
        if self._pending is not None:
            raise RuntimeError("record() the outcome of the previous attempt first")
        if self.status is not PlanStatus.RUNNING:
            raise StopIteration

        retry, self._retry = self._retry, None
        if retry is not None:
            if self._admit(retry.target):
                return self._start(retry)
            self._emit(UpstreamSkipped(retry.target.name))

        target = self._next_admitted_target()
        if target is None:
            self._finish_exhausted()
            raise StopIteration
        if self._current is not None:
            self._emit(FailedOver(self._current.name, target.name))
        self._current = target
        self._current_started_at = self._clock()
        return self._start(Attempt(target, number=1, delay_before=0.0))

    def record(self, outcome: Outcome) -> None:
        """Record the outcome of the attempt last returned, before any byte reaches the client."""
        attempt = self._take_pending()
        self.last_outcome = outcome
        breaker = self._breakers[attempt.target.name]

        if not outcome.retryable:
            breaker.record_success()
            self.status = PlanStatus.COMPLETED
            return

        breaker.record_failure()
        decision = self._decide(attempt, outcome, breaker)
        if isinstance(decision, Retry):
            self._retry = Attempt(attempt.target, attempt.number + 1, decision.delay)
            event: PlanEvent = RetryScheduled(
                attempt.target.name,
                attempt.number,
                outcome.cause,
                decision.delay,
                decision.from_retry_after,
            )
        else:
            event = UpstreamAbandoned(
                attempt.target.name, attempt.number, outcome.cause, decision.reason
            )
        self._emit(event)

    def record_stream_error(self, error: ErrorKind) -> None:
        """Record that the response that completed the plan failed while it streamed."""
        target = self.served_by
        if target is None:
            raise RuntimeError("record_stream_error() needs a plan completed by a response")
        self._breakers[target.name].record_failure()
        self._emit(StreamFailed(target.name, error.value))

    def close(self) -> None:
        """End the plan. An attempt without a recorded outcome frees its breaker probe."""
        if self._pending is None:
            return
        if self._holds_probe:
            self._breakers[self._pending.target.name].release_probe()
        self._pending = None
        self._holds_probe = False
        self.status = PlanStatus.CANCELLED

    def __enter__(self) -> AttemptPlan:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()

    def _decide(
        self, attempt: Attempt, outcome: Outcome, breaker: CircuitBreaker
    ) -> Retry | GiveUp:
        if breaker.state is BreakerState.OPEN:
            return GiveUp(GiveUpReason.CIRCUIT_OPEN)
        elapsed = self._clock() - self._current_started_at
        return self._policy.decide(
            outcome, attempt=attempt.number, elapsed=elapsed, now=self._wall_clock()
        )

    def _admit(self, target: UpstreamTarget) -> bool:
        breaker = self._breakers[target.name]
        allowed = breaker.allow()
        self._holds_probe = allowed and breaker.state is BreakerState.HALF_OPEN
        return allowed

    def _next_admitted_target(self) -> UpstreamTarget | None:
        while self._next_index < len(self._targets):
            target = self._targets[self._next_index]
            self._next_index += 1
            if self._admit(target):
                return target
            self._emit(UpstreamSkipped(target.name))
        return None

    def _start(self, attempt: Attempt) -> Attempt:
        self._pending = attempt
        self.attempt_count += 1
        return attempt

    def _take_pending(self) -> Attempt:
        attempt = self._pending
        if attempt is None:
            raise RuntimeError("record() needs an attempt returned by next() and not yet recorded")
        self._pending = None
        self._holds_probe = False
        return attempt

    def _finish_exhausted(self) -> None:
        self.status = PlanStatus.EXHAUSTED
        cause = self.last_outcome.cause if self.last_outcome is not None else None
        self._log.warning("no upstream left to try", attempts=self.attempt_count, last_cause=cause)

    def _emit(self, event: PlanEvent) -> None:
        _log_event(self._log, event)
        if self._on_event is not None:
            self._on_event(event)


def _log_event(log: Any, event: PlanEvent) -> None:
    # `Any` because structlog loggers have no precise static type.
    match event:
        case RetryScheduled():
            log.info(
                "retrying upstream",
                upstream=event.upstream,
                attempt=event.attempt,
                cause=event.cause,
                delay=round(event.delay, 3),
                from_retry_after=event.from_retry_after,
            )
        case UpstreamAbandoned():
            log.warning(
                "giving up on upstream",
                upstream=event.upstream,
                attempts=event.attempts,
                cause=event.cause,
                reason=event.reason,
            )
        case UpstreamSkipped():
            log.info("skipping upstream with open circuit breaker", upstream=event.upstream)
        case FailedOver():
            log.info(
                "failing over to the next upstream",
                from_upstream=event.from_upstream,
                to_upstream=event.to_upstream,
            )
        case StreamFailed():
            log.warning(
                "upstream response failed while streaming",
                upstream=event.upstream,
                cause=event.cause,
            )
