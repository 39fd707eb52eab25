"""Tests of AttemptPlan: retries, failover and breakers over a fake clock, without sleeping."""

from __future__ import annotations

from collections.abc import Iterable

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from structlog.testing import capture_logs

from sidecar.upstream.breaker import BreakerState, CircuitBreaker, build_breakers
from sidecar.upstream.plan import (
    Attempt,
    AttemptPlan,
    FailedOver,
    PlanEvent,
    PlanStatus,
    RetryScheduled,
    StreamFailed,
    UpstreamAbandoned,
    UpstreamSkipped,
)
from sidecar.upstream.retry import ErrorKind, GiveUpReason, Outcome
from sidecar.upstream.settings import BreakerSettings, RetrySettings, UpstreamTarget

PRIMARY = UpstreamTarget(name="primary", url="https://api.provider.example")
CHEAPER = UpstreamTarget(
    name="cheaper", url="https://api.provider.example", model_rewrite="small-model"
)
GATEWAY = UpstreamTarget(name="gateway", url="https://gateway.example/provider")
TARGETS = (PRIMARY, CHEAPER, GATEWAY)

RETRY = RetrySettings(max_attempts=3, base_delay=1.0, max_delay=8.0, max_retry_after=20.0)
BREAKER = BreakerSettings(failure_threshold=5, cool_down=30.0)
WALL_START = 1_750_000_000.0

OK = Outcome(status=200)
UNAVAILABLE = Outcome(status=503)
REFUSED = Outcome(error=ErrorKind.CONNECTION_ERROR)


class FakeClock:
    def __init__(self, start: float) -> None:
        self.now = start

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


class Harness:
    """A plan over TARGETS with shared breakers, fake clocks and a fixed jitter of 0.5."""

    def __init__(self, breaker: BreakerSettings = BREAKER, retry: RetrySettings = RETRY) -> None:
        self.clock = FakeClock(100.0)
        self.wall_clock = FakeClock(WALL_START)
        self.retry = retry
        self.breakers = build_breakers(TARGETS, breaker, clock=self.clock)
        self.events: list[PlanEvent] = []

    def plan(self, targets: Iterable[UpstreamTarget] = TARGETS, **kwargs: object) -> AttemptPlan:
        return AttemptPlan(
            list(targets),
            self.breakers,
            self.retry,
            clock=self.clock,
            wall_clock=self.wall_clock,
            rng=lambda: 0.5,
            on_event=self.events.append,
            **kwargs,  # type: ignore[arg-type]
        )

    def advance(self, seconds: float) -> None:
        self.clock.advance(seconds)
        self.wall_clock.advance(seconds)

    def run(
        self, plan: AttemptPlan, outcomes: dict[str, list[Outcome]], duration: float = 1.0
    ) -> list[tuple[str, int, float]]:
        """Play the HTTP client: wait, spend `duration` per attempt, record the next outcome."""
        sent = []
        for attempt in plan:
            sent.append((attempt.target.name, attempt.number, attempt.delay_before))
            self.advance(attempt.delay_before + duration)
            plan.record(outcomes[attempt.target.name].pop(0))
        return sent


@pytest.fixture
def harness() -> Harness:
    return Harness()


def test_first_attempt_succeeds(harness: Harness) -> None:
    plan = harness.plan()

    sent = harness.run(plan, {"primary": [OK]})

    assert sent == [("primary", 1, 0.0)]
    assert plan.status is PlanStatus.COMPLETED
    assert plan.served_by is PRIMARY
    assert plan.attempt_count == 1
    assert plan.last_outcome == OK
    assert harness.events == []


def test_retry_after_503_then_success(harness: Harness) -> None:
    plan = harness.plan()

    sent = harness.run(plan, {"primary": [UNAVAILABLE, OK]})

    assert sent == [("primary", 1, 0.0), ("primary", 2, 0.5)]
    assert plan.served_by is PRIMARY
    assert harness.events == [RetryScheduled("primary", 1, "status_503", 0.5, False)]


def test_backoff_grows_with_attempts(harness: Harness) -> None:
    plan = harness.plan()

    sent = harness.run(plan, {"primary": [REFUSED, REFUSED, REFUSED], "cheaper": [OK]})

    assert [delay for _, _, delay in sent] == [0.0, 0.5, 1.0, 0.0]


