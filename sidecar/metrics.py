"""Prometheus metrics, derived from each request's audit record.

Label values come from fixed vocabularies (route patterns, dialects, status
codes, entity types, actions) or, for models, from names that match a strict
pattern, capped in number. No label ever carries text from a request body.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

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
        self.retries = Counter(
            "pii_sidecar_upstream_retries",
            "Upstream attempts that were retried.",
            ["route"],
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
        self.policy_reloads = Counter(
            "pii_sidecar_policy_reloads",
            "Policy reloads by result (ok or failed).",
            ["result"],
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
        if record.get("retries"):
            self.retries.labels(route).inc(record["retries"])
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

    def render(self) -> bytes:
        return generate_latest(self.registry)
