"""Tuned recognizers for numbers: phone, card, SSN, NHS and the US identifiers.

Each one drops matches that are part of a longer code token (see `code.is_glued`)
and bare Unix timestamps, so a timestamp is never split into a phone number and
a remainder.
"""

from __future__ import annotations

import re
from typing import Any, ClassVar

import phonenumbers
from presidio_analyzer import AnalysisExplanation, EntityRecognizer, Pattern, RecognizerResult
from presidio_analyzer.nlp_engine import NlpArtifacts
from presidio_analyzer.predefined_recognizers import (
    CreditCardRecognizer,
    MedicalLicenseRecognizer,
    NhsRecognizer,
    UsBankRecognizer,
    UsItinRecognizer,
    UsLicenseRecognizer,
    UsPassportRecognizer,
    UsSsnRecognizer,
)

from sidecar.detect.recognizers.code import (
    is_epoch_timestamp,
    is_glued,
    overlaps_any,
    timestamp_spans,
)

PHONE_REGIONS = ("US", "GB", "DE", "FR", "IN", "AU", "CA", "BR", "IL", "ES", "IT", "NL")
PHONE_NAME = "TunedPhoneRecognizer"
PHONE_SCORE = 0.7
# A phone number written as bare digits could as well be an id or a counter.
BARE_DIGITS_PHONE_SCORE = 0.4
PHONE_SEPARATORS = frozenset(" -.()+/")
SSN_CONTEXT_SCORE = 0.85
# 3-2-4 digit groups are the SSN layout; no national phone plan writes numbers so.
_SSN_SHAPE = re.compile(r"\d{3}([- ])\d{2}\1\d{4}")


class CodeAwareMixin:
    """Drops results inside longer tokens, bare epoch timestamps and parts of ISO timestamps."""

    def analyze(self, text: str, entities: list[str], *args: Any, **kwargs: Any) -> list[Any]:
        # The class this mixin precedes in the MRO provides analyze().
        results: list[RecognizerResult] = super().analyze(  # type: ignore[misc]
            text, entities, *args, **kwargs
        )
        return [r for r in results if self._keep(text, r)]

    def _keep(self, text: str, result: RecognizerResult) -> bool:
        value = text[result.start : result.end]
        if is_glued(text, result.start, result.end) or is_epoch_timestamp(value):
            return False
        return not overlaps_any(result.start, result.end, timestamp_spans(text))


class TunedPhoneRecognizer(EntityRecognizer):
    """Phone numbers found by python-phonenumbers, scored by how they are written.

    A number with separators, brackets or a leading `+` scores 0.7, bare digits
    score 0.4 and rely on context words ("phone", "call") to pass a 0.5
    threshold. Matches inside code tokens, dotted versions and IP addresses,
    dates, ISO timestamps, epoch timestamps and SSN-shaped numbers are dropped.
    """

    CONTEXT: ClassVar[list[str]] = [
        "phone",
        "telephone",
        "cell",
        "mobile",
        "call",
        "tel",
        "fax",
        "sms",
        "whatsapp",
    ]

    def __init__(self, supported_language: str = "en") -> None:
        super().__init__(
            supported_entities=["PHONE_NUMBER"],
            supported_language=supported_language,
            context=self.CONTEXT,
            name=PHONE_NAME,
        )

    def load(self) -> None:
        pass

    def analyze(
        self, text: str, entities: list[str], nlp_artifacts: NlpArtifacts | None = None
    ) -> list[RecognizerResult]:
        spans: dict[tuple[int, int], float] = {}
        timestamps = timestamp_spans(text)
        for region in PHONE_REGIONS:
            for match in phonenumbers.PhoneNumberMatcher(text, region, leniency=1):
                score = _phone_score(text, match.start, match.end)
                if score and not overlaps_any(match.start, match.end, timestamps):
                    spans[(match.start, match.end)] = score
        return [self._result(start, end, score) for (start, end), score in spans.items()]

    def _result(self, start: int, end: int, score: float) -> RecognizerResult:
        return RecognizerResult(
            entity_type="PHONE_NUMBER",
            start=start,
            end=end,
            score=score,
            analysis_explanation=AnalysisExplanation(
                recognizer=PHONE_NAME,
                original_score=score,
                textual_explanation="phonenumbers match",
            ),
            recognition_metadata={
                RecognizerResult.RECOGNIZER_NAME_KEY: PHONE_NAME,
                RecognizerResult.RECOGNIZER_IDENTIFIER_KEY: self.id,
            },
        )


