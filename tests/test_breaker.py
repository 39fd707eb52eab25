"""Tests of the circuit breaker state machine, with a fake monotonic clock."""

from __future__ import annotations

import pytest
from structlog.testing import capture_logs

from sidecar.upstream.breaker import (
    BreakerState,
    BreakerTransition,
    CircuitBreaker,
    build_breakers,
)
from sidecar.upstream.settings import BreakerSettings, UpstreamTarget

SETTINGS = BreakerSettings(failure_threshold=3, cool_down=30.0, probe_timeout=100.0)


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def transitions() -> list[BreakerTransition]:
    return []


@pytest.fixture
def breaker(clock: FakeClock, transitions: list[BreakerTransition]) -> CircuitBreaker:
    return CircuitBreaker("primary", SETTINGS, clock=clock, on_transition=transitions.append)


def trip(breaker: CircuitBreaker) -> None:
    for _ in range(SETTINGS.failure_threshold):
        breaker.record_failure()


def test_breaker_starts_closed(breaker: CircuitBreaker) -> None:
    assert breaker.state is BreakerState.CLOSED
    assert breaker.allow() is True


def test_breaker_opens_at_threshold(
    breaker: CircuitBreaker, transitions: list[BreakerTransition]
) -> None:
    breaker.record_failure()
    breaker.record_failure()
    assert breaker.state is BreakerState.CLOSED

    breaker.record_failure()

    assert breaker.state is BreakerState.OPEN
    assert breaker.allow() is False
    assert transitions == [
        BreakerTransition("primary", BreakerState.CLOSED, BreakerState.OPEN, failures=3)
    ]


def test_success_resets_failure_count(breaker: CircuitBreaker) -> None:
    breaker.record_failure()
    breaker.record_failure()
    breaker.record_success()
    breaker.record_failure()
    breaker.record_failure()

    assert breaker.state is BreakerState.CLOSED
    assert breaker.failures == 2


def test_open_breaker_blocks_until_cool_down(breaker: CircuitBreaker, clock: FakeClock) -> None:
    trip(breaker)

    clock.advance(29.9)
    assert breaker.allow() is False
    assert breaker.state is BreakerState.OPEN

    clock.advance(0.1)
    assert breaker.allow() is True
    assert breaker.state is BreakerState.HALF_OPEN


def test_half_open_allows_one_probe(breaker: CircuitBreaker, clock: FakeClock) -> None:
    trip(breaker)
    clock.advance(30.0)

    assert breaker.allow() is True
    assert breaker.allow() is False
    assert breaker.allow() is False


def test_probe_success_closes(
    breaker: CircuitBreaker, clock: FakeClock, transitions: list[BreakerTransition]
) -> None:
    trip(breaker)
    clock.advance(30.0)
    breaker.allow()

    breaker.record_success()

    assert breaker.state is BreakerState.CLOSED
    assert breaker.failures == 0
    assert breaker.allow() is True
    assert breaker.allow() is True
    assert [(change.old, change.new) for change in transitions] == [
        (BreakerState.CLOSED, BreakerState.OPEN),
        (BreakerState.OPEN, BreakerState.HALF_OPEN),
        (BreakerState.HALF_OPEN, BreakerState.CLOSED),
    ]


def test_probe_failure_reopens_for_cool_down(breaker: CircuitBreaker, clock: FakeClock) -> None:
    trip(breaker)
    clock.advance(30.0)
    breaker.allow()

    breaker.record_failure()

    assert breaker.state is BreakerState.OPEN
    clock.advance(29.0)
    assert breaker.allow() is False
    clock.advance(1.0)
    assert breaker.allow() is True


def test_single_failure_reopens_half_open(breaker: CircuitBreaker, clock: FakeClock) -> None:
    # One failed probe reopens the breaker although the threshold is 3.
    trip(breaker)
    clock.advance(30.0)
    breaker.allow()
    breaker.record_failure()

    assert breaker.state is BreakerState.OPEN


def test_results_while_open_are_ignored(breaker: CircuitBreaker, clock: FakeClock) -> None:
    trip(breaker)
    clock.advance(20.0)

    breaker.record_success()
    breaker.record_failure()

    assert breaker.state is BreakerState.OPEN
    clock.advance(10.0)
    assert breaker.allow() is True


def test_released_probe_allows_next(breaker: CircuitBreaker, clock: FakeClock) -> None:
    trip(breaker)
    clock.advance(30.0)
    assert breaker.allow() is True

    breaker.release_probe()

    assert breaker.state is BreakerState.HALF_OPEN
    assert breaker.allow() is True
    assert breaker.allow() is False


def test_lost_probe_expires(breaker: CircuitBreaker, clock: FakeClock) -> None:
    trip(breaker)
    clock.advance(30.0)
    assert breaker.allow() is True

    clock.advance(99.0)
    assert breaker.allow() is False
    clock.advance(1.0)
    assert breaker.allow() is True


def test_threshold_of_one_opens_at_once(clock: FakeClock) -> None:
    breaker = CircuitBreaker("a", BreakerSettings(failure_threshold=1), clock=clock)

    breaker.record_failure()

    assert breaker.state is BreakerState.OPEN


def test_transitions_are_logged(breaker: CircuitBreaker, clock: FakeClock) -> None:
    with capture_logs() as logs:
        trip(breaker)
        clock.advance(30.0)
        breaker.allow()
        breaker.record_success()

    assert [(entry["event"], entry["log_level"]) for entry in logs] == [
        ("circuit breaker opened", "warning"),
        ("circuit breaker half-open, sending a probe", "info"),
        ("circuit breaker closed", "info"),
    ]
    assert all(entry["upstream"] == "primary" for entry in logs)
    assert logs[0]["failures"] == 3
    assert logs[0]["cool_down"] == 30.0


def test_build_breakers_one_per_target(clock: FakeClock) -> None:
    targets = [
        UpstreamTarget(name="primary", url="https://a.example"),
        UpstreamTarget(name="fallback", url="https://b.example"),
    ]

    breakers = build_breakers(targets, SETTINGS, clock=clock)

    assert list(breakers) == ["primary", "fallback"]
    assert breakers["fallback"].name == "fallback"
    assert breakers["primary"] is not breakers["fallback"]
