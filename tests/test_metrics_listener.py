"""The separate metrics listener of `pii-sidecar serve --metrics-port`."""

from __future__ import annotations

import asyncio
import signal
import sys
import time

import aiohttp
import pytest

from tests.conftest import DEFAULT_POLICY, RunningUpstream
from tests.test_shutdown import free_port, wait_ready

pytestmark = pytest.mark.slow


async def test_metrics_port_serves_only_metrics_and_health(fake_upstream: RunningUpstream) -> None:
    port, metrics_port = free_port(), free_port()
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "sidecar", "serve", "--port", str(port), "--upstream", fake_upstream.url,
        "--policy", str(DEFAULT_POLICY), "--metrics-port", str(metrics_port),
        stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL,
    )  # fmt: skip
    metrics_url = f"http://127.0.0.1:{metrics_port}"
    try:
        await wait_ready(f"http://127.0.0.1:{port}", time.monotonic() + 60)
        async with aiohttp.ClientSession() as session:
            async with session.get(metrics_url + "/metrics") as metrics:
                assert metrics.status == 200
                assert "pii_sidecar_requests" in await metrics.text()
            async with session.get(metrics_url + "/readyz") as ready:
                assert ready.status == 200
            async with session.get(metrics_url + "/v1/models") as proxied:
                assert proxied.status == 404
        assert fake_upstream.fake.requests == []
        process.send_signal(signal.SIGTERM)
        assert await asyncio.wait_for(process.wait(), 15) == 0
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()


def test_metrics_port_must_differ_from_proxy_port() -> None:
    from sidecar.config import Settings
    from sidecar.errors import ConfigError

    with pytest.raises(ConfigError, match="metrics port 8787"):
        Settings(metrics_port=8787)
