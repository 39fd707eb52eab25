"""Tests of audit key loading, key ids and keyed fingerprints of detected values."""

from __future__ import annotations

from pathlib import Path

import pytest

from sidecar.audit.keys import fingerprint, key_id, load_key, normalize_value
from sidecar.errors import ConfigError

KEY = b"0123456789abcdef0123456789abcdef"
CANARY_KEY = "canary-key-7f3e9a1b2c4d5e6f"


def test_key_from_file_strips_whitespace(tmp_path: Path) -> None:
    path = tmp_path / "key"
    path.write_bytes(KEY + b"\n")

    assert load_key(path=path) == KEY


def test_key_from_environment_variable() -> None:
    assert load_key(env_var="AUDIT_KEY", environ={"AUDIT_KEY": f" {KEY.decode()} "}) == KEY


def test_no_key_source_returns_none() -> None:
    assert load_key() is None


def test_both_key_sources_are_rejected(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="not both"):
        load_key(path=tmp_path / "key", env_var="AUDIT_KEY")


def test_missing_key_file_is_rejected(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read key file"):
        load_key(path=tmp_path / "absent")


def test_unset_key_variable_is_rejected() -> None:
    with pytest.raises(ConfigError, match="AUDIT_KEY is not set"):
        load_key(env_var="AUDIT_KEY", environ={})


def test_short_key_is_rejected_without_showing_it() -> None:
    with pytest.raises(ConfigError, match="at least 16") as caught:
        load_key(env_var="AUDIT_KEY", environ={"AUDIT_KEY": "short-secret"})

    assert "short-secret" not in str(caught.value)


def test_errors_never_contain_key(tmp_path: Path) -> None:
    path = tmp_path / "key"
    path.write_text(CANARY_KEY[:10])

    with pytest.raises(ConfigError) as caught:
        load_key(path=path)

    assert CANARY_KEY[:10] not in str(caught.value)


def test_fingerprint_is_short_stable_hex() -> None:
    first = fingerprint("4111111111111111", KEY)

    assert first == fingerprint("4111111111111111", KEY)
    assert len(first) == 16
    assert int(first, 16) >= 0


def test_fingerprint_depends_on_key_and_value() -> None:
    base = fingerprint("4111111111111111", KEY)

    assert fingerprint("4111111111111112", KEY) != base
    assert fingerprint("4111111111111111", KEY[::-1]) != base


def test_fingerprint_does_not_contain_value() -> None:
    assert "4111" not in fingerprint("4111111111111111", KEY)


@pytest.mark.parametrize(
    ("entity_type", "spellings"),
    [
        pytest.param(
            "CREDIT_CARD",
            ["4111 1111 1111 1111", "4111-1111-1111-1111", "4111111111111111"],
            id="card",
        ),
        pytest.param("PHONE_NUMBER", ["+1 (415) 555-0100", "+1.415.555.0100"], id="phone"),
        pytest.param(
            "IBAN_CODE", ["de89 3704 0044 0532 0130 00", "DE89370400440532013000"], id="iban"
        ),
        pytest.param("EMAIL_ADDRESS", ["Jane.Doe@Example.com", "jane.doe@example.com"], id="email"),
        pytest.param("PERSON", ["Jane  Doe", "jane doe"], id="person"),
    ],
)
def test_normalized_spellings_share_fingerprint(entity_type: str, spellings: list[str]) -> None:
    fingerprints = {
        fingerprint(normalize_value(entity_type, spelling), KEY) for spelling in spellings
    }

    assert len(fingerprints) == 1


def test_key_id_is_short_and_key_specific() -> None:
    assert len(key_id(KEY)) == 8
    assert key_id(KEY) != key_id(KEY[::-1])
    assert KEY.decode()[:8] not in key_id(KEY)
