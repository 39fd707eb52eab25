"""`Settings`: every setting of `pii-sidecar serve`, with its environment variable and default."""

from __future__ import annotations

import os
from dataclasses import dataclass, fields
from pathlib import Path

from sidecar.detect.engine import DEFAULT_MODEL
from sidecar.errors import ConfigError
from sidecar.policy.load import BUILTIN_POLICY_DIR

ENV_PREFIX = "PII_SIDECAR_"


def default_policy_path() -> str:
    """Return `policies/default.yaml` if it exists here, else the copy inside the package."""
    local = Path("policies/default.yaml")
    if local.is_file():
        return str(local)
    return str(BUILTIN_POLICY_DIR / "default.yaml")


@dataclass(frozen=True)
class Settings:
    """Settings of one sidecar process. Durations are in seconds."""

    host: str = "127.0.0.1"
    port: int = 8787
    upstream: str = "https://api.openai.com"
    policy: str = ""
    policy_dir: str | None = None
    client_policies: str = ""
    policy_reload_interval: float = 2.0
    model: str = DEFAULT_MODEL
    config: str | None = None
    log_format: str = "json"
    log_level: str = "info"
    audit_file: str | None = None
    audit_stdout: bool | None = None
    audit_key_file: str | None = None
    audit_key_env: str | None = None
    audit_checkpoint_every: int = 1000
    audit_rotate_bytes: int = 0
    audit_fsync: bool = False
    fingerprint_key_file: str | None = None
    fingerprint_key_env: str | None = None
    pricing_file: str | None = None
    client_service: str | None = None
    client_pod: str | None = None
    detect_timeout: float = 10.0
    detect_cache_entries: int = 100_000
    detect_cache_bytes: int = 32 * 1024 * 1024
    upstream_timeout: float = 600.0
    ca_bundle: str | None = None
    max_body_bytes: int = 32 * 1024 * 1024
    workers: int = 1
    grace_period: float = 20.0
    metrics_host: str = "127.0.0.1"
    metrics_port: int = 0

    def __post_init__(self) -> None:
        # With a policy directory, an empty `policy` selects the policy named "default".
        if not self.policy and self.policy_dir is None:
            object.__setattr__(self, "policy", default_policy_path())
        self._check_sources()
        self._check_listeners()
        self._check_limits()
        self._check_audit()

    def _check_sources(self) -> None:
        if self.policy_reload_interval < 0:
            raise ConfigError(
                f"policy reload interval {self.policy_reload_interval} must be 0 (off) or positive"
            )
        if not self.upstream.startswith(("http://", "https://")):
            raise ConfigError(f"upstream {self.upstream!r} must be an http:// or https:// URL")
        if self.log_format not in ("json", "console"):
            raise ConfigError(f"log format {self.log_format!r} must be 'json' or 'console'")

    def _check_listeners(self) -> None:
        if not 0 < self.port < 65536:
            raise ConfigError(f"port {self.port} must be between 1 and 65535")
        if not 0 <= self.metrics_port < 65536 or self.metrics_port == self.port:
            raise ConfigError(
                f"metrics port {self.metrics_port} must be 0 (metrics on the proxy port only) or "
                f"a port between 1 and 65535 other than the proxy port {self.port}"
            )
        if self.workers < 1:
            raise ConfigError(f"workers {self.workers} must be at least 1")

    def _check_limits(self) -> None:
        if self.upstream_timeout <= 0:
            raise ConfigError(f"upstream timeout {self.upstream_timeout} must be positive")
        if self.detect_timeout <= 0:
            raise ConfigError(f"detect timeout {self.detect_timeout} must be positive")
        if self.detect_cache_entries < 0 or self.detect_cache_bytes < 0:
            raise ConfigError(
                f"detect cache limits ({self.detect_cache_entries} entries, "
                f"{self.detect_cache_bytes} bytes) must be 0 (cache off) or positive"
            )

    @property
    def audit_to_stdout(self) -> bool:
        """Whether audit records go to stdout: as set, else only when there is no audit file."""
        return self.audit_file is None if self.audit_stdout is None else self.audit_stdout

    def _check_audit(self) -> None:
        if not self.audit_to_stdout and self.audit_file is None:
            raise ConfigError(
                "audit stdout is off and no audit file is set, so audit records have nowhere "
                "to go; set --audit-file or turn --audit-stdout on"
            )
        if self.audit_checkpoint_every < 0:
            raise ConfigError(
                f"audit checkpoint interval {self.audit_checkpoint_every} must be 0 (off) "
                "or positive"
            )
        if self.audit_rotate_bytes < 0:
            raise ConfigError(
                f"audit rotation size {self.audit_rotate_bytes} must be 0 (off) or positive"
            )


def env_name(field_name: str) -> str:
    return ENV_PREFIX + field_name.upper()


def settings_from_env(environ: dict[str, str] | None = None) -> dict[str, str]:
    """Return the settings given in `PII_SIDECAR_*` environment variables, as strings."""
    environ = dict(os.environ) if environ is None else environ
    found = {}
    for field in fields(Settings):
        value = environ.get(env_name(field.name))
        if value is not None and value != "":
            found[field.name] = value
    return found
