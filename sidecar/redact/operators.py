"""Irreversible value operators: `mask` and the keyed `hash` (HMAC-SHA256).

Both are pure functions of the detected value and their options. Neither can
be undone, so the restorer leaves their output in responses as it is. The
reversible operators are placeholders (`sidecar.redact.vault`) and surrogates
(`sidecar.redact.surrogates`).

The hash is keyed because an unkeyed hash of a phone number or an SSN is
reversed by hashing every possible value. The key comes from an environment
variable or a file (a mounted Kubernetes secret, for example) and is loaded
when the policy loads, so a missing key stops the policy from loading.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import string
import unicodedata
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import regex

from sidecar.errors import ConfigError

DEFAULT_SEPARATORS = " -./@()+_:"
DEFAULT_HASH_TEMPLATE = "<{entity_type}:hmac:{digest}>"
DEFAULT_KEY_ENV = "PII_SIDECAR_HASH_KEY"
MIN_KEY_BYTES = 16
MIN_DIGEST_LENGTH = 8
MAX_DIGEST_LENGTH = 64  # hex digits in a SHA-256 digest

_GRAPHEME = regex.compile(r"\X")
_TEMPLATE_FIELDS = frozenset({"entity_type", "digest"})


@dataclass(frozen=True, slots=True)
class MaskOptions:
    """Options of `mask`: the mask character and the characters left visible.

    `keep_first` and `keep_last` count characters that are not kept
    separators. At most half of those characters (rounded down) are kept, with
    `keep_last` served first, so a short value is never shown whole: with
    `keep_last=4`, `1234` becomes `**34`. A character here is a grapheme
    cluster, so `é` written as `e` plus a combining accent is one character and
    one mask character. With `keep_separators`, the characters in `separators`
    stay as they are, which keeps the shape of a card number or an e-mail
    address.

    Invalid options raise ValueError, which pydantic reports as a validation
    error when this class is a field of a policy model.
    """

    mask_char: str = "*"
    keep_first: int = 0
    keep_last: int = 0
    keep_separators: bool = True
    separators: str = DEFAULT_SEPARATORS

    def __post_init__(self) -> None:
        if len(self.mask_char) != 1 or not self.mask_char.isprintable():
            raise ValueError(f"mask_char must be one printable character, got {self.mask_char!r}")
        if self.keep_first < 0 or self.keep_last < 0:
            raise ValueError(
                f"keep_first and keep_last must be 0 or more, got {self.keep_first} and "
                f"{self.keep_last}"
            )


DEFAULT_MASK = MaskOptions()


def mask(value: str, options: MaskOptions = DEFAULT_MASK) -> str:
    """Return `value` with every character replaced by `options.mask_char`, except the kept ones."""
    clusters: list[str] = _GRAPHEME.findall(value)
    maskable = [
        index
        for index, cluster in enumerate(clusters)
        if not (options.keep_separators and cluster in options.separators)
    ]

    budget = len(maskable) // 2
    keep_last = min(options.keep_last, budget)
    keep_first = min(options.keep_first, budget - keep_last)
    hidden = maskable[keep_first : len(maskable) - keep_last]

    for index in hidden:
        clusters[index] = options.mask_char
    return "".join(clusters)


@dataclass(frozen=True, slots=True)
class HashOptions:
    """Where the HMAC key comes from and how a hashed value is written.

    The key is read from the file `key_file` when it is set, else from the
    environment variable `key_env`, else from `PII_SIDECAR_HASH_KEY`. Setting
    both `key_env` and `key_file` is an error. `length` is the number of hex
    digits of the digest that are kept, from 8 to 64. With 8 digits (32 bits),
    two different values share a digest with a probability of about 1 in
    2**32 per pair. In a set of 10,000 values that makes a shared digest
    about 1% likely, which matters when hashes are used to join records.
    `template` formats the output from the fields `{entity_type}` and
    `{digest}`; it must contain `{digest}`.

    Invalid options raise ValueError, as `MaskOptions` does.
    """

    key_env: str | None = None
    key_file: str | None = None
    length: int = MIN_DIGEST_LENGTH
    template: str = DEFAULT_HASH_TEMPLATE

    def __post_init__(self) -> None:
        if self.key_env is not None and self.key_file is not None:
            raise ValueError("set key_env or key_file for the HMAC key, not both")
        if not MIN_DIGEST_LENGTH <= self.length <= MAX_DIGEST_LENGTH:
            raise ValueError(
                f"length must be from {MIN_DIGEST_LENGTH} to {MAX_DIGEST_LENGTH} hex digits, "
                f"got {self.length}"
            )
        _validate_template(self.template)


def _validate_template(template: str) -> None:
    try:
        parsed = list(string.Formatter().parse(template))
    except ValueError as exc:
        raise ValueError(f"invalid hash template {template!r}: {exc}") from exc

    fields = [(name, spec, conversion) for _, name, spec, conversion in parsed if name is not None]
    for name, spec, conversion in fields:
        if name not in _TEMPLATE_FIELDS or spec or conversion:
            raise ValueError(
                f"invalid field {{{name}}} in hash template {template!r}: "
                "only {entity_type} and {digest} are allowed, without format specs"
            )
    if "digest" not in {name for name, _, _ in fields}:
        raise ValueError(f"hash template {template!r} must contain {{digest}}")


def load_hash_key(options: HashOptions, environ: Mapping[str, str] | None = None) -> bytes:
    """Read the HMAC key that `options` names; raise ConfigError if it is missing or short.

    A key file is read as bytes with surrounding whitespace removed, because
    files written by `echo` end with a newline. An environment variable is
    encoded as UTF-8. Error messages name the source, never the key.
    """
    if options.key_file is not None:
        source = f"hash key file {options.key_file}"
        key = _read_key_file(Path(options.key_file))
    else:
        variable = options.key_env or DEFAULT_KEY_ENV
        source = f"hash key environment variable {variable}"
        key = (os.environ if environ is None else environ).get(variable, "").strip().encode()
        if not key:
            raise ConfigError(
                f"{source} is not set or empty; the hash action needs a secret key, for "
                f"example `export {variable}=$(openssl rand -hex 32)`"
            )

    if len(key) < MIN_KEY_BYTES:
        raise ConfigError(
            f"{source} is {len(key)} bytes long; an HMAC key needs at least {MIN_KEY_BYTES} "
            "bytes, for example the output of `openssl rand -hex 32`"
        )
    return key


def _read_key_file(path: Path) -> bytes:
    try:
        key = path.read_bytes().strip()
    except OSError as exc:
        raise ConfigError(f"cannot read hash key file {path}: {exc.strerror}") from exc
    if not key:
        raise ConfigError(f"hash key file {path} is empty")
    return key


@dataclass(frozen=True, slots=True)
class KeyedHasher:
    """The `hash` operator with its key loaded: HMAC-SHA256, truncated and formatted.

    The value is normalized to Unicode NFC before hashing, so the same text
    typed with precomposed or combining accents gets the same digest. The
    entity type is not part of the hashed message: one value gets one digest
    under one key, whatever type it was detected as, so hashes can be joined
    across records. The key never appears in `repr`.
    """

    key: bytes = field(repr=False)
    length: int = MIN_DIGEST_LENGTH
    template: str = DEFAULT_HASH_TEMPLATE

    @classmethod
    def from_options(
        cls, options: HashOptions, environ: Mapping[str, str] | None = None
    ) -> KeyedHasher:
        """Load the key that `options` names; raise ConfigError if it is missing."""
        return cls(load_hash_key(options, environ), options.length, options.template)

    def __post_init__(self) -> None:
        if len(self.key) < MIN_KEY_BYTES:
            raise ValueError(f"an HMAC key needs at least {MIN_KEY_BYTES} bytes")
        HashOptions(length=self.length, template=self.template)

    def apply(self, entity_type: str, value: str) -> str:
        """Return the formatted digest of `value`, such as `<EMAIL_ADDRESS:hmac:3f9a1c2b>`."""
        digest = self.digest(value)
        return self.template.format(entity_type=entity_type, digest=digest)

    def digest(self, value: str) -> str:
        """Return the first `length` hex digits of HMAC-SHA256(key, NFC(value) as UTF-8)."""
        message = unicodedata.normalize("NFC", value).encode()
        return hmac.new(self.key, message, hashlib.sha256).hexdigest()[: self.length]