def test_failover_after_attempts_exhausted(harness: Harness) -> None:
    plan = harness.plan()

    sent = harness.run(plan, {"primary": [UNAVAILABLE] * 3, "cheaper": [OK]})

    assert sent[-1] == ("cheaper", 1, 0.0)
    assert plan.served_by is CHEAPER
    assert plan.attempt_count == 4
    assert harness.events[2:] == [
        UpstreamAbandoned("primary", 3, "status_503", GiveUpReason.ATTEMPTS_EXHAUSTED),
        FailedOver("primary", "cheaper"),
    ]


def test_every_upstream_fails(harness: Harness) -> None:
    plan = harness.plan()

    sent = harness.run(
        plan, {"primary": [REFUSED] * 3, "cheaper": [REFUSED] * 3, "gateway": [UNAVAILABLE] * 3}
    )

    assert len(sent) == 9
    assert plan.status is PlanStatus.EXHAUSTED
    assert plan.served_by is None
    assert plan.last_outcome == UNAVAILABLE
    assert [type(event) for event in harness.events].count(FailedOver) == 2


@pytest.mark.parametrize("status", [400, 401, 404, 422, 501])
def test_non_retryable_status_completes(harness: Harness, status: int) -> None:
    plan = harness.plan()

    sent = harness.run(plan, {"primary": [Outcome(status=status)]})

    assert sent == [("primary", 1, 0.0)]
    assert plan.status is PlanStatus.COMPLETED
    assert harness.breakers["primary"].failures == 0


def test_retry_after_is_waited(harness: Harness) -> None:
    plan = harness.plan()

    sent = harness.run(plan, {"primary": [Outcome(status=429, retry_after="12"), OK]})

    assert sent[1] == ("primary", 2, 12.0)
    assert harness.events == [RetryScheduled("primary", 1, "status_429", 12.0, True)]


def test_retry_after_date_uses_wall_clock(harness: Harness) -> None:
    plan = harness.plan()
    # The wall clock reads WALL_START + 1 when the outcome is recorded.
    retry_at = "Sun, 15 Jun 2025 15:06:50 GMT"
    assert WALL_START == 1_750_000_000.0

    sent = harness.run(plan, {"primary": [Outcome(status=503, retry_after=retry_at), OK]})

    assert sent[1][2] == pytest.approx(9.0)


def test_long_retry_after_fails_over_at_once(harness: Harness) -> None:
    plan = harness.plan()

    sent = harness.run(
        plan, {"primary": [Outcome(status=429, retry_after="3600")], "cheaper": [OK]}
    )

    assert sent == [("primary", 1, 0.0), ("cheaper", 1, 0.0)]
    assert harness.events[0] == UpstreamAbandoned(
        "primary", 1, "status_429", GiveUpReason.RETRY_AFTER_TOO_LONG
    )


def test_deadline_fails_over(harness: Harness) -> None:
    # The attempt times out after 59.6 s, and a 0.5 s backoff would end past the 60 s deadline.
    plan = harness.plan()
    timeout = Outcome(error=ErrorKind.FIRST_BYTE_TIMEOUT)

    sent = harness.run(plan, {"primary": [timeout], "cheaper": [OK]}, duration=59.6)

    assert [name for name, _, _ in sent] == ["primary", "cheaper"]
    assert harness.events[0] == UpstreamAbandoned(
        "primary", 1, "first_byte_timeout", GiveUpReason.DEADLINE
    )


def test_deadline_restarts_per_upstream(harness: Harness) -> None:
    # 30 s attempts: the primary gets a second attempt but no third, and so does the fallback.
    plan = harness.plan()
    timeout = Outcome(error=ErrorKind.CONNECT_TIMEOUT)

    sent = harness.run(
        plan, {"primary": [timeout, timeout], "cheaper": [timeout, OK]}, duration=30.0
    )

    assert sent == [
        ("primary", 1, 0.0),
        ("primary", 2, 0.5),
        ("cheaper", 1, 0.0),
        ("cheaper", 2, 0.5),
    ]
    assert harness.events[1] == UpstreamAbandoned(
        "primary", 2, "connect_timeout", GiveUpReason.DEADLINE
    )


