"""Compressed bodies: request Content-Encoding decoding, and compressed upstream responses."""

from __future__ import annotations

import gzip
import json
import zlib
from typing import Any

import aiohttp
import brotli
import pytest
import zstandard
from aiohttp import web

from sidecar.errors import UnsupportedBody
from sidecar.server.bodies import MAX_DECODED_BYTES, decode_content
from tests.conftest import RunningSidecar, SidecarFactory, start_site
from tests.conftest_protocols import (
    PROMPT,
    RunningAnthropic,
    anthropic_sidecar_fixture,  # noqa: F401 (a fixture, found by its name)
    assert_no_pii,
    fake_anthropic_fixture,  # noqa: F401 (a fixture, found by its name)
)

DATA = json.dumps({"text": "héllo " * 50}).encode()


def raw_deflate(data: bytes) -> bytes:
    compressor = zlib.compressobj(wbits=-zlib.MAX_WBITS)
    return compressor.compress(data) + compressor.flush()


ENCODERS = {
    "gzip": gzip.compress,
    "x-gzip": gzip.compress,
    "deflate": zlib.compress,
    "br": lambda data: bytes(brotli.compress(data)),
    "zstd": lambda data: zstandard.ZstdCompressor().compress(data),
}


@pytest.mark.parametrize("coding", sorted(ENCODERS))
def test_decode_each_coding(coding: str) -> None:
    assert decode_content(ENCODERS[coding](DATA), coding) == DATA


def test_decode_raw_deflate() -> None:
    assert decode_content(raw_deflate(DATA), "deflate") == DATA


def test_decode_stacked_codings_last_first() -> None:
    encoded = bytes(brotli.compress(gzip.compress(DATA)))
    assert decode_content(encoded, "gzip, br") == DATA


@pytest.mark.parametrize("header", [None, "", "identity", "IDENTITY"])
def test_decode_identity(header: str | None) -> None:
    assert decode_content(DATA, header) == DATA


@pytest.mark.parametrize("coding", ["compress", "snappy", "gzip, lz4"])
def test_decode_unknown_coding_is_415(coding: str) -> None:
    with pytest.raises(UnsupportedBody, match="cannot be decoded") as caught:
        decode_content(DATA, coding)
    assert caught.value.status == 415


@pytest.mark.parametrize("coding", ["gzip", "deflate", "br", "zstd"])
def test_decode_corrupt_data_is_415(coding: str) -> None:
    with pytest.raises(UnsupportedBody, match=f"not valid {coding} data"):
        decode_content(b"\x00\x01 definitely not compressed", coding)


def test_decode_truncated_gzip_is_415() -> None:
    with pytest.raises(UnsupportedBody):
        decode_content(gzip.compress(DATA)[:-10], "gzip")


@pytest.mark.parametrize("coding", ["gzip", "zstd"])
def test_decode_bomb_rejected(coding: str) -> None:
    bomb = ENCODERS[coding](bytes(MAX_DECODED_BYTES + 1))
    with pytest.raises(UnsupportedBody, match="larger than"):
        decode_content(bomb, coding)


# Through the proxy, with the real detector.


def message_body(text: str) -> bytes:
    return json.dumps({"model": "claude-x", "max_tokens": 10,
                       "messages": [{"role": "user", "content": text}]}).encode()


async def post(sidecar: RunningSidecar, body: bytes, headers: dict[str, str]) -> tuple[int, Any, Any]:
    async with aiohttp.ClientSession(auto_decompress=False) as session:
        headers = {"Content-Type": "application/json", "x-api-key": "sk-ant", **headers}
        async with session.post(sidecar.url + "/v1/messages", data=body, headers=headers) as response:
            return response.status, response.headers.copy(), await response.read()


