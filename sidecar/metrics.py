"""Prometheus metrics: from each request's audit record, upstream events and policy reloads.

Label values come from fixed vocabularies (route names, dialects, status
codes, entity types, actions, error causes), from upstream names of the
configuration file, or, for models, from names that match a strict pattern,
capped in number. No label ever carries text from a request body.

`Metrics` is also an upstream observer (`sidecar.upstream.events`): the
forwarder reports each attempt, retry, failover and breaker change to it.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

from sidecar.upstream.breaker import BreakerState, BreakerTransition
from sidecar.upstream.plan import (
    FailedOver,
    PlanEvent,
    RetryScheduled,
    StreamFailed,
    UpstreamAbandoned,
    UpstreamSkipped,
)
from sidecar.upstream.retry import Outcome

CONTENT_TYPE = CONTENT_TYPE_LATEST
_MODEL_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:/@-]{0,63}$")
MAX_MODEL_LABELS = 50
_LATENCY_BUCKETS = (
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1,
    2.5,
    5,
    10,
    30,
    60,
    120,
)


class Metrics:
    """The sidecar's metrics in a registry of their own, so several apps can share a process."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self._models: set[str] = set()
        self._add_request_metrics()
        self._add_upstream_metrics()
        self._add_process_metrics()

    def _add_request_metrics(self) -> None:
        self.requests = Counter(
            "pii_sidecar_requests",
            "Requests by route, dialect and response status.",
            ["route", "dialect", "status"],
            registry=self.registry,
        )
        self.entities = Counter(
            "pii_sidecar_entities",
            "Detected entities by type and the action taken.",
            ["entity_type", "action"],
            registry=self.registry,
        )
        self.blocked = Counter(
            "pii_sidecar_blocked_requests",
            "Requests rejected by a block action.",
            ["route"],
            registry=self.registry,
        )
        self.errors = Counter(
            "pii_sidecar_errors",
            "Rejected or failed requests by error code.",
            ["route", "code"],
            registry=self.registry,
        )
        self.latency = Histogram(
            "pii_sidecar_latency_seconds",
            "Time per request phase: detection, upstream, first_byte, total.",
            ["route", "phase"],
            buckets=_LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.tokens = Counter(
            "pii_sidecar_tokens",
            "Tokens reported by the upstream, by model and kind.",
            ["model", "kind"],
            registry=self.registry,
        )
        self.cost = Counter(
            "pii_sidecar_cost_usd",
            "Estimated cost in US dollars from the pricing table.",
            ["model"],
            registry=self.registry,
        )

    def _add_process_metrics(self) -> None:
        self.policy_reloads = Counter(
            "pii_sidecar_policy_reloads",
            "Policy reloads by result (ok or failed).",
            ["result"],
            registry=self.registry,
        )
        self.audit_write_failures = Counter(
            "pii_sidecar_audit_write_failures",
            "Audit records that the sinks failed to write, and failed closes of a sink.",
            registry=self.registry,
        )
        self.audit_pending = Gauge(
            "pii_sidecar_audit_pending_records",
            "Audit records queued for the writer thread.",
            registry=self.registry,
        )
        # Both series exist from the start, so an alert on failures sees a 0 before the first.
        for result in ("ok", "failed"):
            self.policy_reloads.labels(result)

    def _add_upstream_metrics(self) -> None:
        self.upstream_attempts = Counter(
            "pii_sidecar_upstream_attempts",
            "Upstream attempts by upstream and result: status_<code> or the error kind.",
            ["upstream", "result"],
            registry=self.registry,
        )
        self.upstream_errors = Counter(
            "pii_sidecar_upstream_errors",
            "Upstream attempts that failed with a transport error or a retryable status.",
            ["upstream", "cause"],
            registry=self.registry,
        )
        self.upstream_retries = Counter(
            "pii_sidecar_upstream_retries",
            "Retries scheduled on the same upstream, by the cause of the failed attempt.",
            ["upstream", "cause"],
            registry=self.registry,
        )
        self.upstream_abandoned = Counter(
            "pii_sidecar_upstream_abandoned",
            "Upstreams given up for a request, by reason.",
            ["upstream", "reason"],
            registry=self.registry,
        )
        self.upstream_skipped = Counter(
            "pii_sidecar_upstream_skipped",
            "Upstreams skipped for a request because their circuit breaker was open.",
            ["upstream"],
            registry=self.registry,
        )
        self.upstream_failovers = Counter(
            "pii_sidecar_upstream_failovers",
            "Failovers from one upstream to the next.",
            ["from_upstream", "to_upstream"],
            registry=self.registry,
        )
        self.upstream_stream_failures = Counter(
            "pii_sidecar_upstream_stream_failures",
            "Responses that failed after they began to stream to the client.",
            ["upstream", "cause"],
            registry=self.registry,
        )
        self.breaker_state = Gauge(
            "pii_sidecar_upstream_breaker_state",
            "1 for the current state of each upstream's circuit breaker, 0 for the others.",
            ["upstream", "state"],
            registry=self.registry,
        )

    def observe(self, record: Mapping[str, Any]) -> None:
        """Count one finished request from its audit record."""
        route = str(record.get("route") or "unmatched")
        status = str(record.get("status") or 0)
        self.requests.labels(route, str(record.get("dialect") or "none"), status).inc()
        for entity_type, entry in (record.get("entities") or {}).items():
            self.entities.labels(entity_type, entry["action"]).inc(entry["count"])
        if record.get("blocked"):
            self.blocked.labels(route).inc()
        if record.get("error"):
            self.errors.labels(route, str(record["error"])).inc()
        for phase, milliseconds in (record.get("timings_ms") or {}).items():
            self.latency.labels(route, phase).observe(milliseconds / 1000)
        self._observe_usage(record)

    def _observe_usage(self, record: Mapping[str, Any]) -> None:
        usage = record.get("usage") or {}
        cost = record.get("cost_usd")
        if not usage and cost is None:
            return
        model = self._model_label(record.get("model"))
        for kind, count in usage.items():
            if isinstance(count, int):
                self.tokens.labels(model, kind.removesuffix("_tokens")).inc(count)
        if isinstance(cost, int | float):
            self.cost.labels(model).inc(cost)

    def _model_label(self, model: object) -> str:
        if not isinstance(model, str) or not _MODEL_NAME.match(model):
            return "other"
        if model not in self._models and len(self._models) >= MAX_MODEL_LABELS:
            return "other"
        self._models.add(model)
        return model

    # Upstream observer: called by the forwarder on the event loop.

    def attempt_finished(self, upstream: str, outcome: Outcome) -> None:
        """Count one finished upstream attempt, and its failure if it failed."""
        self.upstream_attempts.labels(upstream, outcome.cause).inc()
        if outcome.retryable:
            self.upstream_errors.labels(upstream, outcome.cause).inc()

    def plan_event(self, event: PlanEvent) -> None:
        """Count a retry, abandoned or skipped upstream, failover or stream failure."""
        match event:
            case RetryScheduled():
                self.upstream_retries.labels(event.upstream, event.cause).inc()
            case UpstreamAbandoned():
                self.upstream_abandoned.labels(event.upstream, event.reason.value).inc()
            case UpstreamSkipped():
                self.upstream_skipped.labels(event.upstream).inc()
            case FailedOver():
                self.upstream_failovers.labels(event.from_upstream, event.to_upstream).inc()
            case StreamFailed():
                self.upstream_stream_failures.labels(event.upstream, event.cause).inc()

    def breaker_changed(self, change: BreakerTransition) -> None:
        """Set the breaker state gauge of the upstream to its new state."""
        for state in BreakerState:
            self.breaker_state.labels(change.upstream, state.value).set(
                1 if state is change.new else 0
            )

    # Hooks of the policy store and the audit writer.

    def policy_reloaded(self, ok: bool) -> None:
        """Count a policy reload: `ok` is False when the new files were rejected."""
        self.policy_reloads.labels("ok" if ok else "failed").inc()

    def audit_write_failed(self) -> None:
        """Count an audit record the sinks failed to write. Safe to call from any thread."""
        self.audit_write_failures.inc()

    def track_audit_backlog(self, pending: Callable[[], int]) -> None:
        """Report `pending()`, the queued audit records, at each scrape."""
        self.audit_pending.set_function(pending)

    def render(self) -> bytes:
        return generate_latest(self.registry)
