"""Tests of the mask and keyed hash operators."""

from __future__ import annotations

import hashlib
import hmac
import re
import unicodedata
from pathlib import Path

import pytest
from pydantic import BaseModel, ValidationError

from sidecar.errors import ConfigError
from sidecar.redact.operators import (
    DEFAULT_KEY_ENV,
    HashOptions,
    KeyedHasher,
    MaskOptions,
    load_hash_key,
    mask,
)

KEY = b"0123456789abcdef0123456789abcdef"
ENVIRON = {DEFAULT_KEY_ENV: KEY.decode()}


@pytest.mark.parametrize(
    ("value", "options", "expected"),
    [
        pytest.param(
            "4111-1111-1111-1111", MaskOptions(keep_last=4), "****-****-****-1111", id="card"
        ),
        pytest.param(
            "4111 1111 1111 1111", MaskOptions(keep_last=4), "**** **** **** 1111", id="card-spaces"
        ),
        pytest.param(
            "4111-1111-1111-1111",
            MaskOptions(keep_last=4, keep_separators=False),
            "***************1111",
            id="card-no-separators",
        ),
        pytest.param(
            "john.doe@example.com", MaskOptions(keep_first=1), "j***.***@*******.***", id="email"
        ),
        pytest.param("555-0100", MaskOptions(mask_char="#"), "###-####", id="mask-char"),
        pytest.param("Alice Smith", MaskOptions(), "***** *****", id="default-masks-all"),
        pytest.param("ab-cd", MaskOptions(separators=""), "*****", id="no-separators-configured"),
        pytest.param("1234", MaskOptions(keep_last=4), "**34", id="short-value-half-kept"),
        pytest.param(
            "123456", MaskOptions(keep_first=2, keep_last=2), "1***56", id="half-cap-shared"
        ),
        pytest.param(
            "123456", MaskOptions(keep_first=3, keep_last=3), "***456", id="last-served-first"
        ),
        pytest.param("", MaskOptions(keep_last=4), "", id="empty"),
        pytest.param("---", MaskOptions(keep_last=4), "---", id="only-separators"),
    ],
)
def test_mask(value: str, options: MaskOptions, expected: str) -> None:
    assert mask(value, options) == expected


@pytest.mark.parametrize(
    ("value", "options", "expected"),
    [
        pytest.param("山田太郎", MaskOptions(keep_last=1), "***郎", id="cjk"),
        pytest.param("Zoë Saldaña", MaskOptions(keep_first=1), "Z** *******", id="precomposed"),
        pytest.param(
            unicodedata.normalize("NFD", "Zoë Saldaña"),
            MaskOptions(keep_first=1),
            "Z** *******",
            id="combining-marks-are-one-character",
        ),
        pytest.param("👩‍👩‍👧 family", MaskOptions(), "* ******", id="emoji-zwj-sequence"),
        pytest.param(
            "Ελένη Παπαδοπούλου", MaskOptions(keep_last=3), "***** *********λου", id="greek"
        ),
        pytest.param("محمد", MaskOptions(mask_char="•"), "••••", id="arabic-bullet"),
    ],
)
def test_mask_unicode(value: str, options: MaskOptions, expected: str) -> None:
    assert mask(value, options) == expected


def test_mask_never_shows_whole_value() -> None:
    for length in range(1, 12):
        value = "7" * length
        masked = mask(value, MaskOptions(keep_first=10, keep_last=10))
        assert masked.count("*") >= (length + 1) // 2


@pytest.mark.parametrize(
    "kwargs",
    [
        pytest.param({"mask_char": ""}, id="empty-mask-char"),
        pytest.param({"mask_char": "**"}, id="two-mask-chars"),
        pytest.param({"mask_char": "\n"}, id="unprintable-mask-char"),
        pytest.param({"keep_first": -1}, id="negative-keep-first"),
        pytest.param({"keep_last": -2}, id="negative-keep-last"),
    ],
)
def test_mask_options_invalid(kwargs: dict[str, object]) -> None:
    with pytest.raises(ValueError):
        MaskOptions(**kwargs)  # type: ignore[arg-type]


class _Rule(BaseModel):
    mask: MaskOptions | None = None
    hash: HashOptions | None = None


def test_options_validate_as_pydantic_fields() -> None:
    rule = _Rule.model_validate({"mask": {"keep_last": 4}, "hash": {"length": 12}})

    assert rule.mask == MaskOptions(keep_last=4)
    assert rule.hash == HashOptions(length=12)


def test_invalid_options_are_pydantic_errors() -> None:
    with pytest.raises(ValidationError, match="mask_char must be one printable character"):
        _Rule.model_validate({"mask": {"mask_char": "ab"}})


def test_hash_format_and_digest() -> None:
    hasher = KeyedHasher(KEY)
    expected = hmac.new(KEY, b"jane@example.com", hashlib.sha256).hexdigest()[:8]

    assert hasher.apply("EMAIL_ADDRESS", "jane@example.com") == f"<EMAIL_ADDRESS:hmac:{expected}>"


