"""Loading of policy files: YAML parsing and validation with precise errors."""

from __future__ import annotations

import hashlib
from importlib import resources
from pathlib import Path

import yaml
from pydantic import ValidationError

from sidecar.errors import SidecarError
from sidecar.policy.model import Policy

BUILTIN_POLICY_DIR = resources.files("sidecar") / "policies"


class PolicyError(SidecarError):
    """A policy file is missing, is not YAML, or does not validate."""


def load_policy(path: str | Path) -> Policy:
    """Load and validate the policy at `path`.

    Raise `PolicyError` naming the file, the field path and the offending value.
    """
    path = Path(path)
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise PolicyError(f"{path}: cannot read policy file: {exc.strerror}") from exc
    return parse_policy(raw, source=str(path))


def parse_policy(raw: bytes, source: str) -> Policy:
    """Parse the bytes of a policy file; `source` names it in error messages."""
    try:
        document = yaml.safe_load(raw)
    except yaml.YAMLError as exc:
        raise PolicyError(f"{source}: invalid YAML: {exc}") from exc
    if not isinstance(document, dict):
        raise PolicyError(f"{source}: a policy must be a YAML mapping, got {type(document).__name__}")

    content_hash = "sha256:" + hashlib.sha256(raw).hexdigest()
    try:
        return Policy.model_validate({**document, "content_hash": content_hash})
    except ValidationError as exc:
        raise PolicyError(_describe(source, exc)) from exc


def _describe(source: str, exc: ValidationError) -> str:
    problems = []
    for error in exc.errors():
        field = ".".join(str(part) for part in error["loc"]) or "(top level)"
        problems.append(f"{source}: {field}: {error['msg']} (got {error.get('input')!r})")
    return "\n".join(problems)
