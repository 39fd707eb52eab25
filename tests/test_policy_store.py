"""Tests of PolicyStore: directories, selection by header, and hot reload without a server."""

from __future__ import annotations

import os
import textwrap
from pathlib import Path

import pytest
from structlog.testing import capture_logs

from sidecar.policy.load import PolicyError
from sidecar.policy.model import Action
from sidecar.policy.runtime import runtime_of
from sidecar.policy.store import PolicyNotSelectable, PolicyStore, UnknownPolicy, parse_names


def policy_text(name: str, action: str = "placeholder", extra: str = "") -> str:
    return (
        textwrap.dedent(
            f"""\
        version: 1
        name: {name}
        entities:
          PERSON: {{action: {action}}}
        """
        )
        + extra
    )


def write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


@pytest.fixture
def policy_dir(tmp_path: Path) -> Path:
    directory = tmp_path / "policies"
    directory.mkdir()
    write(directory / "default.yaml", policy_text("default"))
    write(directory / "strict.yaml", policy_text("strict", "redact"))
    write(directory / "audit.yml", policy_text("audit-only", "allow"))
    return directory


def test_directory_loads_every_policy(policy_dir: Path) -> None:
    store = PolicyStore(policy_dir)

    default = store.load()

    assert default.name == "default"
    assert sorted(store.policy_set.policies) == ["audit-only", "default", "strict"]


@pytest.mark.parametrize("wanted", ["strict", "strict.yaml"])
def test_default_by_name_or_file(policy_dir: Path, wanted: str) -> None:
    store = PolicyStore(policy_dir, default=wanted)

    assert store.load().name == "strict"


def test_unknown_default_is_error(policy_dir: Path) -> None:
    store = PolicyStore(policy_dir, default="lenient")

    with pytest.raises(PolicyError, match="the default policy 'lenient' is neither the name nor"):
        store.load()


def test_duplicate_names_are_error(policy_dir: Path) -> None:
    write(policy_dir / "copy.yaml", policy_text("strict"))

    with pytest.raises(
        PolicyError, match=r"strict.yaml: name: policy 'strict' is already defined in .*copy.yaml"
    ):
        PolicyStore(policy_dir).load()


def test_one_invalid_file_fails_the_set(policy_dir: Path) -> None:
    write(policy_dir / "broken.yaml", policy_text("broken", "scramble"))

    with pytest.raises(PolicyError, match=r"broken.yaml: entities.PERSON.action"):
        PolicyStore(policy_dir).load()


def test_empty_directory_is_error(tmp_path: Path) -> None:
    with pytest.raises(PolicyError, match=r"contains no \*\.yaml or \*\.yml policy file"):
        PolicyStore(tmp_path).load()


def test_selectable_names_must_exist(policy_dir: Path) -> None:
    store = PolicyStore(policy_dir, client_selectable=frozenset({"strict", "lenient"}))

    with pytest.raises(PolicyError, match="client-selectable policy 'lenient' is not loaded"):
        store.load()


def test_route_policy_must_exist(policy_dir: Path) -> None:
    store = PolicyStore(policy_dir, route_policies={"/v1/chat/completions": "lenient"})

    with pytest.raises(
        PolicyError, match="route /v1/chat/completions: policy 'lenient' is not loaded"
    ):
        store.load()


def test_parse_names() -> None:
    assert parse_names(" strict, ,code-assistant ") == {"strict", "code-assistant"}
    assert parse_names("") == frozenset()


# Selection by header.


def test_no_header_selects_default(policy_dir: Path) -> None:
    store = PolicyStore(policy_dir, client_selectable=frozenset({"strict"}))
    store.load()

    assert store.select(None).name == "default"
    assert store.select("  ").name == "default"


def test_header_selects_allowed_policy(policy_dir: Path) -> None:
    store = PolicyStore(policy_dir, client_selectable=frozenset({"strict"}))
    store.load()

    assert store.select("strict").name == "strict"


