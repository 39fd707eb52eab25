"""Forwarding one request to a route's upstream group: retries, failover, breakers and keys.

    trace = UpstreamTrace()
    async with forwarder.exchange(build, trace, request_id=rid) as exchange:
        if exchange.body is not None:
            ...  # a whole response: a JSON body or an upstream's error
        while chunk := await exchange.next_chunk():
            ...  # a stream of server-sent events, relayed as it arrives
        if exchange.failure is not None:
            ...  # the stream broke after it began

`exchange()` sends attempts from an `AttemptPlan` until an upstream returns a
response that is not retryable. A streamed response is handed over once its
head arrives, and any other response once its body is read, so a failure
while reading that body is retried too. When every attempt fails, the client
gets the last upstream response received, or `UpstreamFailed` when no
upstream responded. Leaving the `async with` block, also by cancellation,
closes the upstream connection of an unfinished response.
"""

from __future__ import annotations

import asyncio
import json
import os
import random
import time
from collections.abc import AsyncIterator, Callable, Mapping
from contextlib import asynccontextmanager
from contextvars import ContextVar
from dataclasses import dataclass, replace
from typing import Any

import structlog
from multidict import CIMultiDictProxy

from sidecar.errors import UpstreamFailed
from sidecar.upstream.breaker import BreakerTransition, CircuitBreaker, build_breakers
from sidecar.upstream.client import AttemptFailed, AttemptResponse, UpstreamClient
from sidecar.upstream.credentials import ApiKey, load_key_sources, outgoing_headers
from sidecar.upstream.events import ObserverSet, UpstreamCounters, UpstreamTrace
from sidecar.upstream.plan import AttemptPlan, PlanEvent, PlanStatus
from sidecar.upstream.retry import ErrorKind, Outcome
from sidecar.upstream.settings import UpstreamGroup, UpstreamTarget

logger = structlog.get_logger("sidecar.upstream")

# The trace of the request whose attempt is running, so that a breaker change
# caused by that attempt is recorded in the request's audit record.
_CURRENT_TRACE: ContextVar[UpstreamTrace | None] = ContextVar("upstream_trace", default=None)


@dataclass(frozen=True)
class OutgoingRequest:
    """The request for one upstream, before the upstream's key and extra headers are applied.

    `path_qs` is the path and query string, appended to the upstream's URL.
    """

    method: str
    path_qs: str
    headers: tuple[tuple[str, str], ...]
    body: bytes | None = None


RequestBuilder = Callable[[UpstreamTarget], OutgoingRequest]
"""Returns the request to send to an upstream. Called once per attempt."""

ModelSetter = Callable[[dict[str, Any], str], dict[str, Any]]
"""Returns a copy of a parsed request body that names another model."""


class ModelRewriter:
    """A `RequestBuilder` that sends each upstream the model name its `model_rewrite` gives.

    Upstreams that keep the model get `request` unchanged. For the others
    `with_model` copies `document`, the parsed and already rewritten body, and
    the copy is sent as plain JSON without a Content-Encoding.
    """

    def __init__(
        self,
        request: OutgoingRequest,
        document: dict[str, Any],
        model: str | None,
        with_model: ModelSetter,
    ) -> None:
        self._request = request
        self._document = document
        self._model = model
        self._with_model = with_model
        self._by_model: dict[str, OutgoingRequest] = {}

    def __call__(self, target: UpstreamTarget) -> OutgoingRequest:
        if self._model is None:
            return self._request
        model = target.rewrite_model(self._model)
        if model == self._model:
            return self._request
        if model not in self._by_model:
            self._by_model[model] = self._renamed(model)
        return self._by_model[model]

    def _renamed(self, model: str) -> OutgoingRequest:
        body = json.dumps(self._with_model(self._document, model), ensure_ascii=False).encode()
        other_headers = [
            (name, value)
            for name, value in self._request.headers
            if name.lower() not in ("content-encoding", "content-type")
        ]
        headers = (*other_headers, ("Content-Type", "application/json"))
        return replace(self._request, headers=headers, body=body)


