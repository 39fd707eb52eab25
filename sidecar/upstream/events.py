"""Observers of upstream traffic: counters for metrics, and the trace of one request for its audit.

A metrics backend implements `UpstreamObserver` and registers it with
`ObserverSet.add()`. Every method is called on the event loop, once per
attempt, plan event or breaker change, and must return quickly. Upstream
names come from the configuration file, so they are safe as metric labels.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any, Protocol

import structlog

from sidecar.upstream.breaker import BreakerTransition
from sidecar.upstream.plan import (
    FailedOver,
    PlanEvent,
    RetryScheduled,
    StreamFailed,
    UpstreamAbandoned,
    UpstreamSkipped,
)
from sidecar.upstream.retry import Outcome

logger = structlog.get_logger("sidecar.upstream")


class UpstreamObserver(Protocol):
    """Receives what happens between the sidecar and its upstreams."""

    def attempt_finished(self, upstream: str, outcome: Outcome) -> None:
        """Called when an attempt got a response head and body, or failed."""

    def plan_event(self, event: PlanEvent) -> None:
        """Called for each retry, abandoned or skipped upstream, failover and stream failure."""

    def breaker_changed(self, change: BreakerTransition) -> None:
        """Called after a circuit breaker changed its state."""


class ObserverSet:
    """Passes every notification to each registered observer.

    An observer that raises is logged with the error type and skipped, so that
    a broken metrics backend never fails a request.
    """

    def __init__(self, observers: Iterable[UpstreamObserver] = ()) -> None:
        self._observers = list(observers)

    def add(self, observer: UpstreamObserver) -> None:
        self._observers.append(observer)

    def attempt_finished(self, upstream: str, outcome: Outcome) -> None:
        for observer in self._observers:
            _call_safely(observer, "attempt_finished", upstream, outcome)

    def plan_event(self, event: PlanEvent) -> None:
        for observer in self._observers:
            _call_safely(observer, "plan_event", event)

    def breaker_changed(self, change: BreakerTransition) -> None:
        for observer in self._observers:
            _call_safely(observer, "breaker_changed", change)


def _call_safely(observer: UpstreamObserver, method: str, *args: Any) -> None:
    try:
        getattr(observer, method)(*args)
    except Exception as exc:
        logger.error(
            "upstream observer failed",
            observer=type(observer).__name__,
            method=method,
            error_type=type(exc).__name__,
        )


@dataclass
class UpstreamCounters:
    """In-memory counters of upstream traffic. The keys are upstream names and causes."""

    attempts: Counter[tuple[str, str]] = field(default_factory=Counter)
    """Finished attempts by (upstream, cause), such as ("primary", "status_200")."""

    retries: Counter[tuple[str, str]] = field(default_factory=Counter)
    """Scheduled retries by (upstream, cause of the failed attempt)."""

    abandoned: Counter[tuple[str, str]] = field(default_factory=Counter)
    """Upstreams given up by (upstream, `GiveUpReason`)."""

    skipped: Counter[str] = field(default_factory=Counter)
    """Upstreams skipped because their circuit breaker was open."""

    failovers: Counter[tuple[str, str]] = field(default_factory=Counter)
    """Failovers by (from upstream, to upstream)."""

    stream_failures: Counter[tuple[str, str]] = field(default_factory=Counter)
    """Responses that failed after they began to stream, by (upstream, cause)."""

    breaker_changes: Counter[tuple[str, str]] = field(default_factory=Counter)
    """Circuit breaker changes by (upstream, new state)."""

    def attempt_finished(self, upstream: str, outcome: Outcome) -> None:
        self.attempts[upstream, outcome.cause] += 1

    def plan_event(self, event: PlanEvent) -> None:
        match event:
            case RetryScheduled():
                self.retries[event.upstream, event.cause] += 1
            case UpstreamAbandoned():
                self.abandoned[event.upstream, event.reason.value] += 1
            case UpstreamSkipped():
                self.skipped[event.upstream] += 1
            case FailedOver():
                self.failovers[event.from_upstream, event.to_upstream] += 1
            case StreamFailed():
                self.stream_failures[event.upstream, event.cause] += 1

    def breaker_changed(self, change: BreakerTransition) -> None:
        self.breaker_changes[change.upstream, change.new.value] += 1


@dataclass
class UpstreamTrace:
    """The upstream attempts and events of one request, in the form of its audit record."""

    attempts: list[dict[str, str]] = field(default_factory=list)
    """One {"upstream", "result"} entry per attempt, in order."""

    retries: int = 0
    failovers: int = 0
    skipped: list[str] = field(default_factory=list)
    breaker_changes: list[dict[str, str]] = field(default_factory=list)
    """The breaker changes that this request's attempts caused, as {"upstream", "from", "to"}."""

    stream_error: str | None = None
    served_by: str | None = None
    """The name of the upstream whose response went to the client."""

    def attempt_finished(self, upstream: str, outcome: Outcome) -> None:
        self.attempts.append({"upstream": upstream, "result": outcome.cause})

    def plan_event(self, event: PlanEvent) -> None:
        match event:
            case RetryScheduled():
                self.retries += 1
            case UpstreamSkipped():
                self.skipped.append(event.upstream)
            case FailedOver():
                self.failovers += 1
            case StreamFailed():
                self.stream_error = event.cause
            case UpstreamAbandoned():
                pass

    def breaker_changed(self, change: BreakerTransition) -> None:
        entry = {"upstream": change.upstream, "from": change.old.value, "to": change.new.value}
        self.breaker_changes.append(entry)
