"""Tests of retry decisions, full-jitter backoff and Retry-After parsing."""

from __future__ import annotations

from datetime import UTC, datetime
from email.utils import format_datetime

import pytest
from hypothesis import given
from hypothesis import strategies as st

from sidecar.upstream.retry import (
    ErrorKind,
    GiveUp,
    GiveUpReason,
    Outcome,
    Retry,
    RetryPolicy,
    parse_retry_after,
)
from sidecar.upstream.settings import RetrySettings

NOW = datetime(2025, 3, 14, 12, 0, 0, tzinfo=UTC).timestamp()
SETTINGS = RetrySettings(
    max_attempts=4, base_delay=1.0, max_delay=5.0, max_retry_after=30.0, deadline=60.0
)


def policy(rng_value: float = 0.5, settings: RetrySettings = SETTINGS) -> RetryPolicy:
    return RetryPolicy(settings, rng=lambda: rng_value)


def decide(outcome: Outcome, attempt: int = 1, elapsed: float = 0.0) -> Retry | GiveUp:
    return policy().decide(outcome, attempt=attempt, elapsed=elapsed, now=NOW)


@pytest.mark.parametrize(
    "outcome",
    [
        pytest.param(Outcome(status=429), id="429"),
        pytest.param(Outcome(status=500), id="500"),
        pytest.param(Outcome(status=502), id="502"),
        pytest.param(Outcome(status=503), id="503"),
        pytest.param(Outcome(status=504), id="504"),
        pytest.param(Outcome(status=529), id="529-anthropic-overloaded"),
        *[pytest.param(Outcome(error=kind), id=kind.value) for kind in ErrorKind],
    ],
)
def test_retryable_outcome_is_retried(outcome: Outcome) -> None:
    assert isinstance(decide(outcome), Retry)


@pytest.mark.parametrize("status", [200, 201, 400, 401, 403, 404, 408, 413, 422, 501, 505])
def test_other_status_is_not_retried(status: int) -> None:
    assert decide(Outcome(status=status)) == GiveUp(GiveUpReason.NOT_RETRYABLE)


def test_outcome_needs_status_or_error() -> None:
    with pytest.raises(ValueError, match="exactly one"):
        Outcome()
    with pytest.raises(ValueError, match="exactly one"):
        Outcome(status=503, error=ErrorKind.CONNECT_TIMEOUT)


@pytest.mark.parametrize(
    ("outcome", "cause"),
    [
        pytest.param(Outcome(status=503), "status_503", id="status"),
        pytest.param(Outcome(error=ErrorKind.IDLE_TIMEOUT), "idle_timeout", id="error"),
    ],
)
def test_outcome_cause_label(outcome: Outcome, cause: str) -> None:
    assert outcome.cause == cause


def test_last_attempt_gives_up() -> None:
    assert decide(Outcome(status=503), attempt=3) == Retry(delay=2.0, from_retry_after=False)
    assert decide(Outcome(status=503), attempt=4) == GiveUp(GiveUpReason.ATTEMPTS_EXHAUSTED)


def test_single_attempt_never_retries() -> None:
    single = policy(settings=RetrySettings(max_attempts=1))

    decision = single.decide(Outcome(status=503), attempt=1, elapsed=0.0, now=NOW)

    assert decision == GiveUp(GiveUpReason.ATTEMPTS_EXHAUSTED)


@pytest.mark.parametrize(
    ("attempt", "cap"),
    [
        pytest.param(1, 1.0, id="first"),
        pytest.param(2, 2.0, id="doubles"),
        pytest.param(3, 4.0, id="doubles-again"),
        pytest.param(4, 5.0, id="max-delay"),
        pytest.param(10_000, 5.0, id="huge-attempt-number"),
    ],
)
def test_backoff_cap_doubles_up_to_max(attempt: int, cap: float) -> None:
    assert policy(rng_value=0.999).backoff(attempt) == pytest.approx(cap * 0.999)