class Exchange:
    """The response of the upstream that serves a request.

    `body` contains the whole body of a response that does not stream, and is
    None for a stream of server-sent events, read with `next_chunk()`.
    """

    def __init__(self, plan: AttemptPlan, target: UpstreamTarget, response: AttemptResponse):
        self.target = target
        self.status = response.status
        self.headers: CIMultiDictProxy[str] = response.headers
        self.content_type = response.content_type
        self.body = response.body
        self.failure: ErrorKind | None = None
        """Why a stream ended early: a connection error or an expired deadline."""
        self._plan = plan
        self._response = response
        self._error_event_recorded = False

    async def next_chunk(self) -> bytes:
        """Return the next chunk of a streamed body, or b"" when the stream ends or fails.

        A failure sets `failure`, closes the upstream connection and counts
        against the upstream's circuit breaker. It is never retried, because the
        client may have received part of the stream already.
        """
        if self.failure is not None:
            return b""
        try:
            return await self._response.read_chunk()
        except AttemptFailed as exc:
            self.failure = exc.kind
            self._response.close()
            self._plan.record_stream_error(exc.kind)
            return b""

    def record_error_event(self) -> None:
        """Count the first error event that the upstream sent in its stream against its breaker."""
        if self._error_event_recorded or self._plan.status is not PlanStatus.COMPLETED:
            return
        self._error_event_recorded = True
        self._plan.record_stream_error(ErrorKind.ERROR_EVENT)


