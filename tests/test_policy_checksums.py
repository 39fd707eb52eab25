"""Tests of the named checksums custom recognizers can use as `validator`."""

from __future__ import annotations

import pytest

from sidecar.policy.checksums import CHECKSUMS, aba_routing, iban, luhn, mod97, nhs, verhoeff
from sidecar.policy.model import Validator

VALID = [
    pytest.param(luhn, "4111 1111 1111 1111", id="luhn-visa-test-card"),
    pytest.param(luhn, "5555-5555-5555-4444", id="luhn-mastercard-test-card"),
    pytest.param(luhn, "490154203237518", id="luhn-imei"),
    pytest.param(iban, "DE89 3704 0044 0532 0130 00", id="iban-de"),
    pytest.param(iban, "GB82WEST12345698765432", id="iban-gb"),
    pytest.param(mod97, "5493001KJTIIGC8Y1R12", id="mod97-lei"),
    pytest.param(aba_routing, "011000015", id="aba-federal-reserve"),
    pytest.param(verhoeff, "2363", id="verhoeff-textbook"),
    pytest.param(verhoeff, "4991 1866 5246", id="verhoeff-aadhaar-sample"),
    pytest.param(nhs, "943 476 5919", id="nhs-sample"),
]

INVALID = [
    pytest.param(luhn, "4111 1111 1111 1112", id="luhn-wrong-digit"),
    pytest.param(luhn, "4111-abcd", id="luhn-letters"),
    pytest.param(luhn, "7", id="luhn-too-short"),
    pytest.param(iban, "DE89 3704 0044 0532 0130 01", id="iban-wrong-digit"),
    pytest.param(iban, "1289 3704 0044 0532 0130 00", id="iban-no-country"),
    pytest.param(iban, "DE89", id="iban-too-short"),
    pytest.param(mod97, "5493001KJTIIGC8Y1R13", id="mod97-wrong-digit"),
    pytest.param(aba_routing, "011000016", id="aba-wrong-digit"),
    pytest.param(aba_routing, "01100001", id="aba-eight-digits"),
    pytest.param(verhoeff, "2364", id="verhoeff-wrong-digit"),
    pytest.param(nhs, "943 476 5918", id="nhs-wrong-digit"),
    pytest.param(nhs, "١٢٣٤٥٦٧٨٩٠", id="nhs-arabic-indic-digits"),
]


@pytest.mark.parametrize(("check", "value"), VALID)
def test_valid_number_passes(check: object, value: str) -> None:
    assert check(value) is True  # type: ignore[operator]


@pytest.mark.parametrize(("check", "value"), INVALID)
def test_invalid_number_fails(check: object, value: str) -> None:
    assert check(value) is False  # type: ignore[operator]


def test_every_validator_has_a_checksum() -> None:
    assert set(CHECKSUMS) == set(Validator)
