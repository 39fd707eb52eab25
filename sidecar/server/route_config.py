"""The routes of the configuration file (`--config`): frozen pydantic models and the YAML loader.

    version: 1
    routes:
      - prefix: /anthropic          # requests under /anthropic/...
        strip_prefix: true          # are forwarded without /anthropic
        upstreams:
          - {name: anthropic, url: https://api.anthropic.com}
      - prefix: /v1/messages
        upstreams:
          - {name: anthropic, url: https://api.anthropic.com}
      - prefix: /                   # everything else
        upstreams:                  # the primary first, then fallbacks
          - {name: openai, url: https://api.openai.com}
          - {name: gateway, url: https://llm-gateway.internal/openai}
        retry: {max_attempts: 2}    # and timeouts, breaker: see UpstreamGroup
        endpoints:                  # optional; default: every built-in endpoint
          /v1/chat/completions: openai.chat
        passthrough: [/v1/models, /v1/models/*]
        policy: default             # optional: a policy name from --policy-dir

The route with the longest `prefix` that contains the request path wins. Its
`endpoints` map the forwarded path (after stripping) to a protocol adapter,
and a request with a body to a path that no endpoint matches is rejected.
`passthrough` lists the paths a GET, HEAD or OPTIONS request without a body
may reach unscanned. Endpoint and passthrough entries are `fnmatch`
patterns, in which `*` also matches `/`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal, Self

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from sidecar.errors import ConfigError
from sidecar.protocols.registry import ADAPTERS, DEFAULT_ENDPOINTS
from sidecar.upstream.settings import UpstreamGroup

DEFAULT_PASSTHROUGH = ("/v1/models", "/v1/models/*")


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class RouteSettings(UpstreamGroup):
    """One route: a path prefix, its endpoints, and the upstream group it forwards to."""

    prefix: str = "/"
    strip_prefix: bool = False
    endpoints: dict[str, str] = Field(default_factory=lambda: dict(DEFAULT_ENDPOINTS))
    """Forwarded path pattern → adapter name."""

    passthrough: tuple[str, ...] = DEFAULT_PASSTHROUGH
    policy: str | None = Field(default=None, min_length=1)
    """Name of the policy for this route; the policy store's default when unset."""

    @field_validator("prefix")
    @classmethod
    def _check_prefix(cls, prefix: str) -> str:
        if not prefix.startswith("/"):
            raise ValueError("must start with '/'")
        if any(char in prefix for char in "?#*[]"):
            raise ValueError("must be a plain path without '?', '#' or glob characters")
        return prefix.rstrip("/") or "/"

    @field_validator("endpoints")
    @classmethod
    def _check_endpoints(cls, endpoints: dict[str, str]) -> dict[str, str]:
        for pattern, adapter in endpoints.items():
            if not pattern.startswith("/"):
                raise ValueError(f"endpoint {pattern!r} must start with '/'")
            if adapter not in ADAPTERS:
                known = ", ".join(sorted(ADAPTERS))
                raise ValueError(f"adapter {adapter!r} of {pattern!r} is not one of: {known}")
        return endpoints

    @field_validator("passthrough")
    @classmethod
    def _check_passthrough(cls, patterns: tuple[str, ...]) -> tuple[str, ...]:
        for pattern in patterns:
            if not pattern.startswith("/"):
                raise ValueError(f"pattern {pattern!r} must start with '/'")
        return patterns


class RoutingConfig(_Frozen):
    """A parsed configuration file."""

    version: Literal[1]
    routes: tuple[RouteSettings, ...] = Field(min_length=1)

    @model_validator(mode="after")
    def _check_unique_prefixes(self) -> Self:
        prefixes = [route.prefix for route in self.routes]
        repeated = sorted({prefix for prefix in prefixes if prefixes.count(prefix) > 1})
        if repeated:
            raise ValueError(f"route prefixes must be unique, repeated: {', '.join(repeated)}")
        return self


def load_route_config(path: str | Path) -> RoutingConfig:
    """Read and validate a configuration file.

    Raise `ConfigError` naming the file, and for invalid content the field and value.
    """
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read the configuration file ({exc.strerror})") from exc
    try:
        document = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark is not None else ""
        raise ConfigError(f"{path}: invalid YAML{where}") from exc
    if not isinstance(document, dict):
        raise ConfigError(f"{path}: must be a YAML mapping with 'version' and 'routes'")
    try:
        return RoutingConfig.model_validate(document)
    except ValidationError as exc:
        problems = "; ".join(_describe(error) for error in exc.errors())
        raise ConfigError(f"{path}: {problems}") from exc


def _describe(error: Any) -> str:
    location = ".".join(
        f"[{part}]" if isinstance(part, int) else str(part) for part in error["loc"]
    ).replace(".[", "[")
    message = str(error["msg"]).removeprefix("Value error, ")
    value = error.get("input")
    # Header values can be keys and a URL's user info can be a password, so neither is shown.
    secret = "extra_headers" in error["loc"] or (isinstance(value, str) and "@" in value)
    if secret or not isinstance(value, str | int | float | bool):
        return f"{location or 'file'}: {message}"
    return f"{location or 'file'}: {message} (value: {value!r})"