def test_open_breaker_skips_primary(harness: Harness) -> None:
    for _ in range(BREAKER.failure_threshold):
        harness.breakers["primary"].record_failure()
    plan = harness.plan()

    sent = harness.run(plan, {"cheaper": [OK]})

    assert sent == [("cheaper", 1, 0.0)]
    assert harness.events == [UpstreamSkipped("primary")]


def test_all_breakers_open_exhausts_without_attempts(harness: Harness) -> None:
    for breaker in harness.breakers.values():
        for _ in range(BREAKER.failure_threshold):
            breaker.record_failure()
    plan = harness.plan()

    sent = harness.run(plan, {})

    assert sent == []
    assert plan.status is PlanStatus.EXHAUSTED
    assert plan.last_outcome is None
    assert harness.events == [UpstreamSkipped(name) for name in ("primary", "cheaper", "gateway")]


def test_breaker_opened_by_own_failure_fails_over() -> None:
    harness = Harness(breaker=BreakerSettings(failure_threshold=2))
    plan = harness.plan()

    sent = harness.run(plan, {"primary": [UNAVAILABLE, UNAVAILABLE], "cheaper": [OK]})

    assert sent == [("primary", 1, 0.0), ("primary", 2, 0.5), ("cheaper", 1, 0.0)]
    assert harness.events[1] == UpstreamAbandoned(
        "primary", 2, "status_503", GiveUpReason.CIRCUIT_OPEN
    )
    assert harness.breakers["primary"].state is BreakerState.OPEN


def test_breaker_opened_during_backoff_skips_retry(harness: Harness) -> None:
    plan = harness.plan()
    first = next(plan)
    plan.record(UNAVAILABLE)
    # Other requests fail on the primary while this one waits for its retry.
    for _ in range(BREAKER.failure_threshold):
        harness.breakers["primary"].record_failure()

    second = next(plan)

    assert first.target is PRIMARY
    assert second == Attempt(CHEAPER, number=1, delay_before=0.0)
    assert harness.events[1:] == [UpstreamSkipped("primary"), FailedOver("primary", "cheaper")]


def test_failures_count_against_shared_breaker(harness: Harness) -> None:
    harness.run(harness.plan(), {"primary": [UNAVAILABLE] * 3, "cheaper": [OK]})
    harness.run(harness.plan(), {"primary": [UNAVAILABLE, UNAVAILABLE], "cheaper": [OK]})

    assert harness.breakers["primary"].state is BreakerState.OPEN
    assert harness.breakers["cheaper"].failures == 0


def test_half_open_probe_closes_breaker(harness: Harness) -> None:
    for _ in range(BREAKER.failure_threshold):
        harness.breakers["primary"].record_failure()
    harness.advance(BREAKER.cool_down)
    probing = harness.plan()
    probe = next(probing)

    waiting = harness.plan()
    sent = harness.run(waiting, {"cheaper": [OK]})
    probing.record(OK)

    assert probe.target is PRIMARY
    assert sent == [("cheaper", 1, 0.0)]
    assert harness.breakers["primary"].state is BreakerState.CLOSED


def test_cancelled_probe_is_released(harness: Harness) -> None:
    for _ in range(BREAKER.failure_threshold):
        harness.breakers["primary"].record_failure()
    harness.advance(BREAKER.cool_down)

    with harness.plan() as cancelled:
        next(cancelled)
    follower = harness.plan()

    assert cancelled.status is PlanStatus.CANCELLED
    assert next(follower).target is PRIMARY


def test_close_after_completion_keeps_status(harness: Harness) -> None:
    with harness.plan() as plan:
        harness.run(plan, {"primary": [OK]})

    assert plan.status is PlanStatus.COMPLETED


def test_stream_error_counts_against_breaker(harness: Harness) -> None:
    plan = harness.plan()
    harness.run(plan, {"primary": [OK]})

    plan.record_stream_error(ErrorKind.IDLE_TIMEOUT)

    assert harness.breakers["primary"].failures == 1
    assert harness.events == [StreamFailed("primary", "idle_timeout")]
    with pytest.raises(StopIteration):
        next(plan)