def test_header_refused_when_selection_off(policy_dir: Path) -> None:
    store = PolicyStore(policy_dir)
    store.load()

    with pytest.raises(PolicyNotSelectable) as caught:
        store.select("strict")

    assert caught.value.status == 403
    assert str(caught.value) == (
        "clients may not pick policy 'strict'; client selection is off, so remove the "
        "X-PII-Policy header"
    )


def test_header_refused_when_not_listed(policy_dir: Path) -> None:
    store = PolicyStore(policy_dir, client_selectable=frozenset({"strict"}))
    store.load()

    with pytest.raises(PolicyNotSelectable, match="X-PII-Policy may name: strict"):
        store.select("audit-only")


def test_header_naming_fallback_is_accepted(policy_dir: Path) -> None:
    store = PolicyStore(policy_dir)
    store.load()

    assert store.select("default").name == "default"


def test_unknown_name_is_400(policy_dir: Path) -> None:
    store = PolicyStore(policy_dir, client_selectable=frozenset({"strict"}))
    store.load()

    with pytest.raises(UnknownPolicy) as caught:
        store.select("lenient")

    assert caught.value.status == 400
    assert (
        str(caught.value)
        == "policy 'lenient' is not a loaded policy; X-PII-Policy may name: strict"
    )


def test_odd_header_value_is_not_echoed(policy_dir: Path) -> None:
    store = PolicyStore(policy_dir)
    store.load()

    with pytest.raises(UnknownPolicy) as caught:
        store.select("<script>alert(1)</script>")

    assert "script" not in str(caught.value)


def test_route_policy_applies_without_header(policy_dir: Path) -> None:
    store = PolicyStore(policy_dir, route_policies={"/v1/messages": "strict"})
    store.load()

    assert store.select(None, route="/v1/messages").name == "strict"
    assert store.select(None, route="/v1/chat/completions").name == "default"


# Hot reload.


def test_unchanged_files_do_not_reload(policy_dir: Path) -> None:
    store = PolicyStore(policy_dir)
    store.load()
    first = store.policy_set

    assert store.reload_if_changed() is False
    assert store.policy_set is first


def test_changed_file_is_swapped_in(policy_dir: Path) -> None:
    store = PolicyStore(policy_dir)
    store.load()
    in_flight = store.select(None)

    write(policy_dir / "default.yaml", policy_text("default", "redact"))
    with capture_logs() as logs:
        reloaded = store.reload_if_changed()

    assert reloaded is True
    assert store.select(None).rule_for("PERSON").action is Action.REDACT
    assert in_flight.rule_for("PERSON").action is Action.PLACEHOLDER
    assert logs[-1]["event"] == "policies_reloaded"
    assert logs[-1]["policies"]["default"] == store.current.content_hash


def test_invalid_change_keeps_previous(policy_dir: Path) -> None:
    store = PolicyStore(policy_dir)
    store.load()
    before = store.policy_set

    write(policy_dir / "default.yaml", policy_text("default", "scramble"))
    with capture_logs() as logs:
        reloaded = store.reload_if_changed()

    assert reloaded is False
    assert store.policy_set is before
    assert logs[-1]["event"] == "policy_reload_rejected"
    assert logs[-1]["log_level"] == "error"
    assert "entities.PERSON.action" in logs[-1]["problems"][0]


def test_invalid_change_is_logged_once(policy_dir: Path) -> None:
    store = PolicyStore(policy_dir)
    store.load()
    write(policy_dir / "default.yaml", policy_text("default", "scramble"))

    with capture_logs() as logs:
        store.reload_if_changed()
        store.reload_if_changed()

    assert [entry["event"] for entry in logs] == ["policy_reload_rejected"]


def test_fixed_file_after_rejection_reloads(policy_dir: Path) -> None:
    store = PolicyStore(policy_dir)
    store.load()
    write(policy_dir / "default.yaml", policy_text("default", "scramble"))
    store.reload_if_changed()

    write(policy_dir / "default.yaml", policy_text("default", "mask"))

    assert store.reload_if_changed() is True
    assert store.current.rule_for("PERSON").action is Action.MASK


