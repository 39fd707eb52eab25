"""Frozen pydantic models of the upstream part of the configuration file.

One route forwards to an `UpstreamGroup`: a primary `UpstreamTarget` and its
ordered fallbacks, with the retry, timeout and circuit breaker settings that
apply to each of them. Times are in seconds.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Literal, Self
from urllib.parse import urlsplit

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    ValidationInfo,
    field_validator,
    model_validator,
)

AuthHeader = Literal["authorization", "x-api-key", "api-key"]
"""The header form of an injected key: `Authorization: Bearer KEY`, `x-api-key: KEY`
(Anthropic) or `api-key: KEY` (Azure OpenAI)."""

ModelRewrite = dict[str, str] | str | None
"""A mapping from requested to sent model names, or one model that replaces every model."""

CREDENTIAL_HEADERS = frozenset({"authorization", "x-api-key", "api-key"})
"""Request headers that carry an API key, in lower case."""

_RESERVED_HEADERS = frozenset(
    {"host", "content-length", "transfer-encoding", "connection", "content-encoding"}
)
_NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.-]*$"
_ENV_VAR_PATTERN = r"^[A-Za-z_][A-Za-z0-9_]*$"
_HEADER_NAME = re.compile(r"^[!#$%&'*+.^_`|~0-9A-Za-z-]+$")
_FORBIDDEN_IN_HEADER_VALUE = re.compile(r"[\x00-\x08\x0a-\x1f\x7f]")


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class UpstreamTarget(_Frozen):
    """One provider or gateway that a route can forward to.

    Without `api_key_env` and `api_key_file` the client's own `Authorization`
    or `x-api-key` header is forwarded unchanged, also to a fallback. With one
    of them the sidecar removes the client's key and sends its own in the
    `auth_header` form.

    `str()` of a validation error leaves out the input values, because
    `extra_headers` can contain a gateway's key. `ValidationError.errors()`
    still contains them under "input".
    """

    model_config = ConfigDict(frozen=True, extra="forbid", hide_input_in_errors=True)

    name: str = Field(min_length=1, max_length=64, pattern=_NAME_PATTERN)
    url: str
    api_key_env: str | None = Field(default=None, pattern=_ENV_VAR_PATTERN)
    api_key_file: Path | None = None
    auth_header: AuthHeader = "authorization"
    model_rewrite: ModelRewrite = None
    # SecretStr because gateways take their own keys in custom headers.
    extra_headers: dict[str, SecretStr] = Field(default_factory=dict)

    @field_validator("url")
    @classmethod
    def _check_url(cls, url: str) -> str:
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError("must be an absolute http:// or https:// URL with a host")
        if parts.username is not None or parts.password is not None:
            raise ValueError("must not contain user info. Set api_key_env or api_key_file instead")
        if parts.query or parts.fragment:
            raise ValueError("must not contain a query string or fragment")
        parts.port  # noqa: B018 because reading the port raises ValueError when it is invalid
        return url.rstrip("/")

    @field_validator("api_key_file")
    @classmethod
    def _check_one_key_source(cls, path: Path | None, info: ValidationInfo) -> Path | None:
        if path is not None and info.data.get("api_key_env") is not None:
            raise ValueError("set at most one of api_key_env and api_key_file")
        return path

    @field_validator("auth_header")
    @classmethod
    def _check_auth_header_has_key(cls, header: AuthHeader, info: ValidationInfo) -> AuthHeader:
        # Runs only when the field is set, because pydantic skips validators of defaults.
        if info.data.get("api_key_env") is None and info.data.get("api_key_file") is None:
            raise ValueError("applies only together with api_key_env or api_key_file")
        return header

    @field_validator("model_rewrite")
    @classmethod
    def _check_model_names(cls, rewrite: ModelRewrite) -> ModelRewrite:
        if isinstance(rewrite, str):
            names = [rewrite]
        elif rewrite is None:
            names = []
        else:
            names = [*rewrite.keys(), *rewrite.values()]
        if "" in names:
            raise ValueError("model names must not be empty")
        return rewrite

    @field_validator("extra_headers")
    @classmethod
    def _check_extra_headers(cls, headers: dict[str, SecretStr]) -> dict[str, SecretStr]:
        for name, value in headers.items():
            _check_extra_header(name, value.get_secret_value())
        return headers

    @property
    def injects_key(self) -> bool:
        """Whether the sidecar replaces the client's key with its own."""
        return self.api_key_env is not None or self.api_key_file is not None

    def rewrite_model(self, model: str) -> str:
        """Return the model name to send to this upstream for a request naming `model`.

        A single model in `model_rewrite` replaces every model. A mapping
        replaces the models it lists and leaves the others unchanged.
        """
        if isinstance(self.model_rewrite, str):
            return self.model_rewrite
        if self.model_rewrite is None:
            return model
        return self.model_rewrite.get(model, model)


