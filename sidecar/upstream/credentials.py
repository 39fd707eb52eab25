"""API keys that the sidecar injects, and the credential headers of outgoing requests.

A key comes from an environment variable, read once at startup, or from a
file, re-read whenever the file changes. Kubernetes updates a mounted Secret by
swapping a symlink to a new directory, which changes the inode that `os.stat`
reports for the key's path, so the next request reads the new key. `ApiKey`
never shows its value in `repr()` or `str()`, and no message or log line of this
module contains a key.
"""

from __future__ import annotations

import hmac
import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import structlog

from sidecar.errors import ConfigError
from sidecar.upstream.settings import CREDENTIAL_HEADERS, AuthHeader, UpstreamTarget

logger = structlog.get_logger("sidecar.upstream")


class ApiKey:
    """An API key whose value is shown only by `reveal()`."""

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        self._value = value

    def reveal(self) -> str:
        return self._value

    def __repr__(self) -> str:
        return "ApiKey('**********')"

    __str__ = __repr__

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, ApiKey):
            return NotImplemented
        return hmac.compare_digest(self._value.encode(), other._value.encode())

    def __hash__(self) -> int:
        return hash(self._value)


def parse_key(text: str, source: str) -> ApiKey:
    """Strip surrounding whitespace from `text` and check that it can go into an HTTP header.

    Raise `ConfigError` naming `source`, an environment variable or a path, but not the key.
    """
    value = text.strip()
    if not value:
        raise ConfigError(f"{source}: the API key is empty")
    if not all("\x21" <= char <= "\x7e" for char in value):
        raise ConfigError(
            f"{source}: the API key contains a space, a control character or non-ASCII text, "
            "which an HTTP header cannot carry"
        )
    return ApiKey(value)


class KeySource(Protocol):
    """The origin of an injected key. `current()` returns the key to send now."""

    description: str

    def current(self) -> ApiKey: ...


class EnvKeySource:
    """A key read once from an environment variable."""

    def __init__(self, variable: str, environ: Mapping[str, str] = os.environ) -> None:
        """Read the key. Raise `ConfigError` when the variable is missing or invalid."""
        self.description = f"environment variable {variable}"
        if variable not in environ:
            raise ConfigError(
                f"{self.description} is not set. Set it to the API key of the upstream."
            )
        self._key = parse_key(environ[variable], self.description)

    def current(self) -> ApiKey:
        return self._key


@dataclass(frozen=True)
class _FileVersion:
    device: int
    inode: int
    mtime_ns: int
    size: int

    @classmethod
    def of(cls, status: os.stat_result) -> _FileVersion:
        return cls(status.st_dev, status.st_ino, status.st_mtime_ns, status.st_size)


class FileKeySource:
    """A key read from a file, and read again when the file's inode, mtime or size changes.

    `current()` costs one `stat` call when nothing changed. When the changed file
    cannot be read or contains no valid key, it keeps returning the previous key,
    logs a warning once per failure and tries again on the next call.
    """

    def __init__(self, path: Path) -> None:
        """Read the key. Raise `ConfigError` when the file is missing, unreadable or invalid."""
        self.path = path
        self.description = f"API key file {path}"
        self._key, self._version = self._read()
        self._failure: str | None = None

    def current(self) -> ApiKey:
        try:
            version = _FileVersion.of(os.stat(self.path))
        except OSError as exc:
            self._report_failure(f"cannot read the file: {exc.strerror}")
            return self._key
        if version == self._version:
            self._failure = None
        else:
            self._reload()
        return self._key

    def _reload(self) -> None:
        try:
            self._key, self._version = self._read()
        except ConfigError as exc:
            self._report_failure(str(exc))
            return
        self._failure = None
        logger.info("API key file reloaded", path=str(self.path))

    def _read(self) -> tuple[ApiKey, _FileVersion]:
        # The version comes from the open file, so it matches the bytes read even
        # when the file is replaced between the stat in current() and this read.
        try:
            with self.path.open("rb") as file:
                version = _FileVersion.of(os.fstat(file.fileno()))
                data = file.read()
        except OSError as exc:
            raise ConfigError(f"{self.description}: cannot read the file: {exc.strerror}") from exc
        try:
            text = data.decode("utf-8")
        except UnicodeDecodeError:
            # `from None` because the decode error quotes a byte of the key.
            raise ConfigError(f"{self.description}: the file is not UTF-8 text") from None
        return parse_key(text, self.description), version

    def _report_failure(self, failure: str) -> None:
        if failure == self._failure:
            return
        self._failure = failure
        logger.warning(
            "API key file changed but cannot be used; sending the previous key",
            path=str(self.path),
            error=failure,
        )


def key_source_for(
    target: UpstreamTarget, environ: Mapping[str, str] = os.environ
) -> KeySource | None:
    """Load the key source of `target`, or return None when it forwards the client's key."""
    if target.api_key_env is not None:
        return EnvKeySource(target.api_key_env, environ)
    if target.api_key_file is not None:
        return FileKeySource(target.api_key_file)
    return None


def load_key_sources(
    targets: Iterable[UpstreamTarget], environ: Mapping[str, str] = os.environ
) -> dict[str, KeySource]:
    """Load the key source of every target that injects a key, keyed by target name.

    Raise one `ConfigError` that lists every key that cannot be loaded, so that
    the sidecar does not start with a missing key.
    """
    sources: dict[str, KeySource] = {}
    problems: list[str] = []
    for target in targets:
        try:
            source = key_source_for(target, environ)
        except ConfigError as exc:
            problems.append(f"upstream {target.name}: {exc}")
            continue
        if source is not None:
            sources[target.name] = source
    if problems:
        raise ConfigError("\n".join(problems))
    return sources


def outgoing_headers(
    headers: Iterable[tuple[str, str]], target: UpstreamTarget, key: ApiKey | None
) -> list[tuple[str, str]]:
    """Build the request headers for `target` from the client's request headers.

    With a `key` every `Authorization`, `x-api-key` and `api-key` header of the
    client is removed and the key is sent in the target's `auth_header` form.
    Without one the client's credential headers pass unchanged. The target's
    `extra_headers` replace client headers of the same name. Header names compare
    case-insensitively, and the order of the remaining headers is kept.
    """
    if (key is not None) != target.injects_key:
        raise ValueError(f"upstream {target.name}: pass a key exactly when the target injects one")

    replaced = {name.lower() for name in target.extra_headers}
    if key is not None:
        replaced |= CREDENTIAL_HEADERS
    result = [(name, value) for name, value in headers if name.lower() not in replaced]

    result.extend((name, value.get_secret_value()) for name, value in target.extra_headers.items())
    if key is not None:
        result.append(credential_header(target.auth_header, key))
    return result


def credential_header(auth_header: AuthHeader, key: ApiKey) -> tuple[str, str]:
    """Return the header that sends `key` in the `auth_header` form."""
    if auth_header == "authorization":
        return ("Authorization", f"Bearer {key.reveal()}")
    return (auth_header, key.reveal())
