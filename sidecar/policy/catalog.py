"""The names a policy may use: entity types, predefined recognizers and languages."""

from __future__ import annotations

from dataclasses import dataclass

from sidecar.policy.secrets import secret_recognizers


@dataclass(frozen=True)
class Catalog:
    """The detector's entity types, recognizer names and languages, checked against a policy."""

    entity_types: frozenset[str]
    """Entity types the shared recognizers and the NER model report."""

    recognizer_names: frozenset[str]
    """Names of the shared recognizers, which a policy may switch off."""

    languages: frozenset[str]
    """Languages the detector has an NLP model for."""

    secret_entity_types: frozenset[str]
    """Entity types of the secrets pack, available when a policy sets `secrets: true`."""


def default_catalog(model: str | None = None, language: str = "en") -> Catalog:
    """Return the catalog of a `Detector` for `model` (the default model if None).

    This does not load the spaCy model, so `policy check` stays fast.
    """
    from sidecar.detect.engine import DEFAULT_MODEL, shared_catalog

    entity_types, names = shared_catalog(model or DEFAULT_MODEL, language)
    secrets = frozenset(
        entity
        for recognizer in secret_recognizers([language])
        for entity in recognizer.supported_entities
    )
    return Catalog(entity_types, names, frozenset({language}), secrets)