def test_added_file_is_loaded(policy_dir: Path) -> None:
    store = PolicyStore(policy_dir)
    store.load()

    write(policy_dir / "extra.yaml", policy_text("extra"))

    assert store.reload_if_changed() is True
    assert "extra" in store.policy_set.policies


def test_removed_default_is_rejected(policy_dir: Path) -> None:
    store = PolicyStore(policy_dir)
    store.load()

    (policy_dir / "default.yaml").unlink()

    assert store.reload_if_changed() is False
    assert store.current.name == "default"


def test_single_file_reloads(tmp_path: Path) -> None:
    path = write(tmp_path / "only.yaml", policy_text("only"))
    store = PolicyStore(path)
    store.load()

    write(path, policy_text("only", "block"))

    assert store.reload_if_changed() is True
    assert store.current.rule_for("PERSON").action is Action.BLOCK


def test_recognizer_file_change_reloads(tmp_path: Path) -> None:
    recognizers = write(
        tmp_path / "recognizers.yaml",
        "recognizers:\n  - {name: projects, supported_entity: PROJECT, deny_list: [Bluebird]}\n",
    )
    path = write(
        tmp_path / "p.yaml", policy_text("p", extra="recognizer_files: [recognizers.yaml]\n")
    )
    store = PolicyStore(path)
    store.load()
    store.reload_if_changed()
    before = store.current.content_hash

    write(
        recognizers,
        "recognizers:\n  - {name: projects, supported_entity: PROJECT, deny_list: [Nightingale]}\n",
    )

    assert store.reload_if_changed() is True
    assert store.current.content_hash != before


def test_hash_key_rotation_reloads(tmp_path: Path) -> None:
    key_file = write(tmp_path / "hash.key", "a" * 32)
    extra = "hash: {key_file: hash.key}\n"
    path = write(tmp_path / "p.yaml", policy_text("p", "hash", extra))
    store = PolicyStore(path)
    store.load()
    store.reload_if_changed()

    write(key_file, "b" * 32)

    assert store.reload_if_changed() is True
    assert runtime_of(store.current).hash_key == b"b" * 32


def configmap_volume(mount: Path, version: str, files: dict[str, str]) -> None:
    """Lay out or update `mount` the way the kubelet writes a ConfigMap volume.

    Each version is a timestamped directory. `..data` is a symlink to the
    current one, replaced atomically by renaming a new symlink over it, and
    every visible file is a symlink through `..data`.
    """
    mount.mkdir(exist_ok=True)
    target = mount / f"..{version}"
    target.mkdir()
    for name, text in files.items():
        (target / name).write_text(text)
    staging = mount / "..data_tmp"
    staging.symlink_to(target.name)
    os.replace(staging, mount / "..data")
    for name in files:
        link = mount / name
        if not link.is_symlink():
            link.symlink_to(Path("..data") / name)


def test_configmap_symlink_swap_reloads(tmp_path: Path) -> None:
    mount = tmp_path / "configmap"
    configmap_volume(mount, "2024_01_01_00_00_00.1", {"default.yaml": policy_text("default")})
    store = PolicyStore(mount)
    store.load()

    configmap_volume(
        mount, "2024_01_01_00_05_00.2", {"default.yaml": policy_text("default", "redact")}
    )

    assert store.reload_if_changed() is True
    assert store.current.rule_for("PERSON").action is Action.REDACT
    assert sorted(store.policy_set.policies) == ["default"]


def test_configmap_swap_to_invalid_keeps_previous(tmp_path: Path) -> None:
    mount = tmp_path / "configmap"
    configmap_volume(mount, "2024_01_01_00_00_00.1", {"default.yaml": policy_text("default")})
    store = PolicyStore(mount)
    store.load()

    configmap_volume(mount, "2024_01_01_00_05_00.2", {"default.yaml": "version: 1\nname: [\n"})

    assert store.reload_if_changed() is False
    assert store.current.rule_for("PERSON").action is Action.PLACEHOLDER