def _phone_score(text: str, start: int, end: int) -> float:
    value = text[start:end]
    if is_glued(text, start, end) or is_epoch_timestamp(value):
        return 0.0
    if _is_dotted_number(value) or _is_date(value) or _SSN_SHAPE.fullmatch(value):
        return 0.0
    if any(char in PHONE_SEPARATORS for char in value):
        return PHONE_SCORE
    return BARE_DIGITS_PHONE_SCORE


def _is_dotted_number(value: str) -> bool:
    """Return True for versions, addresses and prefixes (1.2.3.4, 203.0.113.0/24).

    Three groups of 3, 3 and 4 digits (415.555.0100) are a phone number.
    """
    if "/" in value and "." in value:
        return True
    parts = value.split(".")
    if len(parts) < 3 or not all(p.isdigit() for p in parts):
        return False
    return [len(p) for p in parts] != [3, 3, 4]


def _is_date(value: str) -> bool:
    parts = [part for part in value.replace("/", "-").split("-") if part]
    if len(parts) != 3 or not all(p.isdigit() for p in parts):
        return False
    lengths = sorted(len(p) for p in parts)
    return lengths in ([1, 1, 4], [1, 2, 4], [2, 2, 4])


class TunedCreditCardRecognizer(CodeAwareMixin, CreditCardRecognizer):
    """Presidio's card recognizer (Luhn-validated) plus Mastercard's 2221-2720 range."""

    PATTERNS = [  # noqa: RUF012 (Presidio declares PATTERNS as a plain class attribute)
        *CreditCardRecognizer.PATTERNS,
        Pattern(
            "Mastercard 2-series",
            r"\b2(?:2[2-9]\d|[3-6]\d\d|7[01]\d|720)[- ]?\d{4}[- ]?\d{4}[- ]?\d{4}\b",
            0.3,
        ),
    ]


class TunedSsnRecognizer(CodeAwareMixin, UsSsnRecognizer):
    """Presidio's SSN recognizer, also rejecting area numbers 900-999 (never issued as SSNs).

    A match with "SSN" or "social" in the 30 characters before it scores at
    least 0.85, also where Presidio's token-based context check misses the
    word (`SSN:713 46 8996`), so it outranks a phone match on the same digits.
    """

    def analyze(self, text: str, entities: list[str], *args: Any, **kwargs: Any) -> list[Any]:
        results: list[RecognizerResult] = super().analyze(text, entities, *args, **kwargs)
        for result in results:
            window = text[max(0, result.start - 30) : result.start].lower()
            if "ssn" in window or "social" in window:
                result.score = max(result.score, SSN_CONTEXT_SCORE)
        return results

    def invalidate_result(self, pattern_text: str) -> bool:
        digits = "".join(c for c in pattern_text if c.isdigit())
        if digits[:1] == "9":
            return True
        return bool(super().invalidate_result(pattern_text))


class TunedNhsRecognizer(CodeAwareMixin, NhsRecognizer):
    """NHS numbers only with "NHS" written within 40 characters before them.

    One in eleven random ten-digit numbers passes the NHS checksum, among them
    phone numbers and epoch timestamps, so the checksum alone is no evidence.
    """

    def _keep(self, text: str, result: RecognizerResult) -> bool:
        window = text[max(0, result.start - 40) : result.start].lower()
        return "nhs" in window and super()._keep(text, result)


class TunedMedicalLicenseRecognizer(CodeAwareMixin, MedicalLicenseRecognizer):
    """DEA numbers, not inside longer tokens such as UUIDs and digests."""


class TunedUsLicenseRecognizer(CodeAwareMixin, UsLicenseRecognizer):
    """US driver's licence numbers, not inside identifiers such as `u16` or `v1`."""


class TunedUsBankRecognizer(CodeAwareMixin, UsBankRecognizer):
    """US bank account numbers, not epoch timestamps or parts of longer tokens."""


class TunedUsPassportRecognizer(CodeAwareMixin, UsPassportRecognizer):
    """US passport numbers, not parts of longer tokens."""


class TunedUsItinRecognizer(CodeAwareMixin, UsItinRecognizer):
    """US ITINs, not parts of longer tokens."""