def test_hash_is_deterministic_and_keyed() -> None:
    first = KeyedHasher(KEY).apply("US_SSN", "123-45-6789")
    second = KeyedHasher(KEY).apply("US_SSN", "123-45-6789")
    other_key = KeyedHasher(KEY[::-1]).apply("US_SSN", "123-45-6789")

    assert first == second
    assert first != other_key


def test_hash_is_not_plain_sha256() -> None:
    digest = KeyedHasher(KEY, length=64).digest("123-45-6789")

    assert digest != hashlib.sha256(b"123-45-6789").hexdigest()


def test_hash_distinct_values() -> None:
    hasher = KeyedHasher(KEY)
    digests = {hasher.digest(f"555-01{n:02d}") for n in range(100)}

    assert len(digests) == 100


def test_hash_unicode_normalized() -> None:
    hasher = KeyedHasher(KEY)
    composed = hasher.digest("José Müller")
    decomposed = hasher.digest(unicodedata.normalize("NFD", "José Müller"))

    assert composed == decomposed


def test_hash_unicode_values() -> None:
    hasher = KeyedHasher(KEY)
    for value in ("山田太郎", "👩‍👩‍👧", "Ελένη", "\u200b", ""):
        assert re.fullmatch(r"<PERSON:hmac:[0-9a-f]{8}>", hasher.apply("PERSON", value))


@pytest.mark.parametrize("length", [8, 16, 64])
def test_hash_length(length: int) -> None:
    digest = KeyedHasher(KEY, length=length).digest("value")

    assert len(digest) == length


def test_hash_custom_template() -> None:
    hasher = KeyedHasher(KEY, template="[{digest}]")

    assert re.fullmatch(r"\[[0-9a-f]{8}\]", hasher.apply("PERSON", "Ada"))


@pytest.mark.parametrize(
    "kwargs",
    [
        pytest.param({"length": 7}, id="length-too-short"),
        pytest.param({"length": 65}, id="length-too-long"),
        pytest.param({"template": "<{entity_type}>"}, id="template-without-digest"),
        pytest.param({"template": "{digest}{key}"}, id="template-unknown-field"),
        pytest.param({"template": "{digest:>10}"}, id="template-format-spec"),
        pytest.param({"template": "{digest!r}"}, id="template-conversion"),
        pytest.param({"template": "{digest"}, id="template-unbalanced"),
        pytest.param({"key_env": "A", "key_file": "/b"}, id="two-key-sources"),
    ],
)
def test_hash_options_invalid(kwargs: dict[str, object]) -> None:
    with pytest.raises(ValueError):
        HashOptions(**kwargs)  # type: ignore[arg-type]


def test_key_from_default_environment_variable() -> None:
    assert load_hash_key(HashOptions(), ENVIRON) == KEY


def test_key_from_named_environment_variable() -> None:
    options = HashOptions(key_env="MY_HASH_KEY")

    assert load_hash_key(options, {"MY_HASH_KEY": " " + KEY.decode() + "\n"}) == KEY


def test_key_from_file_strips_newline(tmp_path: Path) -> None:
    key_file = tmp_path / "hash.key"
    key_file.write_bytes(KEY + b"\n")

    assert load_hash_key(HashOptions(key_file=str(key_file)), {}) == KEY


def test_missing_key_variable_is_config_error() -> None:
    with pytest.raises(ConfigError, match=f"{DEFAULT_KEY_ENV} is not set or empty"):
        KeyedHasher.from_options(HashOptions(), {})


def test_empty_key_variable_is_config_error() -> None:
    with pytest.raises(ConfigError, match="MY_HASH_KEY is not set or empty"):
        load_hash_key(HashOptions(key_env="MY_HASH_KEY"), {"MY_HASH_KEY": "  "})


def test_missing_key_file_is_config_error(tmp_path: Path) -> None:
    key_file = tmp_path / "absent.key"

    with pytest.raises(ConfigError, match=r"cannot read hash key file .*absent\.key"):
        load_hash_key(HashOptions(key_file=str(key_file)), {})


def test_empty_key_file_is_config_error(tmp_path: Path) -> None:
    key_file = tmp_path / "empty.key"
    key_file.write_bytes(b"\n")

    with pytest.raises(ConfigError, match="is empty"):
        load_hash_key(HashOptions(key_file=str(key_file)), {})


def test_short_key_is_config_error_without_key() -> None:
    with pytest.raises(ConfigError, match="is 6 bytes long") as caught:
        load_hash_key(HashOptions(), {DEFAULT_KEY_ENV: "s3cr3t"})

    assert "s3cr3t" not in str(caught.value)


def test_hasher_repr_hides_key() -> None:
    assert KEY.decode() not in repr(KeyedHasher(KEY))


def test_hasher_rejects_short_key() -> None:
    with pytest.raises(ValueError):
        KeyedHasher(b"short")
