"""A route of the configuration file can name its own policy."""

from __future__ import annotations

import json
from pathlib import Path

import aiohttp
import pytest

from sidecar.errors import SidecarError
from tests.conftest import REPO, RunningUpstream, SidecarFactory

CHAT = {"model": "m", "messages": [{"role": "user", "content": "Card 4111 1111 1111 1111 please"}]}


def write_config(tmp_path: Path, upstream: str, policy: str) -> Path:
    config = tmp_path / "sidecar.yaml"
    config.write_text(
        "version: 1\n"
        "routes:\n"
        f"  - prefix: /strict\n    strip_prefix: true\n    policy: {policy}\n"
        f"    upstreams: [{{name: fake, url: '{upstream}'}}]\n"
        f"  - prefix: /\n    upstreams: [{{name: fake, url: '{upstream}'}}]\n"
    )
    return config


async def test_route_policy_applies_to_its_prefix(
    start_sidecar: SidecarFactory, fake_upstream: RunningUpstream, tmp_path: Path
) -> None:
    config = write_config(tmp_path, fake_upstream.url, "strict")
    sidecar = await start_sidecar(config=str(config), policy_dir=str(REPO / "policies"), policy="default")
    async with aiohttp.ClientSession() as session:
        async with session.post(sidecar.url + "/strict/v1/chat/completions", json=CHAT) as strict:
            assert strict.status == 400
            assert (await strict.json())["error"]["code"] == "pii_blocked"
        async with session.post(sidecar.url + "/v1/chat/completions", json=CHAT) as default:
            assert default.status == 200
    assert sidecar.audits[0]["policy"]["name"] == "strict"
    assert sidecar.audits[1]["policy"]["name"] == "default"
    assert "4111" not in json.dumps(fake_upstream.fake.requests[-1].json())


async def test_route_policy_must_be_loaded(
    start_sidecar: SidecarFactory, fake_upstream: RunningUpstream, tmp_path: Path
) -> None:
    config = write_config(tmp_path, fake_upstream.url, "no-such-policy")
    with pytest.raises(SidecarError, match="no-such-policy"):
        await start_sidecar(config=str(config), policy_dir=str(REPO / "policies"), policy="default")
