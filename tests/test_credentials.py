"""Tests of API key loading, file reloads and the credential headers of outgoing requests."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest
import structlog
from structlog.testing import capture_logs

from sidecar.errors import ConfigError
from sidecar.upstream.credentials import (
    ApiKey,
    EnvKeySource,
    FileKeySource,
    credential_header,
    key_source_for,
    load_key_sources,
    outgoing_headers,
    parse_key,
)
from sidecar.upstream.settings import UpstreamTarget

CANARY = "sk-canary-4e1b9d0c"
ROTATED = "sk-rotated-77aa21f3"


def write_key(path: Path, text: str, mtime_ns: int | None = None) -> None:
    path.write_text(text, encoding="utf-8")
    if mtime_ns is not None:
        os.utime(path, ns=(mtime_ns, mtime_ns))


class SecretVolume:
    """A directory laid out like a Kubernetes Secret volume, updated by a symlink swap."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.generation = 0
        self.key_path = root / "api-key"

    def publish(self, text: str) -> None:
        self.generation += 1
        version_dir = self.root / f"..2025_03_14_12_00_{self.generation:02d}"
        version_dir.mkdir()
        (version_dir / "api-key").write_text(text, encoding="utf-8")

        staged = self.root / "..data_tmp"
        staged.symlink_to(version_dir.name)
        old_target = (self.root / "..data").resolve() if (self.root / "..data").exists() else None
        os.replace(staged, self.root / "..data")
        if not self.key_path.is_symlink():
            self.key_path.symlink_to("..data/api-key")
        if old_target is not None:
            shutil.rmtree(old_target)


def test_api_key_repr_hides_value() -> None:
    key = ApiKey(CANARY)

    assert CANARY not in repr(key)
    assert CANARY not in str(key)
    assert CANARY not in f"{key}"
    assert CANARY not in repr({"key": key})
    assert key.reveal() == CANARY


def test_api_key_hidden_in_log_lines() -> None:
    with capture_logs() as logs:
        structlog.get_logger("test").info("loaded", key=ApiKey(CANARY))

    assert CANARY not in repr(logs)
    assert CANARY not in structlog.processors.JSONRenderer(default=repr)(None, "", logs[0])


def test_api_key_equality() -> None:
    assert ApiKey(CANARY) == ApiKey(CANARY)
    assert ApiKey(CANARY) != ApiKey(ROTATED)


@pytest.mark.parametrize(
    "text",
    [
        pytest.param(f"{CANARY}\n", id="trailing-newline"),
        pytest.param(f"  {CANARY}\r\n", id="spaces-and-crlf"),
        pytest.param(f"\t{CANARY}", id="leading-tab"),
    ],
)
def test_parse_key_strips_whitespace(text: str) -> None:
    assert parse_key(text, "test").reveal() == CANARY


@pytest.mark.parametrize(
    ("text", "message"),
    [
        pytest.param("", "empty", id="empty"),
        pytest.param(" \n", "empty", id="whitespace-only"),
        pytest.param(f"{CANARY} extra", "space", id="inner-space"),
        pytest.param(f"{CANARY}\nX-Injected: 1", "control character", id="header-injection"),
        pytest.param(f"{CANARY}é", "non-ASCII", id="non-ascii"),
    ],
)
def test_parse_key_rejects_invalid(text: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message) as caught:
        parse_key(text, "API key file /run/key")

    assert str(caught.value).startswith("API key file /run/key: ")
    assert CANARY not in str(caught.value)


def test_env_source_reads_variable() -> None:
    source = EnvKeySource("OPENAI_KEY", {"OPENAI_KEY": f"{CANARY}\n"})

    assert source.current().reveal() == CANARY


def test_env_source_missing_variable() -> None:
    with pytest.raises(ConfigError, match="environment variable OPENAI_KEY is not set"):
        EnvKeySource("OPENAI_KEY", {})


def test_env_source_empty_variable() -> None:
    with pytest.raises(ConfigError, match="environment variable OPENAI_KEY: the API key is empty"):
        EnvKeySource("OPENAI_KEY", {"OPENAI_KEY": ""})