@pytest.mark.parametrize("rng_value", [0.0, 0.25, 0.999999])
def test_backoff_is_full_jitter(rng_value: float) -> None:
    assert policy(rng_value=rng_value).backoff(3) == pytest.approx(4.0 * rng_value)


@given(attempt=st.integers(min_value=1, max_value=200), draw=st.floats(0.0, 1.0, exclude_max=True))
def test_backoff_stays_within_bounds(attempt: int, draw: float) -> None:
    delay = policy(rng_value=draw).backoff(attempt)

    assert 0.0 <= delay < SETTINGS.max_delay


def test_retry_after_seconds_replace_backoff() -> None:
    decision = decide(Outcome(status=429, retry_after="7"))

    assert decision == Retry(delay=7.0, from_retry_after=True)


def test_retry_after_date_replaces_backoff() -> None:
    date = format_datetime(datetime.fromtimestamp(NOW + 12, tz=UTC), usegmt=True)

    decision = decide(Outcome(status=503, retry_after=date))

    assert decision == Retry(delay=12.0, from_retry_after=True)


def test_retry_after_above_maximum_gives_up() -> None:
    decision = decide(Outcome(status=429, retry_after="31"))

    assert decision == GiveUp(GiveUpReason.RETRY_AFTER_TOO_LONG)


def test_retry_after_at_maximum_is_waited() -> None:
    assert decide(Outcome(status=429, retry_after="30")) == Retry(30.0, from_retry_after=True)


def test_invalid_retry_after_falls_back_to_backoff() -> None:
    decision = decide(Outcome(status=429, retry_after="soon"))

    assert decision == Retry(delay=0.5, from_retry_after=False)


def test_delay_past_deadline_gives_up() -> None:
    assert decide(Outcome(status=503, retry_after="10"), elapsed=50.0) == Retry(10.0, True)
    assert decide(Outcome(status=503, retry_after="10"), elapsed=50.5) == GiveUp(
        GiveUpReason.DEADLINE
    )


def test_elapsed_past_deadline_gives_up() -> None:
    assert decide(Outcome(error=ErrorKind.CONNECT_TIMEOUT), elapsed=61.0) == GiveUp(
        GiveUpReason.DEADLINE
    )


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        pytest.param("0", 0.0, id="zero"),
        pytest.param("120", 120.0, id="seconds"),
        pytest.param(" 5 ", 5.0, id="whitespace"),
        pytest.param("1.5", 1.5, id="decimal"),
        pytest.param("Fri, 14 Mar 2025 12:00:30 GMT", 30.0, id="imf-fixdate"),
        pytest.param("Friday, 14-Mar-25 12:00:30 GMT", 30.0, id="rfc850-date"),
        pytest.param("Fri Mar 14 12:00:30 2025", 30.0, id="asctime-date"),
        pytest.param("Fri, 14 Mar 2025 12:00:30 -0000", 30.0, id="zone-minus-zero"),
        pytest.param("Fri, 14 Mar 2025 13:00:30 +0100", 30.0, id="zone-offset"),
        pytest.param("Fri, 14 Mar 2025 11:00:00 GMT", 0.0, id="date-in-past"),
    ],
)
def test_parse_retry_after_valid(value: str, expected: float) -> None:
    assert parse_retry_after(value, NOW) == pytest.approx(expected)


@pytest.mark.parametrize(
    "value",
    [
        pytest.param(None, id="missing"),
        pytest.param("", id="empty"),
        pytest.param("-5", id="negative"),
        pytest.param("5s", id="unit"),
        pytest.param("1e3", id="exponent"),
        pytest.param("tomorrow", id="word"),
        pytest.param("Fri, 32 Mar 2025 12:00:30 GMT", id="bad-day"),
    ],
)
def test_parse_retry_after_invalid(value: str | None) -> None:
    assert parse_retry_after(value, NOW) is None


@given(st.text(max_size=60))
def test_parse_retry_after_never_raises(value: str) -> None:
    delay = parse_retry_after(value, NOW)

    assert delay is None or delay >= 0.0
