"""What a policy needs at run time: its Presidio recognizers, allow list matcher and hash key.

The loader builds a `PolicyRuntime` once per policy version and attaches it to
the `Policy`. So a request that took a policy also uses the recognizers and key
of that exact version, even while a reload swaps in a new one.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import regex
from presidio_analyzer import EntityRecognizer, Pattern, PatternRecognizer

from sidecar.detect.findings import Finding
from sidecar.errors import ConfigError, SidecarError
from sidecar.policy.checksums import CHECKSUMS
from sidecar.policy.model import (
    PRESIDIO_REGEX_FLAGS,
    Action,
    AllowRegex,
    AllowTerm,
    CustomRecognizer,
    HashSettings,
    Policy,
    PredefinedRecognizer,
    RecognizerFile,
    Validator,
)
from sidecar.policy.secrets import secret_recognizers
from sidecar.redact.operators import load_hash_key


class HashKeyError(SidecarError):
    """The HMAC key of a policy that uses `hash` is missing or too short."""


@dataclass(frozen=True)
class LoadedRecognizers:
    """The recognizer entries of a policy and of its recognizer files, in order."""

    custom: tuple[CustomRecognizer, ...] = ()
    disabled: frozenset[str] = frozenset()


def collect_recognizers(policy: Policy, files: Sequence[RecognizerFile] = ()) -> LoadedRecognizers:
    """Collect the enabled custom recognizers and the names of disabled predefined ones."""
    custom: list[CustomRecognizer] = []
    disabled: set[str] = set()
    specs = [*policy.recognizers, *(spec for file in files for spec in file.recognizers)]
    for spec in specs:
        if isinstance(spec, PredefinedRecognizer):
            if not spec.enabled:
                disabled.add(spec.recognizer_name)
        elif spec.enabled:
            custom.append(spec)
    return LoadedRecognizers(tuple(custom), frozenset(disabled))


class AllowList:
    """Decides which findings the policy's `allow_list` leaves alone.

    A term shields every finding that lies inside one of its occurrences, so
    allowing `support@example.com` also shields the `example.com` URL found
    inside it. A regex shields a finding only when it matches the finding's
    whole value. It is not searched over the text, because a broad pattern
    such as `.*@example` would then shield every finding before it on the line.
    """

    def __init__(self, terms: Sequence[AllowTerm], regexes: Sequence[AllowRegex]) -> None:
        self._terms = [
            regex.compile(regex.escape(term.term), regex.IGNORECASE if term.ignore_case else 0)
            for term in terms
        ]
        self._regexes = [entry.compiled() for entry in regexes]

    def __bool__(self) -> bool:
        return bool(self._terms or self._regexes)

    def filter(self, text: str, findings: Sequence[Finding]) -> list[Finding]:
        """Return the findings in `text` that no allow-list entry shields."""
        if not self or not findings:
            return list(findings)
        spans = [match.span() for pattern in self._terms for match in pattern.finditer(text)]
        return [finding for finding in findings if not self._shields(text, finding, spans)]

    def _shields(self, text: str, finding: Finding, spans: Sequence[tuple[int, int]]) -> bool:
        if any(start <= finding.start and finding.end <= end for start, end in spans):
            return True
        value = text[finding.start : finding.end]
        return any(pattern.fullmatch(value) for pattern in self._regexes)


@dataclass(frozen=True)
class PolicyRuntime:
    """The parts of a policy that are built from its fields and used per request."""

    recognizers: tuple[EntityRecognizer, ...]
    disabled_recognizers: frozenset[str]
    allow_list: AllowList
    hash_key: bytes | None = field(default=None, repr=False)


def build_runtime(
    policy: Policy, files: Sequence[RecognizerFile] = (), base_dir: Path | None = None
) -> PolicyRuntime:
    """Build the recognizers, allow list and hash key of `policy`.

    Raise `HashKeyError` if the policy uses `hash` and its key cannot be read.
    """
    loaded = collect_recognizers(policy, files)
    recognizers: list[EntityRecognizer] = []
    for spec in loaded.custom:
        recognizers += custom_recognizers(spec, policy.languages)
    recognizers += deny_list_recognizers(policy)
    if policy.secrets:
        recognizers += secret_recognizers(policy.languages)

    terms = [entry for entry in policy.allow_list if isinstance(entry, AllowTerm)]
    regexes = [entry for entry in policy.allow_list if isinstance(entry, AllowRegex)]
    hash_key = None
    # The key is read only when an entity uses it, so a policy can keep the
    # hash settings while no rule hashes.
    if Action.HASH in policy.actions:
        hash_key = read_hash_key(policy.hash or HashSettings(), base_dir)
    return PolicyRuntime(tuple(recognizers), loaded.disabled, AllowList(terms, regexes), hash_key)


def runtime_of(policy: Policy) -> PolicyRuntime:
    """Return the runtime the loader attached, building it now for a policy made in code."""
    runtime = policy._runtime
    if runtime is None:
        if policy.recognizer_files:
            raise SidecarError(
                f"policy {policy.name!r} names recognizer_files, so it must be loaded from its "
                "file with sidecar.policy.load.load_policy"
            )
        runtime = build_runtime(policy)
        policy._runtime = runtime
    assert isinstance(runtime, PolicyRuntime)
    return runtime


def attach_runtime(policy: Policy, runtime: PolicyRuntime) -> Policy:
    policy._runtime = runtime
    return policy


class ValidatedPatternRecognizer(PatternRecognizer):
    """A Presidio pattern recognizer whose matches must pass a named checksum, if one is set."""

    def __init__(self, validator: Validator | None, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._check = CHECKSUMS[validator] if validator is not None else None

    def validate_result(self, pattern_text: str) -> bool | None:
        # None leaves the pattern's score as it is, as in PatternRecognizer.
        return self._check(pattern_text) if self._check is not None else None


def custom_recognizers(
    spec: CustomRecognizer, policy_languages: Sequence[str]
) -> list[EntityRecognizer]:
    """Build one Presidio recognizer per language that both the entry and the policy use.

    Languages the policy does not list are skipped, as Presidio skips
    recognizers of languages its analyzer does not support.
    """
    flags = PRESIDIO_REGEX_FLAGS if spec.global_regex_flags is None else spec.global_regex_flags
    built: list[EntityRecognizer] = []
    for language, context in spec.languages(tuple(policy_languages)).items():
        if language not in policy_languages:
            continue
        recognizer = ValidatedPatternRecognizer(
            spec.validator,
            supported_entity=spec.entity_type or "",
            name=spec.name,
            supported_language=language,
            patterns=[Pattern(p.name, p.regex, p.score) for p in spec.patterns],
            deny_list=list(spec.deny_list) or None,
            context=list(context) or None,
            deny_list_score=spec.deny_list_score,
            global_regex_flags=flags,
            version=spec.version or "0.0.1",
        )
        if spec.score_thresholds is not None:
            recognizer.score_thresholds = dict(spec.score_thresholds)
        built.append(recognizer)
    return built


def deny_list_recognizers(policy: Policy) -> list[EntityRecognizer]:
    """Build a recognizer per `deny_list` entity type and language; every match scores 1.0."""
    return [
        PatternRecognizer(
            supported_entity=entity_type,
            name=f"deny_list:{entity_type}",
            supported_language=language,
            deny_list=list(terms),
            deny_list_score=1.0,
        )
        for entity_type, terms in policy.deny_list.items()
        for language in policy.languages
    ]


def read_hash_key(settings: HashSettings, base_dir: Path | None) -> bytes:
    """Read the HMAC key that the settings name; raise `HashKeyError` if it is missing or short.

    The key itself never appears in a message.
    """
    try:
        return load_hash_key(settings.options(base_dir))
    except ConfigError as exc:
        raise HashKeyError(f"hash: {exc}") from exc