def test_file_source_reads_key(tmp_path: Path) -> None:
    path = tmp_path / "api-key"
    write_key(path, f"{CANARY}\n")

    assert FileKeySource(path).current().reveal() == CANARY


def test_file_source_missing_file(tmp_path: Path) -> None:
    path = tmp_path / "absent"

    with pytest.raises(ConfigError, match=f"API key file {path}: cannot read the file"):
        FileKeySource(path)


def test_file_source_not_utf8(tmp_path: Path) -> None:
    path = tmp_path / "api-key"
    path.write_bytes(b"sk-\xff\xfe")

    with pytest.raises(ConfigError, match="not UTF-8 text") as caught:
        FileKeySource(path)

    assert caught.value.__cause__ is None
    assert caught.value.__suppress_context__ is True


def test_file_source_rereads_rewritten_file(tmp_path: Path) -> None:
    path = tmp_path / "api-key"
    write_key(path, CANARY, mtime_ns=1_000_000_000)
    source = FileKeySource(path)

    write_key(path, ROTATED, mtime_ns=2_000_000_000)

    assert source.current().reveal() == ROTATED


def test_file_source_same_size_new_mtime(tmp_path: Path) -> None:
    path = tmp_path / "api-key"
    write_key(path, "sk-aaaa", mtime_ns=1_000_000_000)
    source = FileKeySource(path)

    write_key(path, "sk-bbbb", mtime_ns=2_000_000_000)

    assert source.current().reveal() == "sk-bbbb"