def _check_extra_header(name: str, value: str) -> None:
    lowered = name.lower()
    if not _HEADER_NAME.match(name):
        raise ValueError(f"header name {name!r} is not a valid HTTP token")
    if lowered in CREDENTIAL_HEADERS:
        raise ValueError(f"header {name!r} carries a key. Set api_key_env or api_key_file instead")
    if lowered in _RESERVED_HEADERS:
        raise ValueError(f"header {name!r} is set by the HTTP client and cannot be overridden")
    if _FORBIDDEN_IN_HEADER_VALUE.search(value):
        raise ValueError(f"the value of header {name!r} contains a control character")


class RetrySettings(_Frozen):
    """Retries of one upstream before the request fails over to the next.

    An attempt is retried only while no response byte has reached the client.
    """

    max_attempts: int = Field(default=3, ge=1, le=20)
    """Maximum attempts on one upstream, the first one included."""

    base_delay: float = Field(default=0.5, ge=0.0)
    """Backoff cap after the first failed attempt, doubled after each further failure."""

    max_delay: float = Field(default=8.0, ge=0.0)
    """Maximum backoff delay."""

    max_retry_after: float = Field(default=30.0, ge=0.0)
    """Maximum `Retry-After` that is waited for. A longer one fails over to the next upstream."""

    deadline: float = Field(default=60.0, gt=0.0)
    """Maximum time on one upstream, counted from the start of its first attempt.

    No retry starts, and no delay is taken that would end, after it. An attempt
    in progress is limited by `TimeoutSettings`, not by the deadline.
    """

    @model_validator(mode="after")
    def _check_delays(self) -> Self:
        if self.max_delay < self.base_delay:
            message = f"max_delay ({self.max_delay}) must not be smaller than base_delay"
            raise ValueError(f"{message} ({self.base_delay})")
        return self


class TimeoutSettings(_Frozen):
    """Timeouts of one attempt."""

    connect: float = Field(default=10.0, gt=0.0)
    """Maximum time to open the connection, TLS handshake included."""

    first_byte: float = Field(default=300.0, gt=0.0)
    """Maximum time from sending the request to the first byte of the response.

    For a request without streaming this usually covers the whole generation,
    because providers send the response head when the generation ends.
    """

    idle: float = Field(default=60.0, gt=0.0)
    """Maximum time between two chunks of a response body."""

    total: float = Field(default=600.0, gt=0.0)
    """Maximum time of one attempt, from connecting to the last byte."""

    @model_validator(mode="after")
    def _check_total(self) -> Self:
        for field in ("connect", "first_byte", "idle"):
            value = getattr(self, field)
            if value > self.total:
                raise ValueError(f"{field} ({value}) must not exceed total ({self.total})")
        return self


class BreakerSettings(_Frozen):
    """The circuit breaker of each upstream."""

    failure_threshold: int = Field(default=5, ge=1)
    """Consecutive failed attempts that open the breaker."""

    cool_down: float = Field(default=30.0, gt=0.0)
    """Time an open breaker skips its upstream before it lets one probe through."""

    probe_timeout: float = Field(default=300.0, gt=0.0)
    """Time after which a probe without a recorded result no longer blocks the next probe."""


Upstreams = tuple[UpstreamTarget, ...]


def check_unique_names(upstreams: Upstreams) -> Upstreams:
    """Return `upstreams`; raise `ValueError` when two of them have the same name."""
    names = [target.name for target in upstreams]
    duplicates = sorted({name for name in names if names.count(name) > 1})
    if duplicates:
        raise ValueError(f"upstream names must be unique, repeated: {', '.join(duplicates)}")
    return upstreams


class UpstreamGroup(_Frozen):
    """The upstreams of one route: the primary first, then the fallbacks in order."""

    upstreams: Upstreams = Field(min_length=1)
    retry: RetrySettings = RetrySettings()
    timeouts: TimeoutSettings = TimeoutSettings()
    breaker: BreakerSettings = BreakerSettings()

    @field_validator("upstreams")
    @classmethod
    def _check_unique_names(cls, upstreams: Upstreams) -> Upstreams:
        return check_unique_names(upstreams)

    @property
    def primary(self) -> UpstreamTarget:
        return self.upstreams[0]

    @property
    def fallbacks(self) -> tuple[UpstreamTarget, ...]:
        return self.upstreams[1:]


def default_timeouts(total: float) -> TimeoutSettings:
    """Return the default timeouts with `total` seconds per attempt, the others cut to it."""
    defaults = TimeoutSettings()
    return TimeoutSettings(
        connect=min(defaults.connect, total),
        first_byte=min(defaults.first_byte, total),
        idle=min(defaults.idle, total),
        total=total,
    )


def single_target_group(url: str, total_timeout: float = 600.0) -> UpstreamGroup:
    """Build the group of a sidecar started without a configuration file.

    The group has one target named "primary" that forwards the client's key,
    the default retry and breaker settings, and `default_timeouts(total_timeout)`.
    """
    target = UpstreamTarget(name="primary", url=url)
    return UpstreamGroup(upstreams=(target,), timeouts=default_timeouts(total_timeout))
