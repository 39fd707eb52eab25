"""Secret keys of the audit trail: loading them, key ids, and keyed fingerprints of values."""

from __future__ import annotations

import hashlib
import hmac
import os
import re
from collections.abc import Mapping
from pathlib import Path

from sidecar.errors import ConfigError

MIN_KEY_BYTES = 16
FINGERPRINT_HEX_DIGITS = 16
API_KEY_FINGERPRINT_HEX_DIGITS = 8

_SEPARATORS = re.compile(r"[\s\-.()/]+")
_COMPACT_TYPES = frozenset({"CREDIT_CARD", "PHONE_NUMBER", "IBAN_CODE", "US_SSN", "US_BANK_NUMBER"})


def load_key(
    *,
    path: str | Path | None = None,
    env_var: str | None = None,
    environ: Mapping[str, str] | None = None,
) -> bytes | None:
    """Load a secret key from the file at `path` or from the environment variable `env_var`.

    The key is the UTF-8 text of the file or variable with surrounding whitespace removed,
    so a hex or base64 string from `openssl rand -hex 32` or a Kubernetes secret works as is.
    Return None when neither source is given. Raise `ConfigError` when both are given, when
    the source is missing or empty, or when the key is shorter than `MIN_KEY_BYTES`.
    Messages name the source, never the key.
    """
    if path is not None and env_var is not None:
        raise ConfigError("set the audit key either from a file or from a variable, not both")
    if path is not None:
        return _validate(_read_key_file(Path(path)), source=str(path))
    if env_var is not None:
        return _validate(_read_key_variable(env_var, environ), source=f"${env_var}")
    return None


def _read_key_file(path: Path) -> bytes:
    try:
        return path.read_bytes().strip()
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read key file: {exc.strerror}") from exc


def _read_key_variable(name: str, environ: Mapping[str, str] | None) -> bytes:
    value = (os.environ if environ is None else environ).get(name)
    if value is None:
        raise ConfigError(
            f"environment variable {name} is not set, but the audit key is read from it"
        )
    return value.strip().encode("utf-8")


def _validate(key: bytes, source: str) -> bytes:
    if len(key) < MIN_KEY_BYTES:
        raise ConfigError(
            f"{source}: the key is {len(key)} bytes long, but a key needs at least "
            f"{MIN_KEY_BYTES}. Generate one with `openssl rand -hex 32`"
        )
    return key


def key_id(key: bytes) -> str:
    """Return a short public identifier of `key`: 8 hex digits that reveal nothing about it.

    Checkpoint records carry it, so that `audit verify` can tell a wrong key from an edit.
    """
    return hmac.new(key, b"pii-sidecar audit key id", hashlib.sha256).hexdigest()[:8]


def fingerprint(value: str, key: bytes) -> str:
    """Return the keyed fingerprint of `value`: the first 16 hex digits of HMAC-SHA256.

    Equal values give equal fingerprints under one key, so an auditor can count repeats
    without seeing the value. The fingerprint covers the exact string, so pass values
    through `normalize_value` first so that "4111 1111 1111 1111" and "4111-1111-1111-1111" match.
    Anyone holding the key can test guesses, and card or phone numbers are few enough to
    enumerate, so the key must stay with the sidecar and never go to the people who read
    the audit trail.
    """
    return hmac.new(key, value.encode("utf-8"), hashlib.sha256).hexdigest()[:FINGERPRINT_HEX_DIGITS]


def normalize_value(entity_type: str, value: str) -> str:
    """Return `value` in a canonical spelling for `fingerprint`.

    Numbers (cards, phones, IBANs, SSNs, bank accounts) lose spaces, dashes, dots, slashes
    and brackets and are upper-cased. Every other type is case-folded with runs of
    whitespace collapsed to one space.
    """
    if entity_type in _COMPACT_TYPES:
        return _SEPARATORS.sub("", value).upper()
    return " ".join(value.split()).casefold()


def api_key_fingerprint(api_key: str, key: bytes) -> str:
    """Return the keyed fingerprint of a client's API key: 8 hex digits of HMAC-SHA256.

    It distinguishes the keys of different clients in the audit trail. A fixed label goes
    into the HMAC before the API key, so the result never equals a value fingerprint.
    API keys are long random strings, so the short fingerprint cannot be reversed by
    trying keys, even by someone who holds `key`.
    """
    message = b"pii-sidecar api key\x00" + api_key.encode("utf-8")
    return hmac.new(key, message, hashlib.sha256).hexdigest()[:API_KEY_FINGERPRINT_HEX_DIGITS]
