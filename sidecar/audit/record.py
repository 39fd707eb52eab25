"""The audit record of one request, filled in as the request goes through the proxy."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

SCHEMA_VERSION = 1


def utc_timestamp() -> str:
    """Return the current time in RFC 3339 UTC with milliseconds."""
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


@dataclass
class AuditRecord:
    """What was found and done for one request; it never holds a request value."""

    request_id: str
    route: str
    dialect: str | None = None
    upstream: str | None = None
    model: str | None = None
    stream: bool = False
    policy_name: str | None = None
    policy_hash: str | None = None
    mode: str | None = None
    entities: dict[str, dict[str, Any]] = field(default_factory=dict)
    blocked: bool = False
    block_reason: str | None = None
    status: int | None = None
    error: str | None = None
    retries: int = 0
    failovers: int = 0
    upstream_name: str | None = None
    # One {"upstream", "result"} entry per upstream attempt, such as "status_503".
    attempts: list[dict[str, str]] = field(default_factory=list)
    # Circuit breaker changes that this request's attempts caused.
    breaker_changes: list[dict[str, str]] = field(default_factory=list)
    stream_error: str | None = None
    timings_ms: dict[str, float] = field(default_factory=dict)
    usage: dict[str, int] | None = None
    started: float = field(default_factory=time.perf_counter)
    timestamp: str = field(default_factory=utc_timestamp)

    def set_entities(self, counts: dict[str, dict[str, int]]) -> None:
        """Record per-type counts from a plan's `entity_counts` (type -> action -> count)."""
        self.entities = {}
        for entity_type, actions in sorted(counts.items()):
            for action, count in actions.items():
                self.entities[entity_type] = {"count": count, "action": str(action)}

    def time(self, name: str, started: float) -> None:
        """Record the milliseconds since `started` (a `time.perf_counter()` value) as `name`."""
        self.timings_ms[name] = round((time.perf_counter() - started) * 1000, 3)

    def to_dict(self) -> dict[str, Any]:
        self.time("total", self.started)
        return {
            "schema_version": SCHEMA_VERSION,
            "timestamp": self.timestamp,
            "request_id": self.request_id,
            "route": self.route,
            "dialect": self.dialect,
            "upstream": self.upstream,
            "model": self.model,
            "stream": self.stream,
            "policy": {"name": self.policy_name, "hash": self.policy_hash},
            "mode": self.mode,
            "entities": self.entities,
            "blocked": self.blocked,
            "block_reason": self.block_reason,
            "status": self.status,
            "error": self.error,
            "retries": self.retries,
            "failovers": self.failovers,
            "upstream_name": self.upstream_name,
            "attempts": list(self.attempts),
            "breaker_changes": list(self.breaker_changes),
            "stream_error": self.stream_error,
            "timings_ms": self.timings_ms,
            "usage": self.usage,
        }
