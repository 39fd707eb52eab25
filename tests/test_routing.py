"""Routes: prefix matching, endpoints, pass-through, the configuration file, and two upstreams at once."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import aiohttp
import anthropic
import openai
import pytest

from sidecar.errors import ConfigError
from sidecar.protocols.anthropic_messages import AnthropicMessagesAdapter
from sidecar.protocols.openai_chat import OpenAIChatAdapter
from sidecar.protocols.openai_responses import OpenAIResponsesAdapter
from sidecar.server.route_config import load_route_config
from sidecar.server.routes import build_router, default_router
from tests.conftest import RunningUpstream, SidecarFactory
from tests.conftest_protocols import (
    NAME,
    PROMPT,
    RunningAnthropic,
    assert_no_pii,
    fake_anthropic_fixture,  # noqa: F401 (a fixture, found by its name)
)


def write_config(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "sidecar.yaml"
    path.write_text(text)
    return path


MIXED = """
version: 1
routes:
  - prefix: /anthropic
    strip_prefix: true
    upstreams: [{name: anthropic, url: "{anthropic}"}]
  - prefix: /v1/messages
    upstreams: [{name: anthropic, url: "{anthropic}"}]
  - prefix: /
    upstreams: [{name: openai, url: "{openai}/"}]
    passthrough: [/v1/models]
"""


def mixed_config(tmp_path: Path, anthropic_url: str, openai_url: str) -> Path:
    text = MIXED.replace("{anthropic}", anthropic_url).replace("{openai}", openai_url)
    return write_config(tmp_path, text)


def test_default_router_serves_every_dialect() -> None:
    router = default_router()
    cases = {
        "/v1/chat/completions": OpenAIChatAdapter,
        "/v1/responses": OpenAIResponsesAdapter,
        "/v1/messages": AnthropicMessagesAdapter,
        "/v1/messages/count_tokens": AnthropicMessagesAdapter,
    }
    for path, adapter in cases.items():
        match = router.match(path)
        assert match is not None, path
        assert isinstance(match.adapter, adapter), path
        assert match.path == path


def test_default_router_leaves_other_paths_without_adapter() -> None:
    match = default_router().match("/v1/files")
    assert match is not None
    assert match.adapter is None
    assert match.name == "unmatched"


@pytest.mark.parametrize(
    ("path", "prefix", "forwarded", "adapter"),
    [
        pytest.param("/anthropic/v1/messages", "/anthropic", "/v1/messages", AnthropicMessagesAdapter, id="stripped"),
        pytest.param("/v1/messages", "/v1/messages", "/v1/messages", AnthropicMessagesAdapter, id="longest-prefix"),
        pytest.param("/v1/chat/completions", "/", "/v1/chat/completions", OpenAIChatAdapter, id="root"),
        pytest.param("/anthropicx/v1/messages", "/", "/anthropicx/v1/messages", None, id="segment-boundary"),
        pytest.param("/anthropic", "/anthropic", "/", None, id="prefix-only"),
    ],
)
def test_config_router_matches(
    tmp_path: Path, path: str, prefix: str, forwarded: str, adapter: type | None
) -> None:
    router = build_router(load_route_config(mixed_config(tmp_path, "http://a.test", "http://o.test")))
    match = router.match(path)
    assert match is not None
    assert match.route.prefix == prefix
    assert match.path == forwarded
    if adapter is None:
        assert match.adapter is None
    else:
        assert isinstance(match.adapter, adapter)


def test_config_router_groups_and_names(tmp_path: Path) -> None:
    router = build_router(load_route_config(mixed_config(tmp_path, "http://a.test", "http://o.test")))
    match = router.match("/anthropic/v1/messages")
    assert match is not None
    assert match.route.group is not None
    assert match.route.group.primary.url == "http://a.test"
    assert match.name == "/anthropic/v1/messages"
    root = router.match("/v1/chat/completions")
    assert root is not None and root.route.group is not None
    assert root.route.group.primary.url == "http://o.test"
    assert "/anthropic/v1/chat/completions" in router.covered()


def test_passthrough_needs_listed_path_and_bodiless_method(tmp_path: Path) -> None:
    router = build_router(load_route_config(mixed_config(tmp_path, "http://a.test", "http://o.test")))
    listed = router.match("/v1/models")
    assert listed is not None
    assert listed.passes_through("GET") is True
    assert listed.passes_through("POST") is False
    unlisted = router.match("/v1/models/gpt-x")
    assert unlisted is not None
    assert unlisted.passes_through("GET") is False


def test_custom_endpoint_patterns(tmp_path: Path) -> None:
    config = write_config(tmp_path, """