def test_file_source_skips_read_when_unchanged(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "api-key"
    write_key(path, CANARY)
    source = FileKeySource(path)
    reads: list[Path] = []
    original_open = Path.open

    def counting_open(self: Path, *args: object, **kwargs: object) -> object:
        reads.append(self)
        return original_open(self, *args, **kwargs)  # type: ignore[call-overload]

    monkeypatch.setattr(Path, "open", counting_open)
    for _ in range(5):
        assert source.current().reveal() == CANARY

    assert reads == []


def test_file_source_follows_secret_symlink_swap(tmp_path: Path) -> None:
    volume = SecretVolume(tmp_path)
    volume.publish(f"{CANARY}\n")
    source = FileKeySource(volume.key_path)
    assert source.current().reveal() == CANARY

    with capture_logs() as logs:
        volume.publish(f"{ROTATED}\n")
        key = source.current()

    assert key.reveal() == ROTATED
    assert [entry["event"] for entry in logs] == ["API key file reloaded"]
    assert logs[0]["path"] == str(volume.key_path)


def test_file_source_keeps_key_when_file_deleted(tmp_path: Path) -> None:
    path = tmp_path / "api-key"
    write_key(path, CANARY)
    source = FileKeySource(path)
    path.unlink()

    with capture_logs() as logs:
        first = source.current()
        second = source.current()

    assert first.reveal() == CANARY
    assert second.reveal() == CANARY
    assert len(logs) == 1
    assert logs[0]["log_level"] == "warning"
    assert "No such file" in logs[0]["error"]


def test_file_source_keeps_key_when_new_key_invalid(tmp_path: Path) -> None:
    path = tmp_path / "api-key"
    write_key(path, CANARY, mtime_ns=1_000_000_000)
    source = FileKeySource(path)

    with capture_logs() as logs:
        write_key(path, "\n", mtime_ns=2_000_000_000)
        kept = source.current()
        source.current()
        write_key(path, ROTATED, mtime_ns=3_000_000_000)
        rotated = source.current()

    assert kept.reveal() == CANARY
    assert rotated.reveal() == ROTATED
    assert [entry["log_level"] for entry in logs] == ["warning", "info"]
    assert "the API key is empty" in logs[0]["error"]
    assert CANARY not in repr(logs)
    assert ROTATED not in repr(logs)


def test_key_source_for_forwarding_target() -> None:
    target = UpstreamTarget(name="a", url="https://a.example")

    assert key_source_for(target, {}) is None


def test_key_source_for_env_target() -> None:
    target = UpstreamTarget(name="a", url="https://a.example", api_key_env="A_KEY")

    source = key_source_for(target, {"A_KEY": CANARY})

    assert source is not None
    assert source.current().reveal() == CANARY


def test_load_key_sources_lists_every_problem(tmp_path: Path) -> None:
    targets = [
        UpstreamTarget(name="forward", url="https://a.example"),
        UpstreamTarget(name="env", url="https://b.example", api_key_env="MISSING_KEY"),
        UpstreamTarget(name="file", url="https://c.example", api_key_file=tmp_path / "absent"),
    ]

    with pytest.raises(ConfigError) as caught:
        load_key_sources(targets, {})

    lines = str(caught.value).splitlines()
    assert len(lines) == 2
    assert lines[0].startswith("upstream env: environment variable MISSING_KEY is not set")
    assert lines[1].startswith(f"upstream file: API key file {tmp_path / 'absent'}")


def test_load_key_sources_skips_forwarding_targets() -> None:
    targets = [
        UpstreamTarget(name="forward", url="https://a.example"),
        UpstreamTarget(name="env", url="https://b.example", api_key_env="B_KEY"),
    ]

    sources = load_key_sources(targets, {"B_KEY": CANARY})

    assert list(sources) == ["env"]


CLIENT_HEADERS = [
    ("Content-Type", "application/json"),
    ("AUTHORIZATION", "Bearer sk-client"),
    ("X-Api-Key", "sk-client"),
    ("api-key", "sk-client"),
    ("Accept", "text/event-stream"),
]


def test_headers_forward_client_key() -> None:
    target = UpstreamTarget(name="a", url="https://a.example")

    assert outgoing_headers(CLIENT_HEADERS, target, None) == CLIENT_HEADERS


def test_headers_inject_bearer_token() -> None:
    target = UpstreamTarget(name="a", url="https://a.example", api_key_env="K")

    headers = outgoing_headers(CLIENT_HEADERS, target, ApiKey(CANARY))

    assert headers == [
        ("Content-Type", "application/json"),
        ("Accept", "text/event-stream"),
        ("Authorization", f"Bearer {CANARY}"),
    ]


def test_headers_inject_x_api_key() -> None:
    target = UpstreamTarget(
        name="a", url="https://a.example", api_key_env="K", auth_header="x-api-key"
    )

    headers = outgoing_headers(CLIENT_HEADERS, target, ApiKey(CANARY))

    assert headers[-1] == ("x-api-key", CANARY)
    assert [name.lower() for name, _ in headers].count("x-api-key") == 1
    assert "authorization" not in [name.lower() for name, _ in headers]


def test_headers_extra_replace_client_values() -> None:
    target = UpstreamTarget.model_validate(
        {
            "name": "gateway",
            "url": "https://gw.example",
            "extra_headers": {"accept": "application/json", "cf-aig-authorization": "Bearer gw"},
        }
    )

    headers = outgoing_headers(CLIENT_HEADERS, target, None)

    assert ("Accept", "text/event-stream") not in headers
    assert headers[-2:] == [("accept", "application/json"), ("cf-aig-authorization", "Bearer gw")]
    assert ("AUTHORIZATION", "Bearer sk-client") in headers


@pytest.mark.parametrize(
    ("target", "key"),
    [
        pytest.param(UpstreamTarget(name="a", url="https://a.example"), ApiKey(CANARY), id="extra"),
        pytest.param(
            UpstreamTarget(name="a", url="https://a.example", api_key_env="K"), None, id="missing"
        ),
    ],
)
def test_headers_reject_key_mismatch(target: UpstreamTarget, key: ApiKey | None) -> None:
    with pytest.raises(ValueError, match="upstream a: pass a key exactly when"):
        outgoing_headers(CLIENT_HEADERS, target, key)


@pytest.mark.parametrize(
    ("auth_header", "expected"),
    [
        pytest.param("authorization", ("Authorization", f"Bearer {CANARY}"), id="bearer"),
        pytest.param("x-api-key", ("x-api-key", CANARY), id="anthropic"),
        pytest.param("api-key", ("api-key", CANARY), id="azure"),
    ],
)
def test_credential_header_forms(auth_header: str, expected: tuple[str, str]) -> None:
    assert credential_header(auth_header, ApiKey(CANARY)) == expected  # type: ignore[arg-type]
