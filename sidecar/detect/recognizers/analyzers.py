"""Presidio analyzers for evaluation: the stock configuration and the tuned one.

The stock analyzer is Presidio's default: an `AnalyzerEngine` with the spaCy
model and every predefined English recognizer. Its email recognizer is swapped
for the offline one, which validates domains against the suffix list bundled
with tldextract instead of downloading it. The tuned analyzer removes the
recognizers named in `REPLACED_RECOGNIZERS` and adds `tuned_recognizers()` and
the secrets pack (`sidecar.policy.secrets`), as the sidecar's detector does.
"""

from __future__ import annotations

from collections.abc import Callable

from presidio_analyzer import AnalyzerEngine, RecognizerResult
from presidio_analyzer.nlp_engine import NlpEngine, NlpEngineProvider

from sidecar.detect.findings import Finding
from sidecar.detect.offline import OfflineEmailRecognizer
from sidecar.detect.recognizers import REPLACED_RECOGNIZERS, tuned_recognizers
from sidecar.policy.secrets import secret_recognizers

LANGUAGE = "en"
BASELINE_NAME = "presidio-default"
TUNED_NAME = "tuned"


def load_nlp_engine(model: str) -> NlpEngine:
    """Load the spaCy NLP engine for `model` (an installed package name or a directory)."""
    configuration = {
        "nlp_engine_name": "spacy",
        "models": [{"lang_code": LANGUAGE, "model_name": model}],
    }
    return NlpEngineProvider(nlp_configuration=configuration).create_engine()


def presidio_default_analyzer(nlp_engine: NlpEngine) -> AnalyzerEngine:
    """Return Presidio's default analyzer, with the offline email recognizer."""
    analyzer = AnalyzerEngine(nlp_engine=nlp_engine, supported_languages=[LANGUAGE])
    analyzer.registry.remove_recognizer("EmailRecognizer")
    analyzer.registry.add_recognizer(OfflineEmailRecognizer(supported_language=LANGUAGE))
    return analyzer


def tuned_analyzer(nlp_engine: NlpEngine) -> AnalyzerEngine:
    """Return the default analyzer with the tuned recognizers and the secrets pack."""
    analyzer = presidio_default_analyzer(nlp_engine)
    for name in REPLACED_RECOGNIZERS:
        analyzer.registry.remove_recognizer(name)
    for recognizer in [*tuned_recognizers(LANGUAGE), *secret_recognizers([LANGUAGE])]:
        analyzer.registry.add_recognizer(recognizer)
    return analyzer


def load_analyzers(model: str, baseline: bool) -> list[tuple[str, AnalyzerEngine]]:
    """Return the tuned analyzer, and Presidio's default after it when `baseline` is set."""
    nlp_engine = load_nlp_engine(model)
    analyzers = [(TUNED_NAME, tuned_analyzer(nlp_engine))]
    if baseline:
        analyzers.append((BASELINE_NAME, presidio_default_analyzer(nlp_engine)))
    return analyzers


def detect_with(analyzer: AnalyzerEngine) -> Callable[[list[str]], list[list[Finding]]]:
    """Wrap `analyzer` as a `detect(texts)` callable that keeps every score."""

    def detect(texts: list[str]) -> list[list[Finding]]:
        return [
            [_to_finding(result) for result in analyzer.analyze(text, language=LANGUAGE)]
            for text in texts
        ]

    return detect


def _to_finding(result: RecognizerResult) -> Finding:
    metadata = result.recognition_metadata or {}
    return Finding(
        entity_type=result.entity_type,
        start=result.start,
        end=result.end,
        score=float(result.score),
        recognizer=str(metadata.get(RecognizerResult.RECOGNIZER_NAME_KEY, "")),
    )