version: 1
routes:
  - prefix: /azure
    strip_prefix: true
    upstreams: [{name: azure, url: "https://example.openai.azure.com"}]
    endpoints:
      /openai/deployments/*/chat/completions: openai.chat
""")
    router = build_router(load_route_config(config))
    match = router.match("/azure/openai/deployments/gpt4/chat/completions")
    assert match is not None
    assert isinstance(match.adapter, OpenAIChatAdapter)
    unmatched = router.match("/azure/v1/messages")
    assert unmatched is not None
    assert unmatched.adapter is None


@pytest.mark.parametrize(
    ("text", "message"),
    [
        pytest.param("routes: []\n", "version", id="missing-version"),
        pytest.param("version: 1\nroutes: []\n", "routes", id="no-routes"),
        pytest.param("version: 1\nroutes:\n  - prefix: v1\n    upstreams: [{name: a, url: 'http://a.test'}]\n",
                     "routes[0].prefix: must start with '/' (value: 'v1')", id="relative-prefix"),
        pytest.param("version: 1\nroutes:\n  - upstreams: [{name: a, url: 'ftp://a.test'}]\n",
                     "routes[0].upstreams[0].url", id="bad-url"),
        pytest.param("version: 1\nroutes:\n  - upstreams: []\n", "routes[0].upstreams", id="no-upstreams"),
        pytest.param("version: 1\nroutes:\n  - upstreams: [{name: a, url: 'http://a.test'}]\n"
                     "    endpoints: {/v1/x: openai.wizard}\n",
                     "adapter 'openai.wizard' of '/v1/x' is not one of", id="unknown-adapter"),
        pytest.param("version: 1\nroutes:\n  - upstreams: [{name: a, url: 'http://a.test'}]\n"
                     "    prefixx: /a\n", "routes[0].prefixx", id="unknown-field"),
        pytest.param("version: 1\nroutes:\n  - upstreams: [{name: a, url: 'http://a.test'}]\n"
                     "  - upstreams: [{name: b, url: 'http://b.test'}]\n",
                     "route prefixes must be unique, repeated: /", id="duplicate-prefix"),
        pytest.param("version: 1\nroutes: [\n", "invalid YAML at line", id="yaml-syntax"),
        pytest.param("- 1\n", "must be a YAML mapping", id="not-mapping"),
    ],
)
def test_config_errors_name_file_field_and_value(tmp_path: Path, text: str, message: str) -> None:
    path = write_config(tmp_path, text)
    with pytest.raises(ConfigError) as caught:
        load_route_config(path)
    assert str(caught.value).startswith(f"{path}: ")
    assert message in str(caught.value)


def test_config_error_hides_header_values(tmp_path: Path) -> None:
    path = write_config(tmp_path, "version: 1\nroutes:\n  - upstreams: [{name: a, url: 'http://a.test', "
                                  "extra_headers: {'x-gw-key': \"sk-secret\\n\"}}]\n")
    with pytest.raises(ConfigError) as caught:
        load_route_config(path)
    assert "sk-secret" not in str(caught.value)


def test_missing_config_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read the configuration file"):
        load_route_config(tmp_path / "absent.yaml")


def test_config_models_are_frozen(tmp_path: Path) -> None:
    config = load_route_config(mixed_config(tmp_path, "http://a.test", "http://o.test"))
    with pytest.raises(ValueError, match="frozen"):
        config.routes[0].prefix = "/x"  # type: ignore[misc]


# One sidecar in front of an Anthropic and an OpenAI fake at once.


async def test_two_upstreams_serve_their_dialects(
    tmp_path: Path,
    start_sidecar: SidecarFactory,
    fake_upstream: RunningUpstream,
    fake_anthropic: RunningAnthropic,
) -> None:
    config = mixed_config(tmp_path, fake_anthropic.url, fake_upstream.url)
    sidecar = await start_sidecar(config=str(config))
    claude = anthropic.AsyncAnthropic(base_url=sidecar.url + "/anthropic", api_key="sk-ant", max_retries=0)
    gpt = openai.AsyncOpenAI(base_url=sidecar.url + "/v1", api_key="sk-test", max_retries=0)
    messages: Any = [{"role": "user", "content": PROMPT}]

    mounted = await claude.messages.create(model="claude-x", max_tokens=10, messages=messages)
    direct = await anthropic.AsyncAnthropic(base_url=sidecar.url, api_key="sk-ant", max_retries=0).messages.create(
        model="claude-x", max_tokens=10, messages=messages)
    chat = await gpt.chat.completions.create(model="gpt-x", messages=messages)

    assert mounted.content[0].type == "text" and mounted.content[0].text == f"You said: {PROMPT}"
    assert direct.content[0].type == "text" and direct.content[0].text == f"You said: {PROMPT}"
    assert chat.choices[0].message.content == f"You said: {PROMPT}"
    assert [request.path for request in fake_anthropic.fake.requests] == ["/v1/messages", "/v1/messages"]
    assert [request.path for request in fake_upstream.fake.requests] == ["/v1/chat/completions"]
    assert_no_pii([r.body for r in [*fake_anthropic.fake.requests, *fake_upstream.fake.requests]])
    routes = [record["route"] for record in sidecar.audits]
    assert routes == ["/anthropic/v1/messages", "/v1/messages", "/v1/chat/completions"]


async def test_unlisted_routes_rejected_per_route(
    tmp_path: Path,
    start_sidecar: SidecarFactory,
    fake_upstream: RunningUpstream,
    fake_anthropic: RunningAnthropic,
) -> None:
    sidecar = await start_sidecar(config=str(mixed_config(tmp_path, fake_anthropic.url, fake_upstream.url)))
    async with aiohttp.ClientSession() as session:
        async with session.get(sidecar.url + "/v1/models") as listed:
            assert listed.status == 200
        async with session.get(sidecar.url + "/anthropic/v1/models/claude-fake") as unlisted:
            assert unlisted.status == 404
        async with session.post(sidecar.url + "/anthropic/v1/files", json={"name": NAME}) as with_body:
            body = await with_body.json()
            assert with_body.status == 404
    assert body["error"]["code"] == "route_not_covered"
    assert "/anthropic/v1/messages" in body["error"]["message"]
    assert [request.path for request in fake_upstream.fake.requests] == ["/v1/models"]
    assert fake_anthropic.fake.requests == []


async def test_query_string_kept_when_prefix_stripped(
    tmp_path: Path,
    start_sidecar: SidecarFactory,
    fake_upstream: RunningUpstream,
    fake_anthropic: RunningAnthropic,
) -> None:
    sidecar = await start_sidecar(config=str(mixed_config(tmp_path, fake_anthropic.url, fake_upstream.url)))
    async with aiohttp.ClientSession() as session:
        url = sidecar.url + "/anthropic/v1/messages?beta=true"
        body = {"model": "claude-x", "max_tokens": 5, "messages": [{"role": "user", "content": "hi"}]}
        async with session.post(url, json=body) as response:
            assert response.status == 200
            reply = json.loads(await response.read())
    assert reply["content"][0]["text"] == "You said: hi"
    assert fake_anthropic.fake.requests[-1].path == "/v1/messages"
    assert fake_anthropic.fake.query_strings[-1] == "beta=true"
