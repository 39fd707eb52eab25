"""Graceful drain of the real `pii-sidecar serve` process on SIGTERM."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import sys
import time
from pathlib import Path

import aiohttp
import pytest

from tests.conftest import DEFAULT_POLICY, RunningUpstream

pytestmark = pytest.mark.slow


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def wait_ready(url: str, deadline: float) -> None:
    async with aiohttp.ClientSession() as session:
        while time.monotonic() < deadline:
            try:
                async with session.get(url + "/readyz") as response:
                    if response.status == 200:
                        return
            except aiohttp.ClientConnectionError:
                pass
            await asyncio.sleep(0.1)
    raise AssertionError("the sidecar did not become ready")


async def test_sigterm_drains_stream_and_exits_zero(fake_upstream: RunningUpstream, tmp_path: Path) -> None:
    fake_upstream.fake.chunk_delay = 0.02
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "sidecar", "serve", "--port", str(port), "--upstream", fake_upstream.url,
        "--policy", str(DEFAULT_POLICY), "--grace-period", "10",
        stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE, env={**os.environ},
    )
    try:
        await wait_ready(url, time.monotonic() + 60)
        body = {"model": "m", "stream": True, "messages": [{"role": "user", "content": "x" * 300}]}
        async with aiohttp.ClientSession() as session, session.post(url + "/v1/chat/completions", json=body) as response:
            first = await response.content.readany()
            process.send_signal(signal.SIGTERM)
            await asyncio.sleep(0.2)
            with pytest.raises(aiohttp.ClientConnectionError):
                async with aiohttp.ClientSession() as other, other.get(url + "/healthz"):
                    pass
            rest = await response.read()
        events = (first + rest).decode().split("\n\n")
        text = "".join(
            choice["delta"].get("content") or ""
            for event in events if event.startswith("data: {")
            for choice in json.loads(event[6:])["choices"]
        )
        assert text == "You said: " + "x" * 300
        assert "data: [DONE]" in events
        assert await asyncio.wait_for(process.wait(), 15) == 0
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()