class Forwarder:
    """Sends requests to the upstreams of one `UpstreamGroup`.

    Its circuit breakers and key sources are shared by every request that the
    group serves. `clock` (monotonic seconds) drives the breakers and the retry
    deadline, `wall_clock` (seconds since the epoch) reads `Retry-After` dates,
    and `rng` draws the backoff jitter.
    """

    def __init__(
        self,
        group: UpstreamGroup,
        client: UpstreamClient,
        observers: ObserverSet,
        *,
        environ: Mapping[str, str] = os.environ,
        clock: Callable[[], float] = time.monotonic,
        wall_clock: Callable[[], float] = time.time,
        rng: Callable[[], float] = random.random,
    ) -> None:
        """Load the group's keys. Raise `ConfigError` when one cannot be loaded."""
        self.group = group
        self._client = client
        self._observers = observers
        self._keys = load_key_sources(group.upstreams, environ)
        self.breakers: dict[str, CircuitBreaker] = build_breakers(
            group.upstreams, group.breaker, clock=clock, on_transition=self._breaker_changed
        )
        self._clock = clock
        self._wall_clock = wall_clock
        self._rng = rng

    @asynccontextmanager
    async def exchange(
        self, build: RequestBuilder, trace: UpstreamTrace, *, request_id: str | None = None
    ) -> AsyncIterator[Exchange]:
        """Send the request until an upstream serves it, and yield that upstream's response.

        Raise `UpstreamFailed` when no upstream responded. `trace` collects the
        attempts, retries, failovers and breaker changes for the audit record.
        """
        token = _CURRENT_TRACE.set(trace)
        try:
            with self._plan(trace, request_id) as plan:
                target, response = await self._run(plan, build, trace)
                try:
                    yield Exchange(plan, target, response)
                finally:
                    response.close()
        finally:
            _CURRENT_TRACE.reset(token)

    def _plan(self, trace: UpstreamTrace, request_id: str | None) -> AttemptPlan:
        def on_event(event: PlanEvent) -> None:
            trace.plan_event(event)
            self._observers.plan_event(event)

        return AttemptPlan(
            self.group.upstreams,
            self.breakers,
            self.group.retry,
            clock=self._clock,
            wall_clock=self._wall_clock,
            rng=self._rng,
            on_event=on_event,
            request_id=request_id,
        )

    async def _run(
        self, plan: AttemptPlan, build: RequestBuilder, trace: UpstreamTrace
    ) -> tuple[UpstreamTarget, AttemptResponse]:
        last: tuple[UpstreamTarget, AttemptResponse] | None = None
        try:
            for attempt in plan:
                if attempt.delay_before > 0:
                    await asyncio.sleep(attempt.delay_before)
                outcome, response = await self._attempt(attempt.target, build)
                trace.attempt_finished(attempt.target.name, outcome)
                self._observers.attempt_finished(attempt.target.name, outcome)
                plan.record(outcome)
                if response is not None:
                    if last is not None:
                        last[1].close()
                    last = (attempt.target, response)
        except BaseException:
            if last is not None:
                last[1].close()
            raise
        if last is None:
            raise self._failure(plan)
        trace.served_by = last[0].name
        return last

    async def _attempt(
        self, target: UpstreamTarget, build: RequestBuilder
    ) -> tuple[Outcome, AttemptResponse | None]:
        """Send one attempt. Return its outcome, and its response if one arrived."""
        request = build(target)
        headers = outgoing_headers(request.headers, target, self._key(target))
        try:
            response = await self._client.open(
                request.method,
                target.url + request.path_qs,
                headers,
                request.body,
                self.group.timeouts,
            )
        except AttemptFailed as exc:
            return self._failed(target, exc), None

        outcome = Outcome(status=response.status, retry_after=response.headers.get("Retry-After"))
        if response.streams and not outcome.retryable:
            return outcome, response
        try:
            await response.read_body()
        except AttemptFailed as exc:
            response.close()
            return self._failed(target, exc), None
        except BaseException:
            response.close()
            raise
        return outcome, response

    def _key(self, target: UpstreamTarget) -> ApiKey | None:
        source = self._keys.get(target.name)
        return source.current() if source is not None else None

    def _failed(self, target: UpstreamTarget, exc: AttemptFailed) -> Outcome:
        logger.info(
            "upstream attempt failed",
            upstream=target.name,
            cause=exc.kind.value,
            error_type=exc.error_type,
        )
        return Outcome(error=exc.kind)

    def _failure(self, plan: AttemptPlan) -> UpstreamFailed:
        if plan.last_outcome is None:
            return UpstreamFailed(
                "every upstream of this route is skipped because its circuit breaker is open; "
                f"retry after {self.group.breaker.cool_down:g} s"
            )
        return UpstreamFailed(
            f"no upstream responded after {plan.attempt_count} attempts "
            f"(last failure: {plan.last_outcome.cause}); check the upstream URLs and network egress"
        )

    def _breaker_changed(self, change: BreakerTransition) -> None:
        trace = _CURRENT_TRACE.get()
        if trace is not None:
            trace.breaker_changed(change)
        self._observers.breaker_changed(change)


class UpstreamRegistry:
    """The shared HTTP client, and one `Forwarder` per distinct upstream group.

    Routes whose groups are equal share one forwarder and its breakers.
    `counters` counts all upstream traffic, and `observers` takes more observers.
    """

    def __init__(
        self,
        client: UpstreamClient,
        default: UpstreamGroup,
        *,
        environ: Mapping[str, str] = os.environ,
    ) -> None:
        """Build the forwarder of `default`, the group of routes without their own."""
        self.client = client
        self.counters = UpstreamCounters()
        self.observers = ObserverSet([self.counters])
        self._environ = environ
        self._forwarders: list[Forwarder] = []
        self.default = self.forwarder(default)

    def forwarder(self, group: UpstreamGroup | None) -> Forwarder:
        """Return the forwarder of `group`, built on first use; None selects the default group.

        Raise `ConfigError` when a key of a new group cannot be loaded.
        """
        if group is None:
            return self.default
        for forwarder in self._forwarders:
            if forwarder.group == group:
                return forwarder
        forwarder = Forwarder(group, self.client, self.observers, environ=self._environ)
        self._forwarders.append(forwarder)
        return forwarder

    async def start(self) -> None:
        await self.client.start()

    async def close(self) -> None:
        await self.client.close()