@pytest.mark.parametrize("coding", ["gzip", "zstd", "br", "deflate"])
async def test_compressed_request_scanned_and_sent_plain(
    anthropic_sidecar: RunningSidecar, fake_anthropic: RunningAnthropic, coding: str
) -> None:
    status, _, raw = await post(anthropic_sidecar, ENCODERS[coding](message_body(PROMPT)),
                                {"Content-Encoding": coding})
    assert status == 200
    assert json.loads(raw)["content"][0]["text"] == f"You said: {PROMPT}"
    sent = fake_anthropic.fake.requests[-1]
    assert "Content-Encoding" not in sent.headers
    assert int(sent.headers["Content-Length"]) == len(sent.body)
    assert json.loads(sent.body)["messages"][0]["content"].startswith("I am <PERSON_1>")
    assert_no_pii([sent.body])


async def test_compressed_request_without_pii_sent_as_parsed(
    anthropic_sidecar: RunningSidecar, fake_anthropic: RunningAnthropic
) -> None:
    body = message_body("What is the boiling point of water?")
    status, _, _ = await post(anthropic_sidecar, gzip.compress(body), {"Content-Encoding": "gzip"})
    assert status == 200
    sent = fake_anthropic.fake.requests[-1]
    assert "Content-Encoding" not in sent.headers
    assert json.loads(sent.body) == json.loads(body)


@pytest.mark.parametrize(
    ("coding", "data"),
    [
        pytest.param("gzip", gzip.compress(b'{"a": 1}') + b"mail x@example.com", id="gzip-trailing"),
        pytest.param("deflate", zlib.compress(b'{"a": 1}') + b"mail x@example.com", id="deflate-trailing"),
    ],
)
async def test_data_after_compressed_body_rejected(
    anthropic_sidecar: RunningSidecar, fake_anthropic: RunningAnthropic, coding: str, data: bytes
) -> None:
    status, _, _ = await post(anthropic_sidecar, data, {"Content-Encoding": coding})
    assert status == 415
    assert fake_anthropic.fake.requests == []


async def test_unknown_request_coding_is_415_in_anthropic_format(
    anthropic_sidecar: RunningSidecar, fake_anthropic: RunningAnthropic
) -> None:
    status, _, raw = await post(anthropic_sidecar, message_body(PROMPT), {"Content-Encoding": "compress"})
    assert status == 415
    error = json.loads(raw)
    assert error["type"] == "error"
    assert error["error"]["type"] == "invalid_request_error"
    assert error["error"]["code"] == "unsupported_body"
    assert fake_anthropic.fake.requests == []


@pytest.mark.parametrize("coding", ["gzip", "deflate", "br"])
async def test_compressed_response_restored_with_matching_headers(
    anthropic_sidecar: RunningSidecar, fake_anthropic: RunningAnthropic, coding: str
) -> None:
    fake_anthropic.fake.content_encoding = coding
    status, headers, raw = await post(anthropic_sidecar, message_body(PROMPT), {})
    assert status == 200
    assert "Content-Encoding" not in headers
    assert int(headers["Content-Length"]) == len(raw)
    assert json.loads(raw)["content"][0]["text"] == f"You said: {PROMPT}"


async def test_compressed_stream_restored(
    anthropic_sidecar: RunningSidecar, fake_anthropic: RunningAnthropic
) -> None:
    fake_anthropic.fake.content_encoding = "gzip"
    body = json.loads(message_body(PROMPT))
    status, headers, raw = await post(anthropic_sidecar, json.dumps({**body, "stream": True}).encode(), {})
    assert status == 200
    assert "Content-Encoding" not in headers
    text = "".join(
        json.loads(line[len("data: "):])["delta"]["text"]
        for line in raw.decode().splitlines()
        if line.startswith("data: ") and '"text_delta"' in line
    )
    assert text == f"You said: {PROMPT}"


async def test_undecodable_response_coding_is_502(start_sidecar: SidecarFactory) -> None:
    async def handler(request: web.Request) -> web.Response:
        await request.read()
        return web.Response(body=b"\x1f\x9d compressed", headers={"Content-Encoding": "compress",
                                                                 "Content-Type": "application/json"})

    app = web.Application()
    app.router.add_post("/v1/messages", handler)
    runner, url = await start_site(app)
    try:
        sidecar = await start_sidecar(upstream=url)
        status, _, raw = await post(sidecar, message_body(PROMPT), {})
    finally:
        await runner.cleanup()
    assert status == 502
    assert json.loads(raw)["error"]["code"] == "upstream_response_undecodable"
