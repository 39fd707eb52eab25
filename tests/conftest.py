"""Shared fixtures: the real spaCy-backed detector, a fake provider and a running sidecar."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web

from sidecar.config import Settings
from sidecar.detect.engine import Detector
from sidecar.server.app import SERVER_OPTIONS, STATE, create_app
from sidecar.testing.fake_upstream import FakeUpstream

REPO = Path(__file__).resolve().parent.parent
DEFAULT_POLICY = REPO / "policies" / "default.yaml"


@pytest.fixture(scope="session")
def detector() -> Detector:
    """The real detector with the sm model, loaded once per test session."""
    return Detector()


async def start_site(app: web.Application) -> tuple[web.AppRunner, str]:
    """Serve `app` on a free port of 127.0.0.1 and return its runner and base URL."""
    runner = web.AppRunner(app, **SERVER_OPTIONS)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    return runner, f"http://127.0.0.1:{port}"


@dataclass
class RunningUpstream:
    fake: FakeUpstream
    url: str


@pytest.fixture
async def fake_upstream() -> AsyncIterator[RunningUpstream]:
    fake = FakeUpstream()
    runner, url = await start_site(fake.app())
    yield RunningUpstream(fake, url)
    await runner.cleanup()


@dataclass
class RunningSidecar:
    """A sidecar serving on 127.0.0.1; `audits` collects its audit records."""

    url: str
    app: web.Application
    audits: list[dict[str, Any]] = field(default_factory=list)

    @property
    def base_url(self) -> str:
        return self.url + "/v1"


SidecarFactory = Callable[..., Awaitable[RunningSidecar]]


@pytest.fixture
async def start_sidecar(
    detector: Detector, fake_upstream: RunningUpstream
) -> AsyncIterator[SidecarFactory]:
    """Return a function that starts a sidecar in front of `fake_upstream`, with settings overrides."""
    runners: list[web.AppRunner] = []

    async def start(**overrides: Any) -> RunningSidecar:
        settings = replace(Settings(upstream=fake_upstream.url, policy=str(DEFAULT_POLICY)), **overrides)
        audits: list[dict[str, Any]] = []
        app = create_app(settings, audit=audits.append, detector_factory=lambda _: detector)
        runner, url = await start_site(app)
        runners.append(runner)
        while not app[STATE].ready:
            await asyncio.sleep(0.01)
        return RunningSidecar(url=url, app=app, audits=audits)

    yield start
    for runner in runners:
        await runner.cleanup()


@pytest.fixture
async def sidecar(start_sidecar: SidecarFactory) -> RunningSidecar:
    """A sidecar with the default policy in front of `fake_upstream`."""
    return await start_sidecar()
