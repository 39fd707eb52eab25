"""A pattern recognizer for street addresses (house number, street name, street type)."""

from __future__ import annotations

from typing import ClassVar

from presidio_analyzer import Pattern, PatternRecognizer

STREET_TYPES = (
    "Street|St\\.?|Avenue|Ave\\.?|Road|Rd\\.?|Boulevard|Blvd\\.?|Lane|Ln\\.?|Drive|Dr\\.?|"
    "Terrace|Place|Pl\\.?|Way|Court|Ct\\.?|Square|Sq\\.?|Parkway|Highway|Close|Crescent"
)


class StreetAddressRecognizer(PatternRecognizer):
    """Street addresses such as `657 Church Road` or `12 Oak St.`, as LOCATION.

    Only the English word order (number first) with a capitalized street name
    of one to three words is matched.
    """

    PATTERNS: ClassVar[list[Pattern]] = [
        Pattern(
            "street address",
            rf"\b\d{{1,5}}\s+(?:[A-Z][a-z]+\s+){{1,3}}(?:{STREET_TYPES})(?![A-Za-z])",
            0.7,
        )
    ]
    CONTEXT: ClassVar[list[str]] = [
        "address",
        "street",
        "ship",
        "shipping",
        "billing",
        "lives",
        "home",
    ]

    def __init__(self, supported_language: str = "en") -> None:
        super().__init__(
            supported_entity="LOCATION",
            patterns=self.PATTERNS,
            context=self.CONTEXT,
            supported_language=supported_language,
            name="StreetAddressRecognizer",
        )
