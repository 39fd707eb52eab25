"""The audit record of one request, filled in as the request goes through the proxy.

`docs/audit.md` defines the schema (version 1). The record contains entity types, counts,
actions, policy, timings and token usage, and never a value from the request. Detected
values appear only as keyed fingerprints, and the client's API key only as a short keyed
fingerprint.
"""

from __future__ import annotations

import re
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

SCHEMA_VERSION = 1
RECORD_TYPE = "request"

# Model identifiers such as gpt-4o-mini, claude-3-5-sonnet@20240620 or
# accounts/fireworks/models/llama-v3p1-8b. Anything else is not recorded.
_MODEL_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:/@-]{0,127}")
_LETTER = re.compile(r"[A-Za-z]")
_EMAIL_SHAPE = re.compile(r"[^@]+@[^@.]+\.[^@]+")
# From least to most strict. An entity type that received several actions in
# one request reports the strictest as its `action`.
_STRICTNESS = ("allow", "placeholder", "surrogate", "hash", "mask", "redact", "block")


def utc_timestamp() -> str:
    """Return the current time in RFC 3339 UTC with milliseconds and a `Z`."""
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def model_identifier(model: object) -> str | None:
    """Return `model` if it has the shape of a model identifier, else None.

    The model field is free text from the client, so the record keeps it only when it
    consists of letters, digits and `._:/@-`, at most 128 characters. It must also contain
    a letter and not have the shape of an email address. That rejects spaces, phone and
    card numbers and email addresses.

    NOTE: a single word, such as a surname, has the shape of a model name and is kept.
    """
    if not isinstance(model, str) or not _MODEL_NAME.fullmatch(model):
        return None
    if not _LETTER.search(model) or _EMAIL_SHAPE.fullmatch(model):
        return None
    return model


@dataclass(frozen=True)
class ClientIdentity:
    """The sender of a request: service and pod names from the settings, and a key fingerprint."""

    service: str | None = None
    pod: str | None = None
    key_fingerprint: str | None = None

    def to_dict(self) -> dict[str, str | None]:
        return {"service": self.service, "pod": self.pod, "key_fingerprint": self.key_fingerprint}


@dataclass
class AuditRecord:
    """The findings and actions of one request. It never contains a value from the request."""

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
    client: ClientIdentity = field(default_factory=ClientIdentity)
    usage: dict[str, int] | None = None
    cost_usd: float | None = None
    # None when fingerprints are off; the field is then left out of the record.
    value_fingerprints: dict[str, list[str]] | None = None
    started: float = field(default_factory=time.perf_counter)
    timestamp: str = field(default_factory=utc_timestamp)

    def __setattr__(self, name: str, value: Any) -> None:
        # Every assignment of `model` goes through the identifier check, wherever it comes from.
        if name == "model":
            value = model_identifier(value)
        super().__setattr__(name, value)

    def set_entities(self, counts: dict[str, dict[str, int]]) -> None:
        """Record per-type counts from a plan's `entity_counts` (type -> action -> count).

        `count` is the total of the type. When the type received more than one action,
        `action` is the strictest and `actions` gives the count per action.
        """
        self.entities = {}
        for entity_type, actions in sorted(counts.items()):
            by_action = {str(action): count for action, count in actions.items() if count}
            if not by_action:
                continue
            entry: dict[str, Any] = {
                "count": sum(by_action.values()),
                "action": max(by_action, key=_strictness),
            }
            if len(by_action) > 1:
                entry["actions"] = dict(sorted(by_action.items()))
            self.entities[entity_type] = entry

    def time(self, name: str, started: float) -> None:
        """Record the milliseconds since `started` (a `time.perf_counter()` value) as `name`."""
        self.timings_ms[name] = round((time.perf_counter() - started) * 1000, 3)

    def to_dict(self) -> dict[str, Any]:
        """Return the record in its JSON form, with `total` timed up to this call."""
        self.time("total", self.started)
        record: dict[str, Any] = {
            "schema_version": SCHEMA_VERSION,
            "record_type": RECORD_TYPE,
            "timestamp": self.timestamp,
            "request_id": self.request_id,
            "route": self.route,
            "dialect": self.dialect,
            "upstream": self.upstream,
            "model": self.model,
            "stream": self.stream,
            "policy": {"name": self.policy_name, "hash": self.policy_hash},
            "mode": None if self.mode is None else str(self.mode),
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
            "timings_ms": dict(self.timings_ms),
            "client": self.client.to_dict(),
            "usage": self.usage,
            "cost_usd": self.cost_usd,
        }
        if self.value_fingerprints is not None:
            record["value_fingerprints"] = self.value_fingerprints
        return record


def _strictness(action: str) -> int:
    return _STRICTNESS.index(action) if action in _STRICTNESS else len(_STRICTNESS)
