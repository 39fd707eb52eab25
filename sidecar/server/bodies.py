"""Request body decoding: Content-Encoding and JSON parsing, failing closed."""

from __future__ import annotations

import json
import math
import zlib
from collections.abc import Callable
from typing import Any

import brotli
import zstandard

from sidecar.errors import InvalidBody, UnsupportedBody

MAX_DECODED_BYTES = 64 * 1024 * 1024


class _TrailingData(ValueError):
    """Bytes follow the end of the compressed data."""


def _too_large() -> UnsupportedBody:
    return UnsupportedBody(f"decoded request body is larger than {MAX_DECODED_BYTES} bytes")


def _gunzip(data: bytes) -> bytes:
    """Decode every gzip member (RFC 1952 allows several); anything else after them is an error."""
    output = bytearray()
    while True:
        decompressor = zlib.decompressobj(zlib.MAX_WBITS | 16)
        output += _inflate_one(decompressor, data, MAX_DECODED_BYTES - len(output))
        data = decompressor.unused_data
        if not data:
            return bytes(output)
        if not data.startswith(b"\x1f\x8b"):
            raise _TrailingData("data after the last gzip member")


def _deflate(data: bytes) -> bytes:
    # RFC 9110 "deflate" is the zlib format; some clients send raw deflate instead.
    try:
        decompressor = zlib.decompressobj(zlib.MAX_WBITS)
        output = _inflate_one(decompressor, data, MAX_DECODED_BYTES)
    except zlib.error:
        decompressor = zlib.decompressobj(-zlib.MAX_WBITS)
        output = _inflate_one(decompressor, data, MAX_DECODED_BYTES)
    if decompressor.unused_data:
        raise _TrailingData("data after the end of the deflate stream")
    return output


def _inflate_one(decompressor: Any, data: bytes, limit: int) -> bytes:
    output: bytes = decompressor.decompress(data, limit + 1)
    if len(output) > limit or decompressor.unconsumed_tail:
        raise _too_large()
    if not decompressor.eof:
        raise zlib.error("truncated compressed data")
    return output


def _brotli(data: bytes) -> bytes:
    decompressor = brotli.Decompressor()
    output = decompressor.process(data, output_buffer_limit=MAX_DECODED_BYTES + 1)
    if len(output) > MAX_DECODED_BYTES:
        raise _too_large()
    if not decompressor.is_finished():
        raise brotli.error("truncated or oversized brotli data")
    return bytes(output)


def _zstd(data: bytes) -> bytes:
    """Decode every zstd frame; data that is not a frame raises `ZstdError`."""
    reader = zstandard.ZstdDecompressor().stream_reader(data, read_across_frames=True)
    output = reader.read(MAX_DECODED_BYTES + 1)
    if len(output) > MAX_DECODED_BYTES:
        raise _too_large()
    if reader.read(1):
        raise _too_large()
    return bytes(output)


DECODERS: dict[str, Callable[[bytes], bytes]] = {
    "gzip": _gunzip,
    "x-gzip": _gunzip,
    "deflate": _deflate,
    "br": _brotli,
    "zstd": _zstd,
    "identity": lambda data: data,
}


def decode_content(data: bytes, content_encoding: str | None) -> bytes:
    """Undo every coding listed in `content_encoding`, last applied first.

    Raise `UnsupportedBody` for an unknown coding or data that does not decode.
    """
    if not content_encoding:
        return data
    codings = [c.strip().lower() for c in content_encoding.split(",") if c.strip()]
    for coding in reversed(codings):
        decoder = DECODERS.get(coding)
        if decoder is None:
            supported = ", ".join(sorted(DECODERS))
            raise UnsupportedBody(
                f"Content-Encoding {coding!r} cannot be decoded, so the body cannot be scanned "
                f"for PII; send it uncompressed or with one of: {supported}"
            )
        try:
            data = decoder(data)
        except _TrailingData as exc:
            raise UnsupportedBody(
                f"request body has bytes after the end of its {coding} data, which would not "
                "be scanned; send only the compressed body"
            ) from exc
        except (zlib.error, brotli.error, zstandard.ZstdError) as exc:
            raise UnsupportedBody(
                f"request body is not valid {coding} data ({type(exc).__name__}); "
                "send it uncompressed or re-encode it"
            ) from exc
    return data


def parse_json_body(data: bytes, content_type: str | None) -> dict[str, Any]:
    """Parse a request body that must be a JSON object."""
    media_type = (content_type or "application/json").split(";")[0].strip().lower()
    if media_type != "application/json" and not media_type.endswith("+json"):
        raise UnsupportedBody(
            f"Content-Type {media_type!r} is not supported; send the request as application/json"
        )
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise UnsupportedBody(
            f"request body is not UTF-8 (invalid byte at offset {exc.start})"
        ) from exc
    stripped = text.lstrip()
    if not stripped:
        raise InvalidBody("request body is empty; send a JSON object")
    try:
        document = json.loads(
            text,
            object_pairs_hook=_unique_keys,
            parse_constant=_no_constant,
            parse_float=_finite_float,
        )
    except json.JSONDecodeError as exc:
        if stripped[0] not in "{[":
            raise UnsupportedBody("request body is not JSON; send a JSON object") from exc
        raise InvalidBody(
            f"request body is malformed or truncated JSON: {exc.msg} at line {exc.lineno} "
            f"column {exc.colno}"
        ) from exc
    except _AmbiguousJSON as exc:
        raise InvalidBody(f"request body is ambiguous JSON: {exc}; send standard JSON") from exc
    except RecursionError as exc:
        raise InvalidBody("request body is nested too deeply; send a flatter JSON object") from exc
    except ValueError as exc:
        # Python's limit on integer digits (CVE-2020-10735) raises a plain ValueError.
        raise InvalidBody(
            "request body has a number that is too long; send shorter numbers"
        ) from exc
    if "\\u" in text and _has_lone_surrogate(document):
        raise InvalidBody(
            "request body has a \\u escape of a lone UTF-16 surrogate, which is not text; "
            "send valid Unicode"
        )
    if not isinstance(document, dict):
        raise InvalidBody(f"request body must be a JSON object, got {type(document).__name__}")
    return document


class _AmbiguousJSON(ValueError):
    """JSON that parsers read differently: duplicate keys, NaN or Infinity."""


def _unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    """Build an object, rejecting duplicate keys.

    Parsers disagree on which duplicate wins, so the upstream could read a
    value the sidecar never scanned.
    """
    document = dict(pairs)
    if len(document) != len(pairs):
        # The key is not named: it may be text from the request.
        raise _AmbiguousJSON("a key appears twice in one object")
    return document


def _finite_float(literal: str) -> float:
    value = float(literal)
    if not math.isfinite(value):
        raise _AmbiguousJSON("a number is too large for a 64-bit float")
    return value


def _no_constant(name: str) -> Any:
    raise _AmbiguousJSON(f"{name} is not a JSON number")


def _has_lone_surrogate(document: Any) -> bool:
    try:
        json.dumps(document, ensure_ascii=False).encode("utf-8")
    except UnicodeEncodeError:
        return True
    return False
