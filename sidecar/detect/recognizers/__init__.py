"""Tuned Presidio recognizers that replace or add to the predefined English ones.

A registry that adds `tuned_recognizers()` must first remove the predefined
recognizers named in `REPLACED_RECOGNIZERS`; otherwise their false positives
(UK_NHS on phone numbers, UUID on request ids, PERSON on identifiers) remain.
"""

from __future__ import annotations

from presidio_analyzer import EntityRecognizer

from sidecar.detect.recognizers.address import StreetAddressRecognizer
from sidecar.detect.recognizers.email import TunedEmailRecognizer
from sidecar.detect.recognizers.names import NameGazetteerRecognizer, TunedSpacyRecognizer
from sidecar.detect.recognizers.network import TunedIpRecognizer
from sidecar.detect.recognizers.numbers import (
    TunedCreditCardRecognizer,
    TunedMedicalLicenseRecognizer,
    TunedNhsRecognizer,
    TunedPhoneRecognizer,
    TunedSsnRecognizer,
    TunedUsBankRecognizer,
    TunedUsItinRecognizer,
    TunedUsLicenseRecognizer,
    TunedUsPassportRecognizer,
)

# Predefined recognizers that the tuned ones replace. UuidRecognizer has no
# replacement: a UUID names a request or a record, not a person.
REPLACED_RECOGNIZERS: tuple[str, ...] = (
    "SpacyRecognizer",
    "EmailRecognizer",
    "OfflineEmailRecognizer",
    "PhoneRecognizer",
    "CreditCardRecognizer",
    "UsSsnRecognizer",
    "NhsRecognizer",
    "IpRecognizer",
    "MedicalLicenseRecognizer",
    "UsLicenseRecognizer",
    "UsBankRecognizer",
    "UsPassportRecognizer",
    "UsItinRecognizer",
    "UuidRecognizer",
)


def tuned_recognizers(language: str = "en") -> list[EntityRecognizer]:
    """Return a fresh instance of every tuned recognizer for `language`."""
    return [
        TunedSpacyRecognizer(supported_language=language),
        NameGazetteerRecognizer(supported_language=language),
        StreetAddressRecognizer(supported_language=language),
        TunedEmailRecognizer(supported_language=language),
        TunedPhoneRecognizer(supported_language=language),
        TunedCreditCardRecognizer(supported_language=language),
        TunedSsnRecognizer(supported_language=language),
        TunedNhsRecognizer(supported_language=language),
        TunedIpRecognizer(supported_language=language),
        TunedMedicalLicenseRecognizer(supported_language=language),
        TunedUsLicenseRecognizer(supported_language=language),
        TunedUsBankRecognizer(supported_language=language),
        TunedUsPassportRecognizer(supported_language=language),
        TunedUsItinRecognizer(supported_language=language),
    ]
