"""Checksums that custom recognizers name in `validator:` to confirm a regex match.

Each function takes the matched text and returns whether its check digits are
right. Spaces, hyphens, dots and slashes are removed first, because the same
number is written with and without separators.
"""

from __future__ import annotations

import re
from collections.abc import Callable

from sidecar.policy.model import Validator

_SEPARATORS = re.compile(r"[\s./-]")

# Verhoeff's dihedral group D5: multiplication and permutation tables.
_VERHOEFF_MULTIPLY = (
    (0, 1, 2, 3, 4, 5, 6, 7, 8, 9),
    (1, 2, 3, 4, 0, 6, 7, 8, 9, 5),
    (2, 3, 4, 0, 1, 7, 8, 9, 5, 6),
    (3, 4, 0, 1, 2, 8, 9, 5, 6, 7),
    (4, 0, 1, 2, 3, 9, 5, 6, 7, 8),
    (5, 9, 8, 7, 6, 0, 4, 3, 2, 1),
    (6, 5, 9, 8, 7, 1, 0, 4, 3, 2),
    (7, 6, 5, 9, 8, 2, 1, 0, 4, 3),
    (8, 7, 6, 5, 9, 3, 2, 1, 0, 4),
    (9, 8, 7, 6, 5, 4, 3, 2, 1, 0),
)
_VERHOEFF_PERMUTE = (
    (0, 1, 2, 3, 4, 5, 6, 7, 8, 9),
    (1, 5, 7, 6, 2, 8, 3, 0, 9, 4),
    (5, 8, 0, 3, 7, 9, 6, 1, 4, 2),
    (8, 9, 1, 6, 0, 4, 3, 5, 2, 7),
    (9, 4, 5, 3, 1, 2, 6, 8, 7, 0),
    (4, 2, 8, 6, 5, 7, 3, 9, 0, 1),
    (2, 7, 9, 3, 8, 0, 6, 4, 1, 5),
    (7, 0, 4, 6, 9, 1, 3, 2, 5, 8),
)


def _compact(text: str) -> str:
    return _SEPARATORS.sub("", text)


def luhn(text: str) -> bool:
    """Check the Luhn (mod 10) digit of payment card numbers and IMEIs."""
    digits = _compact(text)
    if len(digits) < 2 or not digits.isascii() or not digits.isdigit():
        return False
    total = 0
    for position, digit in enumerate(reversed(digits)):
        value = int(digit)
        if position % 2 == 1:
            value = value * 2 - 9 if value > 4 else value * 2
        total += value
    return total % 10 == 0


def mod97(text: str) -> bool:
    """Check ISO 7064 MOD 97-10, as used by LEIs.

    Letters count as 10 to 35, and the number modulo 97 must be 1.
    """
    compact = _compact(text).upper()
    if len(compact) < 3 or not compact.isascii() or not compact.isalnum():
        return False
    return int("".join(str(int(char, 36)) for char in compact)) % 97 == 1


def iban(text: str) -> bool:
    """Check an IBAN: two letters, two check digits, then MOD 97-10 over the rearranged number."""
    compact = _compact(text).upper()
    if not 15 <= len(compact) <= 34 or not compact[:2].isalpha() or not compact[2:4].isdigit():
        return False
    return mod97(compact[4:] + compact[:4])


def aba_routing(text: str) -> bool:
    """Check a US ABA routing number: nine digits weighted 3, 7, 1."""
    digits = _compact(text)
    if len(digits) != 9 or not digits.isascii() or not digits.isdigit():
        return False
    weights = (3, 7, 1) * 3
    return sum(int(digit) * weight for digit, weight in zip(digits, weights, strict=True)) % 10 == 0


def verhoeff(text: str) -> bool:
    """Check the Verhoeff digit, as used by India's Aadhaar numbers."""
    digits = _compact(text)
    if len(digits) < 2 or not digits.isascii() or not digits.isdigit():
        return False
    check = 0
    for position, digit in enumerate(reversed(digits)):
        check = _VERHOEFF_MULTIPLY[check][_VERHOEFF_PERMUTE[position % 8][int(digit)]]
    return check == 0


def nhs(text: str) -> bool:
    """Check a UK NHS number: ten digits, the last a mod 11 check over weights 10 to 2."""
    digits = _compact(text)
    if len(digits) != 10 or not digits.isascii() or not digits.isdigit():
        return False
    total = sum(
        int(digit) * weight for digit, weight in zip(digits[:9], range(10, 1, -1), strict=True)
    )
    check = 11 - total % 11
    if check == 11:
        check = 0
    return check != 10 and check == int(digits[9])


CHECKSUMS: dict[Validator, Callable[[str], bool]] = {
    Validator.LUHN: luhn,
    Validator.IBAN: iban,
    Validator.MOD97: mod97,
    Validator.ABA_ROUTING: aba_routing,
    Validator.VERHOEFF: verhoeff,
    Validator.NHS: nhs,
}
