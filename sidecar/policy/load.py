"""Loading of policy files: YAML parsing, validation with precise errors, and the run-time build.

Loading fails closed: a policy with any problem raises `PolicyError`, which
lists every problem as `FILE: FIELD.PATH: what is wrong (got VALUE)`.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from sidecar.errors import SidecarError
from sidecar.policy.catalog import Catalog, default_catalog
from sidecar.policy.checks import FileRecognizers, Problem, check_policy
from sidecar.policy.model import (
    ENTITY_TYPE_PATTERN,
    LANGUAGE_PATTERN,
    POLICY_NAME_PATTERN,
    CustomRecognizer,
    Policy,
    RecognizerFile,
)
from sidecar.policy.runtime import HashKeyError, attach_runtime, build_runtime

BUILTIN_POLICY_DIR = resources.files("sidecar") / "policies"

# Fields of a union that pydantic puts into error locations after the index.
_UNION_TAGS = {"allow_list": {"term", "regex"}, "recognizers": {"custom", "predefined"}}
_PATTERN_HINTS = {
    ENTITY_TYPE_PATTERN: "must be upper-case letters and underscores, such as EMPLOYEE_ID",
    POLICY_NAME_PATTERN: (
        "must start with a letter or digit and contain only letters, digits, '_', '.' and '-'"
    ),
    LANGUAGE_PATTERN: (
        "must be a two- or three-letter ISO 639 language code in lower case, such as en"
    ),
}


class PolicyError(SidecarError):
    """A policy file is missing, is not YAML, or does not validate.

    `problems` lists each problem on its own; `str()` joins them with newlines.
    """

    def __init__(self, problems: list[str]) -> None:
        super().__init__("\n".join(problems))
        self.problems = tuple(problems)


@dataclass(frozen=True)
class LoadedPolicy:
    """A loaded policy and every file its content depends on."""

    policy: Policy
    files: tuple[Path, ...]


def load_policy(path: str | Path, catalog: Catalog | None = None) -> Policy:
    """Load and validate the policy at `path`; raise `PolicyError` listing every problem."""
    return load_policy_files(path, catalog).policy


def load_policy_files(path: str | Path, catalog: Catalog | None = None) -> LoadedPolicy:
    """Load the policy at `path` and return it with the files it read.

    The files are the policy, its `recognizer_files` and its hash key file,
    which a reload watches for changes.
    """
    path = Path(path)
    raw = _read(path, str(path))
    return parse_policy_files(
        raw, source=str(path), base_dir=path.parent, catalog=catalog, path=path
    )


def parse_policy(
    raw: bytes, source: str, base_dir: Path | None = None, catalog: Catalog | None = None
) -> Policy:
    """Parse the bytes of a policy file; `source` names it in error messages.

    Relative `recognizer_files` and `hash.key_file` paths are resolved against
    `base_dir`, by default the current directory.
    """
    return parse_policy_files(raw, source, base_dir, catalog).policy


def parse_policy_files(
    raw: bytes,
    source: str,
    base_dir: Path | None = None,
    catalog: Catalog | None = None,
    path: Path | None = None,
) -> LoadedPolicy:
    document = _parse_yaml(raw, source, "a policy")
    if "content_hash" in document:
        raise PolicyError([f"{source}: content_hash: the sidecar sets this field; remove it"])
    try:
        policy = Policy.model_validate(document)
    except ValidationError as exc:
        raise PolicyError(describe_validation_error(source, exc)) from exc

    base_dir = base_dir if base_dir is not None else Path()
    files, file_bytes = _load_recognizer_files(policy, source, base_dir)
    problems = check_policy(policy, catalog or default_catalog(), files)
    if problems:
        raise PolicyError([problem.describe(source) for problem in problems])

    try:
        runtime = build_runtime(policy, [file.content for file in files], base_dir)
    except HashKeyError as exc:
        raise PolicyError([f"{source}: {exc}"]) from exc
    content_hash = _content_hash(raw, file_bytes)
    policy = attach_runtime(policy.model_copy(update={"content_hash": content_hash}), runtime)
    return LoadedPolicy(policy, _dependencies(policy, path, base_dir))


def _read(path: Path, source: str) -> bytes:
    try:
        return path.read_bytes()
    except OSError as exc:
        raise PolicyError([f"{source}: cannot read file: {exc.strerror}"]) from exc


class _UniqueKeyLoader(yaml.SafeLoader):
    """A safe YAML loader that rejects a mapping with the same key twice.

    PyYAML keeps the last of two equal keys, so a second `PERSON:` entry
    would silently replace the first.
    """


def _construct_unique_mapping(
    loader: _UniqueKeyLoader, node: yaml.MappingNode, deep: bool = False
) -> Any:
    seen: set[Any] = set()
    for key_node, _ in node.value:
        key = loader.construct_object(key_node, deep=deep)
        if isinstance(key, str | int | float | bool) and key in seen:
            raise yaml.constructor.ConstructorError(
                None, None, f"duplicate key {key!r}", key_node.start_mark
            )
        seen.add(key)
    return loader.construct_mapping(node, deep=deep)


_UniqueKeyLoader.add_constructor(
    yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_unique_mapping
)


def _parse_yaml(raw: bytes, source: str, kind_of_file: str) -> dict[str, Any]:
    try:
        document = yaml.load(raw, Loader=_UniqueKeyLoader)  # A SafeLoader subclass.
    except yaml.YAMLError as exc:
        raise PolicyError([f"{source}: invalid YAML{_yaml_position(exc)}"]) from exc
    if not isinstance(document, dict):
        kind = "empty" if document is None else type(document).__name__
        raise PolicyError([f"{source}: {kind_of_file} must be a YAML mapping, got {kind}"])
    return document


def _yaml_position(exc: yaml.YAMLError) -> str:
    mark = getattr(exc, "problem_mark", None)
    problem = getattr(exc, "problem", None) or str(exc)
    context = getattr(exc, "context", None)
    where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
    return f"{where}: {problem}" + (f" ({context})" if context else "")


def describe_validation_error(source: str, exc: ValidationError) -> list[str]:
    """Describe each pydantic error as `SOURCE: FIELD.PATH: message (got VALUE)`."""
    problems = []
    for error in exc.errors():
        loc = error["loc"]
        path = _field_path(loc)
        message = _error_message(error)
        problem = (
            Problem(path, message, error["input"]) if "input" in error else Problem(path, message)
        )
        problems.append(problem.describe(source))
    return problems


def _field_path(loc: tuple[int | str, ...]) -> str:
    parts: list[str] = []
    for position, part in enumerate(loc):
        if isinstance(part, int):
            parts.append(f"[{part}]")
            continue
        previous = loc[position - 2] if position >= 2 else None
        if isinstance(loc[position - 1], int) and part in _UNION_TAGS.get(str(previous), ()):
            continue
        if part == "[key]":
            continue
        parts.append(part if not parts else f".{part}")
    return "".join(parts) or "(top level)"


def _error_message(error: Any) -> str:
    message = str(error["msg"]).removeprefix("Value error, ")
    kind = error["type"]
    if kind == "string_pattern_mismatch":
        message = _PATTERN_HINTS.get(error["ctx"]["pattern"], message)
    if "[key]" in error["loc"]:
        message = f"invalid key: {message}"
    if kind == "extra_forbidden" and "predefined" in error["loc"]:
        message = (
            "a predefined recognizer takes only name, type, enabled, class_name, "
            "supported_language(s) and country_code, because every policy shares one instance of it"
        )
    elif kind == "extra_forbidden":
        message = "unknown field"
    return message


def _load_recognizer_files(
    policy: Policy, source: str, base_dir: Path
) -> tuple[list[FileRecognizers], list[bytes]]:
    files: list[FileRecognizers] = []
    contents: list[bytes] = []
    problems: list[str] = []
    for index, reference in enumerate(policy.recognizer_files):
        path = base_dir / reference
        try:
            raw = _read(path, f"{source}: recognizer_files[{index}]: {path}")
            document = _parse_yaml(raw, str(path), "a recognizer file")
            content = RecognizerFile.model_validate(document)
        except PolicyError as exc:
            problems += exc.problems
            continue
        except ValidationError as exc:
            problems += describe_validation_error(str(path), exc)
            continue
        files.append(FileRecognizers(reference, _apply_file_defaults(content)))
        contents.append(raw)
    if problems:
        raise PolicyError(problems)
    return files, contents


def _apply_file_defaults(content: RecognizerFile) -> RecognizerFile:
    """Give custom entries the file's languages and regex flags, as Presidio's loader does."""
    updated = []
    for spec in content.recognizers:
        if isinstance(spec, CustomRecognizer):
            changes: dict[str, Any] = {}
            if (
                spec.supported_language is None
                and spec.supported_languages is None
                and content.supported_languages
            ):
                changes["supported_languages"] = content.supported_languages
            if spec.global_regex_flags is None and content.global_regex_flags is not None:
                changes["global_regex_flags"] = content.global_regex_flags
            spec = spec.model_copy(update=changes)
        updated.append(spec)
    return content.model_copy(update={"recognizers": tuple(updated)})


def _content_hash(raw: bytes, file_bytes: list[bytes]) -> str:
    """Hash the policy bytes and, in order, the bytes of each recognizer file."""
    digest = hashlib.sha256(raw)
    for content in file_bytes:
        # The length prefix keeps two different splits of the same bytes apart.
        digest.update(len(content).to_bytes(8, "big"))
        digest.update(content)
    return "sha256:" + digest.hexdigest()


def _dependencies(policy: Policy, path: Path | None, base_dir: Path) -> tuple[Path, ...]:
    files = [path] if path is not None else []
    files += [base_dir / reference for reference in policy.recognizer_files]
    if policy.hash is not None and policy.hash.key_file is not None:
        files.append(base_dir / policy.hash.key_file)
    return tuple(files)
