"""Tests of the upstream configuration models."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError

from sidecar.upstream.settings import (
    BreakerSettings,
    RetrySettings,
    TimeoutSettings,
    UpstreamGroup,
    UpstreamTarget,
)

GATEWAY_SECRET = "gw-canary-7f3a9c"


def error_fields(exc: ValidationError) -> list[str]:
    return [".".join(str(part) for part in error["loc"]) for error in exc.errors()]


def test_target_defaults_forward_client_key() -> None:
    target = UpstreamTarget(name="openai", url="https://api.openai.com/")

    assert target.url == "https://api.openai.com"
    assert target.injects_key is False
    assert target.auth_header == "authorization"
    assert target.extra_headers == {}


def test_target_with_key_file_injects() -> None:
    target = UpstreamTarget(
        name="anthropic",
        url="https://api.anthropic.com",
        api_key_file=Path("/var/run/secrets/anthropic/api-key"),
        auth_header="x-api-key",
    )

    assert target.injects_key is True
    assert target.auth_header == "x-api-key"


@pytest.mark.parametrize(
    ("rewrite", "requested", "expected"),
    [
        pytest.param(None, "gpt-4o", "gpt-4o", id="no-rewrite"),
        pytest.param("gpt-4o-mini", "gpt-4o", "gpt-4o-mini", id="single-model"),
        pytest.param({"gpt-4o": "gpt-4o-mini"}, "gpt-4o", "gpt-4o-mini", id="mapped"),
        pytest.param({"gpt-4o": "gpt-4o-mini"}, "o3", "o3", id="unmapped"),
    ],
)
def test_rewrite_model(rewrite: Any, requested: str, expected: str) -> None:
    target = UpstreamTarget(name="a", url="https://a.example", model_rewrite=rewrite)

    assert target.rewrite_model(requested) == expected


@pytest.mark.parametrize(
    ("fields", "field"),
    [
        pytest.param({"url": "api.openai.com"}, "url", id="no-scheme"),
        pytest.param({"url": "ftp://a.example"}, "url", id="ftp"),
        pytest.param({"url": "https://user:pw@a.example"}, "url", id="user-info"),
        pytest.param({"url": "https://a.example/v1?key=1"}, "url", id="query"),
        pytest.param({"url": "https://a.example:http"}, "url", id="bad-port"),
        pytest.param({"name": "has space"}, "name", id="bad-name"),
        pytest.param({"api_key_env": "1BAD"}, "api_key_env", id="bad-env-name"),
        pytest.param(
            {"api_key_env": "KEY", "api_key_file": "/k"}, "api_key_file", id="two-key-sources"
        ),
        pytest.param({"auth_header": "x-api-key"}, "auth_header", id="auth-header-without-key"),
        pytest.param(
            {"api_key_env": "KEY", "auth_header": "cookie"}, "auth_header", id="unknown-auth-header"
        ),
        pytest.param({"model_rewrite": ""}, "model_rewrite", id="empty-model"),
        pytest.param({"model_rewrite": {"gpt-4o": ""}}, "model_rewrite", id="empty-mapped-model"),
        pytest.param({"extra_headers": {"Authorization": "x"}}, "extra_headers", id="extra-auth"),
        pytest.param({"extra_headers": {"X-Api-Key": "x"}}, "extra_headers", id="extra-api-key"),
        pytest.param({"extra_headers": {"Host": "x"}}, "extra_headers", id="extra-host"),
        pytest.param({"extra_headers": {"bad name": "x"}}, "extra_headers", id="extra-bad-name"),
        pytest.param({"extra_headers": {"X-A": "a\r\nB: c"}}, "extra_headers", id="extra-crlf"),
        pytest.param({"timeout": 5}, "timeout", id="unknown-field"),
    ],
)
def test_target_rejects_invalid_field(fields: dict[str, Any], field: str) -> None:
    with pytest.raises(ValidationError) as caught:
        UpstreamTarget.model_validate({"name": "a", "url": "https://a.example", **fields})

    assert error_fields(caught.value) == [field]


def test_target_hides_extra_header_values() -> None:
    target = UpstreamTarget.model_validate(
        {
            "name": "gateway",
            "url": "https://gateway.example",
            "extra_headers": {"cf-aig-authorization": GATEWAY_SECRET},
        }
    )

    assert GATEWAY_SECRET not in repr(target)
    assert GATEWAY_SECRET not in str(target.model_dump())
    assert target.extra_headers["cf-aig-authorization"].get_secret_value() == GATEWAY_SECRET


def test_target_error_message_omits_header_values() -> None:
    raw = {
        "name": "gateway",
        "url": "https://gateway.example",
        "extra_headers": {"x-gateway-key": GATEWAY_SECRET, "Host": "other.example"},
    }

    with pytest.raises(ValidationError) as caught:
        UpstreamTarget.model_validate(raw)

    assert GATEWAY_SECRET not in str(caught.value)
    assert "'Host' is set by the HTTP client" in str(caught.value)


def test_target_is_frozen() -> None:
    target = UpstreamTarget(name="a", url="https://a.example")

    with pytest.raises(ValidationError):
        target.url = "https://b.example"


@pytest.mark.parametrize(
    ("fields", "field"),
    [
        pytest.param({"max_attempts": 0}, "max_attempts", id="zero-attempts"),
        pytest.param({"base_delay": -1}, "base_delay", id="negative-delay"),
        pytest.param({"deadline": 0}, "deadline", id="zero-deadline"),
        pytest.param({"jitter": True}, "jitter", id="unknown-field"),
    ],
)
def test_retry_settings_reject_invalid_field(fields: dict[str, Any], field: str) -> None:
    with pytest.raises(ValidationError) as caught:
        RetrySettings.model_validate(fields)

    assert error_fields(caught.value) == [field]


def test_retry_settings_reject_max_delay_below_base() -> None:
    with pytest.raises(ValidationError, match="max_delay"):
        RetrySettings(base_delay=2.0, max_delay=1.0)


def test_timeouts_reject_connect_above_total() -> None:
    with pytest.raises(ValidationError, match=r"connect \(20.0\) must not exceed total \(10.0\)"):
        TimeoutSettings(connect=20.0, total=10.0)


@pytest.mark.parametrize("field", ["connect", "first_byte", "idle", "total"])
def test_timeouts_reject_zero(field: str) -> None:
    with pytest.raises(ValidationError) as caught:
        TimeoutSettings.model_validate({field: 0})

    assert error_fields(caught.value) == [field]


def test_breaker_settings_reject_zero_threshold() -> None:
    with pytest.raises(ValidationError) as caught:
        BreakerSettings(failure_threshold=0)

    assert error_fields(caught.value) == ["failure_threshold"]


def test_group_orders_primary_and_fallbacks() -> None:
    group = UpstreamGroup.model_validate(
        {
            "upstreams": [
                {"name": "primary", "url": "https://a.example"},
                {"name": "cheaper", "url": "https://a.example", "model_rewrite": "small"},
                {"name": "gateway", "url": "https://gw.example/openai"},
            ],
            "retry": {"max_attempts": 2},
        }
    )

    assert group.primary.name == "primary"
    assert [target.name for target in group.fallbacks] == ["cheaper", "gateway"]
    assert group.retry.max_attempts == 2
    assert group.timeouts == TimeoutSettings()


def test_group_rejects_duplicate_names() -> None:
    with pytest.raises(ValidationError, match="repeated: a") as caught:
        UpstreamGroup.model_validate(
            {
                "upstreams": [
                    {"name": "a", "url": "https://a.example"},
                    {"name": "a", "url": "https://b.example"},
                ]
            }
        )

    assert error_fields(caught.value) == ["upstreams"]


def test_group_rejects_empty_list() -> None:
    with pytest.raises(ValidationError) as caught:
        UpstreamGroup.model_validate({"upstreams": []})

    assert error_fields(caught.value) == ["upstreams"]
