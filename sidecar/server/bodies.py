"""Request body decoding: Content-Encoding and JSON parsing, failing closed."""

from __future__ import annotations

import json
import zlib
from collections.abc import Callable
from typing import Any

import brotli
import zstandard

from sidecar.errors import InvalidBody, UnsupportedBody

MAX_DECODED_BYTES = 64 * 1024 * 1024


def _gunzip(data: bytes) -> bytes:
    return _inflate(data, zlib.MAX_WBITS | 16)


def _deflate(data: bytes) -> bytes:
    # RFC 9110 "deflate" is the zlib format; some clients send raw deflate instead.
    try:
        return _inflate(data, zlib.MAX_WBITS)
    except zlib.error:
        return _inflate(data, -zlib.MAX_WBITS)


def _inflate(data: bytes, wbits: int) -> bytes:
    decompressor = zlib.decompressobj(wbits)
    output = decompressor.decompress(data, MAX_DECODED_BYTES)
    if decompressor.unconsumed_tail:
        raise UnsupportedBody(f"decoded request body is larger than {MAX_DECODED_BYTES} bytes")
    if not decompressor.eof:
        raise zlib.error("truncated compressed data")
    return output


def _brotli(data: bytes) -> bytes:
    return bytes(brotli.decompress(data))


def _zstd(data: bytes) -> bytes:
    reader = zstandard.ZstdDecompressor().stream_reader(data)
    output = reader.read(MAX_DECODED_BYTES + 1)
    if len(output) > MAX_DECODED_BYTES:
        raise UnsupportedBody(f"decoded request body is larger than {MAX_DECODED_BYTES} bytes")
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
        document = json.loads(text)
    except json.JSONDecodeError as exc:
        if stripped[0] not in "{[":
            raise UnsupportedBody("request body is not JSON; send a JSON object") from exc
        raise InvalidBody(
            f"request body is malformed or truncated JSON: {exc.msg} at line {exc.lineno} "
            f"column {exc.colno}"
        ) from exc
    if not isinstance(document, dict):
        raise InvalidBody(f"request body must be a JSON object, got {type(document).__name__}")
    return document
