"""Checks of a validated policy that span several fields or need the detector's catalog.

Each check returns `Problem`s instead of raising, so `policy check` can list
every problem of a file at once.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass

from sidecar.policy.catalog import Catalog
from sidecar.policy.model import (
    Action,
    AllowRegex,
    AllowTerm,
    CustomRecognizer,
    Policy,
    PredefinedRecognizer,
    RecognizerFile,
)
from sidecar.policy.runtime import collect_recognizers

_NO_VALUE = object()


@dataclass(frozen=True)
class Problem:
    """One reason a policy is invalid: where it is, what is wrong, and the value found there."""

    path: str
    message: str
    value: object = _NO_VALUE

    def describe(self, source: str) -> str:
        text = f"{source}: {self.path}: {self.message}"
        if self.value is not _NO_VALUE:
            text += f" (got {short_repr(self.value)})"
        return text


def short_repr(value: object, limit: int = 80) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


@dataclass(frozen=True)
class FileRecognizers:
    """A recognizer file as the policy names it, with its parsed content."""

    reference: str
    content: RecognizerFile


def check_policy(
    policy: Policy, catalog: Catalog, files: Sequence[FileRecognizers] = ()
) -> list[Problem]:
    """Return every problem of `policy` that field validation cannot see."""
    problems = list(_check_languages(policy, catalog))
    problems += _check_recognizers(policy, catalog, files)
    problems += _check_entities(policy, catalog, [file.content for file in files])
    problems += _check_action_settings(policy)
    problems += _check_deny_list(policy, [file.content for file in files])
    if not policy.scope.scans_anything:
        problems.append(
            Problem(
                "scope", "every part of the request is switched off, so nothing would be scanned"
            )
        )
    return problems


def _check_languages(policy: Policy, catalog: Catalog) -> Iterator[Problem]:
    supported = ", ".join(sorted(catalog.languages))
    if not policy.languages:
        yield Problem(
            "languages", f"list at least one language; the detector supports: {supported}"
        )
    for index, language in enumerate(policy.languages):
        if language not in catalog.languages:
            message = f"the detector has no NLP model for this language; it supports: {supported}"
            yield Problem(f"languages[{index}]", message, language)


def _recognizer_entries(
    policy: Policy, files: Sequence[FileRecognizers]
) -> Iterator[tuple[str, CustomRecognizer | PredefinedRecognizer | None]]:
    """Yield each recognizer entry with its path; `None` stands for a file without entries."""
    for index, spec in enumerate(policy.recognizers):
        yield f"recognizers[{index}]", spec
    for file in files:
        if not file.content.recognizers:
            yield f"recognizer_files[{file.reference}].recognizers", None
        for index, spec in enumerate(file.content.recognizers):
            yield f"recognizer_files[{file.reference}].recognizers[{index}]", spec


def _check_recognizers(
    policy: Policy, catalog: Catalog, files: Sequence[FileRecognizers]
) -> Iterator[Problem]:
    seen: dict[str, str] = {}
    for path, spec in _recognizer_entries(policy, files):
        if spec is None:
            yield Problem(path, "the file lists no recognizers")
            continue
        if spec.name in seen:
            yield Problem(
                f"{path}.name", f"the name is already used by {seen[spec.name]}", spec.name
            )
        seen.setdefault(spec.name, path)
        if isinstance(spec, PredefinedRecognizer):
            yield from _check_predefined(path, spec, catalog)
        else:
            yield from _check_custom(path, spec)


def _check_predefined(path: str, spec: PredefinedRecognizer, catalog: Catalog) -> Iterator[Problem]:
    if spec.recognizer_name not in catalog.recognizer_names:
        known = ", ".join(sorted(catalog.recognizer_names))
        field = "class_name" if spec.class_name else "name"
        message = f"unknown predefined recognizer; the detector has: {known}"
        yield Problem(f"{path}.{field}", message, spec.recognizer_name)


def _check_custom(path: str, spec: CustomRecognizer) -> Iterator[Problem]:
    if spec.supported_entity is not None and spec.supported_entities is not None:
        yield Problem(path, "set supported_entity or supported_entities, not both")
    elif spec.entity_type is None:
        yield Problem(path, "missing supported_entity: name the entity type the recognizer reports")
    elif spec.supported_entities is not None and len(spec.supported_entities) > 1:
        message = (
            "a pattern recognizer reports one entity type; list one, or add a recognizer per type"
        )
        yield Problem(f"{path}.supported_entities", message, list(spec.supported_entities))
    if spec.supported_language is not None and spec.supported_languages is not None:
        yield Problem(path, "set supported_language or supported_languages, not both")
    if not spec.patterns and not spec.deny_list:
        yield Problem(path, "a recognizer needs patterns, a deny_list, or both")
    allowed_keys = {"default", spec.entity_type}
    for key in spec.score_thresholds or {}:
        if key not in allowed_keys:
            message = f"keys are 'default' or the recognizer's entity type {spec.entity_type}"
            yield Problem(f"{path}.score_thresholds", message, key)


def _check_entities(
    policy: Policy, catalog: Catalog, files: Sequence[RecognizerFile]
) -> Iterator[Problem]:
    custom = collect_recognizers(policy, files).custom
    reported = set(catalog.entity_types) | set(policy.deny_list)
    if policy.secrets:
        reported |= catalog.secret_entity_types
    idle: dict[str, str] = {}
    for spec in custom:
        if spec.entity_type is None:
            continue
        languages = spec.languages(policy.languages)
        if set(languages) & set(policy.languages):
            reported.add(spec.entity_type)
        else:
            idle[spec.entity_type] = f"{spec.name} ({', '.join(sorted(languages))})"
    for entity_type in policy.entities:
        if entity_type in reported:
            continue
        yield Problem(
            f"entities.{entity_type}", _unknown_type_message(entity_type, catalog, idle, reported)
        )


def _unknown_type_message(
    entity_type: str, catalog: Catalog, idle: dict[str, str], reported: set[str]
) -> str:
    if entity_type in catalog.secret_entity_types:
        return "the secrets pack reports this type, but the policy switches it off (secrets: false)"
    if entity_type in idle:
        return (
            f"only recognizer {idle[entity_type]} reports this type, in languages the policy "
            "does not list under languages"
        )
    known = ", ".join(sorted(reported))
    return (
        "unknown entity type: neither the detector nor the policy's recognizers or deny_list "
        f"report it; known types: {known}"
    )


def _check_action_settings(policy: Policy) -> Iterator[Problem]:
    settings_actions = {"redact_text": Action.REDACT, "mask": Action.MASK, "hash": Action.HASH}
    for entity_type, rule in policy.entities.items():
        for field, action in settings_actions.items():
            if getattr(rule, field) is not None and rule.action is not action:
                message = (
                    f"{field} applies only to action {action.value}, "
                    f"but the action is {rule.action.value}"
                )
                yield Problem(f"entities.{entity_type}.{field}", message)


def _check_deny_list(policy: Policy, files: Sequence[RecognizerFile]) -> Iterator[Problem]:
    for entity_type, terms in policy.deny_list.items():
        if not terms:
            yield Problem(f"deny_list.{entity_type}", "lists no terms")
        for index, term in enumerate(terms):
            shield = _allow_entry_shielding(policy, term)
            if shield is not None:
                yield Problem(f"deny_list.{entity_type}[{index}]", _conflict_message(shield), term)
    for index, spec in enumerate(policy.recognizers):
        if not isinstance(spec, CustomRecognizer):
            continue
        for term_index, term in enumerate(spec.deny_list):
            shield = _allow_entry_shielding(policy, term)
            if shield is not None:
                path = f"recognizers[{index}].deny_list[{term_index}]"
                yield Problem(path, _conflict_message(shield), term)


def _conflict_message(shield: str) -> str:
    return f"the term is also allowed by {shield}, so it would be both always and never replaced"


def _allow_entry_shielding(policy: Policy, term: str) -> str | None:
    """Return the allow-list entry that would shield a deny-list `term`, if any.

    Deny lists match without regard to case, so a term conflicts with an
    allow-list term that equals it in any case.
    """
    for index, entry in enumerate(policy.allow_list):
        if isinstance(entry, AllowTerm) and entry.term.casefold() == term.casefold():
            return f"allow_list[{index}]"
        if isinstance(entry, AllowRegex) and entry.compiled().fullmatch(term):
            return f"allow_list[{index}]"
    return None
