"""The policies in force, their selection per request, and their atomic reload.

A store loads either one policy file or every `*.yaml`/`*.yml` file of a
directory. A reload validates the whole new set first and swaps it in with
one reference assignment, so a request sees either the old set or the new
one. A request keeps the `Policy` object it selected until it ends, and with
it the recognizers and hash key of that version. An invalid new version is
logged and ignored, and the previous set stays in force.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType

import regex

from sidecar.errors import RequestError
from sidecar.logs import get_logger
from sidecar.policy.catalog import Catalog
from sidecar.policy.load import PolicyError, load_policy_files
from sidecar.policy.model import POLICY_NAME_PATTERN, Policy
from sidecar.policy.reload import FileState, fingerprint, policy_files
from sidecar.policy.runtime import runtime_of

log = get_logger("sidecar.policy")

POLICY_HEADER = "X-PII-Policy"
_NAME = regex.compile(POLICY_NAME_PATTERN)


class UnknownPolicy(RequestError):
    """The request names a policy that is not loaded."""

    status = 400
    code = "unknown_policy"


class PolicyNotSelectable(RequestError):
    """The request names a loaded policy that clients may not pick."""

    status = 403
    code = "policy_not_selectable"


@dataclass(frozen=True)
class PolicySet:
    """Every loaded policy by name, the default's name, and the files they were read from."""

    policies: Mapping[str, Policy]
    default: str
    sources: Mapping[str, Path]
    watched: tuple[Path, ...] = ()

    @property
    def hashes(self) -> dict[str, str]:
        return {name: policy.content_hash for name, policy in self.policies.items()}

    def same_as(self, other: PolicySet) -> bool:
        """Return whether both sets have the same default, policy contents and hash keys."""
        return (
            self.default == other.default
            and self.hashes == other.hashes
            and all(
                runtime_of(policy).hash_key == runtime_of(other.policies[name]).hash_key
                for name, policy in self.policies.items()
            )
        )