def test_stream_error_needs_completed_plan(harness: Harness) -> None:
    plan = harness.plan()

    with pytest.raises(RuntimeError, match="record_stream_error"):
        plan.record_stream_error(ErrorKind.IDLE_TIMEOUT)


def test_next_before_record_raises(harness: Harness) -> None:
    plan = harness.plan()
    next(plan)

    with pytest.raises(RuntimeError, match="previous attempt"):
        next(plan)


def test_record_without_attempt_raises(harness: Harness) -> None:
    plan = harness.plan()

    with pytest.raises(RuntimeError, match="record"):
        plan.record(OK)


def test_record_after_completion_raises(harness: Harness) -> None:
    plan = harness.plan()
    harness.run(plan, {"primary": [OK]})

    with pytest.raises(RuntimeError):
        plan.record(UNAVAILABLE)


def test_missing_breaker_raises() -> None:
    breakers = {"primary": CircuitBreaker("primary", BREAKER)}

    with pytest.raises(ValueError, match="no circuit breaker for upstream cheaper, gateway"):
        AttemptPlan(TARGETS, breakers, RETRY)


def test_plan_logs_with_request_id(harness: Harness) -> None:
    plan = harness.plan(request_id="req-42")

    with capture_logs() as logs:
        harness.run(plan, {"primary": [UNAVAILABLE] * 3, "cheaper": [REFUSED] * 3, "gateway": [OK]})

    assert [entry["event"] for entry in logs] == [
        "retrying upstream",
        "retrying upstream",
        "giving up on upstream",
        "failing over to the next upstream",
        "retrying upstream",
        "retrying upstream",
        "giving up on upstream",
        "failing over to the next upstream",
    ]
    assert all(entry["request_id"] == "req-42" for entry in logs)
    assert logs[0]["cause"] == "status_503"
    assert logs[2]["log_level"] == "warning"
    assert logs[3]["to_upstream"] == "cheaper"


def test_exhausted_plan_logs_warning(harness: Harness) -> None:
    plan = harness.plan(targets=[GATEWAY])

    with capture_logs() as logs:
        harness.run(plan, {"gateway": [UNAVAILABLE] * 3})

    assert logs[-1]["event"] == "no upstream left to try"
    assert logs[-1]["log_level"] == "warning"
    assert logs[-1]["attempts"] == 3
    assert logs[-1]["last_cause"] == "status_503"


OUTCOMES = st.sampled_from(
    [
        OK,
        Outcome(status=400),
        UNAVAILABLE,
        REFUSED,
        Outcome(status=429, retry_after="3"),
        Outcome(status=429, retry_after="600"),
        Outcome(error=ErrorKind.FIRST_BYTE_TIMEOUT),
    ]
)


@settings(max_examples=300)
@given(
    outcomes=st.lists(OUTCOMES, min_size=12, max_size=12),
    durations=st.lists(st.floats(0.0, 40.0), min_size=12, max_size=12),
    threshold=st.integers(1, 6),
)
def test_plan_invariants_hold(
    outcomes: list[Outcome], durations: list[float], threshold: int
) -> None:
    harness = Harness(breaker=BreakerSettings(failure_threshold=threshold))
    plan = harness.plan()
    sent: list[Attempt] = []

    for attempt, outcome, duration in zip(plan, outcomes, durations, strict=False):
        sent.append(attempt)
        harness.advance(attempt.delay_before + duration)
        plan.record(outcome)

    names = [attempt.target.name for attempt in sent]
    order = [TARGETS.index(attempt.target) for attempt in sent]
    assert len(sent) <= RETRY.max_attempts * len(TARGETS)
    assert order == sorted(order)
    assert all(names.count(name) <= RETRY.max_attempts for name in names)
    assert all(0.0 <= attempt.delay_before <= RETRY.max_retry_after for attempt in sent)
    assert all(attempt.delay_before == 0.0 for attempt in sent if attempt.number == 1)
    assert plan.status in (PlanStatus.COMPLETED, PlanStatus.EXHAUSTED)
    if plan.status is PlanStatus.COMPLETED:
        assert plan.last_outcome is not None
        assert not plan.last_outcome.retryable