@dataclass
class PolicyStore:
    """Loads, selects and reloads the policies of one process.

    `path` is a policy file, or a directory whose files are all loaded. In a
    directory, `default` names the default policy by its `name` field or its
    file name; for a single file the file is the default. `client_selectable`
    lists the names a request may pick with the `X-PII-Policy` header; when
    it is empty, clients cannot pick. `default` may also be a path to the
    file, as long as the file is in the directory. `route_policies` maps a route path to
    the policy of that route.
    """

    path: Path
    default: str | None = None
    client_selectable: frozenset[str] = frozenset()
    route_policies: Mapping[str, str] = field(default_factory=dict)
    catalog: Catalog | None = None
    on_reload: Callable[[bool], None] | None = None
    """Called with True after a reload swaps in a new set, False after one is rejected."""
    _set: PolicySet | None = field(default=None, init=False, repr=False)
    _seen: tuple[FileState, ...] = field(default=(), init=False, repr=False)
    _reload_lock: threading.Lock = field(default_factory=threading.Lock, init=False, repr=False)

    def __post_init__(self) -> None:
        self.path = Path(self.path)
        self.client_selectable = frozenset(self.client_selectable)

    @property
    def directory_mode(self) -> bool:
        return self.path.is_dir()

    def load(self) -> Policy:
        """Load every policy and return the default; raise `PolicyError` listing every problem."""
        watched = self._watch_list(None)
        seen = fingerprint(watched)
        policy_set = self._load_set()
        self._set, self._seen = policy_set, seen
        log.info("policies_loaded", default=policy_set.default, policies=policy_set.hashes)
        return self.current

    @property
    def loaded(self) -> bool:
        return self._set is not None

    @property
    def policy_set(self) -> PolicySet:
        if self._set is None:
            raise RuntimeError("no policy is loaded")
        return self._set

    @property
    def current(self) -> Policy:
        """The default policy."""
        policy_set = self.policy_set
        return policy_set.policies[policy_set.default]

    def select(self, requested: str | None, route: str | None = None) -> Policy:
        """Return a request's policy: the header's pick if allowed, else the route's or the default.

        A header that names the policy the request would get anyway is
        accepted even when clients cannot pick. Raise `UnknownPolicy` for a
        name that is not loaded and `PolicyNotSelectable` for one clients may
        not pick.
        """
        policy_set = self.policy_set
        fallback = policy_set.default
        if route is not None:
            fallback = self.route_policies.get(route, fallback)
        name = (requested or "").strip()
        if not name or name == fallback:
            return policy_set.policies[fallback]
        if name not in policy_set.policies:
            raise UnknownPolicy(f"{_quote(name)} is not a loaded policy; {self._choices()}")
        if name not in self.client_selectable:
            raise PolicyNotSelectable(f"clients may not pick policy {name!r}; {self._choices()}")
        return policy_set.policies[name]

    def _choices(self) -> str:
        if not self.client_selectable:
            return f"client selection is off, so remove the {POLICY_HEADER} header"
        return f"{POLICY_HEADER} may name: {', '.join(sorted(self.client_selectable))}"

    def reload_if_changed(self) -> bool:
        """Reload when a watched file changed; return whether a new set is in force.

        An invalid new version is logged once per change and the previous
        set stays in force.
        """
        with self._reload_lock:
            watched = self._watch_list(self._set)
            seen = fingerprint(watched)
            if seen == self._seen:
                return False
            self._seen = seen
            try:
                policy_set = self._load_set()
            except PolicyError as exc:
                log.error(
                    "policy_reload_rejected",
                    path=str(self.path),
                    problems=list(exc.problems),
                    kept=self._set.hashes if self._set else None,
                )
                self._report_reload(ok=False)
                return False
            if self._set is not None and policy_set.same_as(self._set):
                return False
            previous, self._set = self._set, policy_set
            log.info(
                "policies_reloaded",
                default=policy_set.default,
                policies=policy_set.hashes,
                previous=previous.hashes if previous else None,
            )
            self._report_reload(ok=True)
            return True

    def _report_reload(self, ok: bool) -> None:
        if self.on_reload is not None:
            self.on_reload(ok)

    def _watch_list(self, current: PolicySet | None) -> list[Path]:
        files = policy_files(self.path) if self.directory_mode else [self.path]
        extra = [path for path in (current.watched if current else ()) if path not in files]
        return [*files, *extra]

    def _load_set(self) -> PolicySet:
        files = policy_files(self.path) if self.directory_mode else [self.path]
        if not files:
            raise PolicyError(
                [f"{self.path}: the directory contains no *.yaml or *.yml policy file"]
            )
        policies: dict[str, Policy] = {}
        sources: dict[str, Path] = {}
        watched: list[Path] = []
        problems: list[str] = []
        for path in files:
            try:
                loaded = load_policy_files(path, self.catalog)
            except PolicyError as exc:
                problems += exc.problems
                continue
            name = loaded.policy.name
            if name in policies:
                problems.append(
                    f"{path}: name: policy {name!r} is already defined in {sources[name]}"
                )
                continue
            policies[name], sources[name] = loaded.policy, path
            watched += loaded.files
        if problems:
            raise PolicyError(problems)
        default = self._default_name(policies, sources)
        self._check_selection(policies)
        return PolicySet(
            MappingProxyType(policies), default, MappingProxyType(sources), tuple(watched)
        )

    def _default_name(self, policies: Mapping[str, Policy], sources: Mapping[str, Path]) -> str:
        if not self.directory_mode:
            return next(iter(policies))
        requested_default = self.default or "default"
        for name, path in sources.items():
            if requested_default in (name, path.stem) or Path(requested_default).name == path.name:
                return name
        raise PolicyError(
            [
                f"{self.path}: the default policy {requested_default!r} is neither the name "
                f"nor the file name of a policy here; loaded: {', '.join(sorted(policies))}"
            ]
        )

    def _check_selection(self, policies: Mapping[str, Policy]) -> None:
        loaded = ", ".join(sorted(policies))
        problems = [
            f"client-selectable policy {name!r} is not loaded from {self.path}; loaded: {loaded}"
            for name in sorted(self.client_selectable - set(policies))
        ]
        problems += [
            f"route {route}: policy {name!r} is not loaded from {self.path}; loaded: {loaded}"
            for route, name in sorted(self.route_policies.items())
            if name not in policies
        ]
        if problems:
            raise PolicyError(problems)


def _quote(name: str) -> str:
    """Quote a requested name in an error only when it is a plausible policy name."""
    if len(name) <= 64 and _NAME.fullmatch(name):
        return f"policy {name!r}"
    return "the requested policy"


def parse_names(value: str | Iterable[str]) -> frozenset[str]:
    """Parse a comma-separated list of policy names, as in PII_SIDECAR_CLIENT_POLICIES."""
    items = value.split(",") if isinstance(value, str) else value
    return frozenset(item.strip() for item in items if item.strip())
