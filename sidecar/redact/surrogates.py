"""Surrogates: realistic fake values that stand in for detected values within one request.

A surrogate has the type and format of the value it replaces, so the model
reads a natural text. The generators produce:

- PERSON: a fake first name, or first and last name;
- EMAIL_ADDRESS: an address at example.com, example.net or example.org;
- CREDIT_CARD: a Luhn-valid number on a published test number prefix;
- PHONE_NUMBER: the same layout, in the 555-01xx range reserved for fiction;
- IBAN_CODE: the same country and layout, with valid check digits;
- US_SSN: area 9xx (never issued as an SSN) and group 01-49 (never used by ITINs);
- IP_ADDRESS: an address in the documentation ranges of RFC 5737 and RFC 3849;
- URL, DATE_TIME, LOCATION, ORGANIZATION: an example URL, a date in the same
  format, a fake city, a fake company.

Other types keep the shape of the value: digits become random digits, letters
random ASCII letters of the same case, and everything else stays.

Within one `SurrogateFactory` the same value always gets the same surrogate,
two values never share one, and `lookup` maps a surrogate back to its value
for the restorer. Generation is seeded from the request seed, the entity type
and the value, so the same seed gives the same surrogates in tests. Production
callers should pass a fresh random seed per request, because a fixed seed lets
anyone who sees two requests link a value across them.

Limits: the restorer finds surrogates in the response by exact match, so it
misses a surrogate that the model rewrote ("Smith, John" for "John Smith"),
and it also restores a surrogate that the model wrote for other reasons. A fake
name is an ordinary name, which makes the second case possible. The factory
rejects a candidate that occurs in any of `exclude_texts` (pass the request's
texts), so a surrogate is never a string the request already contains.
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import json
import threading
from collections.abc import Callable, Iterable, Mapping
from datetime import date, datetime
from types import MappingProxyType

from faker import Faker

from sidecar.errors import SidecarError

MAX_ATTEMPTS = 64
DEFAULT_LOCALE = "en_US"

Generator = Callable[[Faker, str], str]


class SurrogateError(SidecarError):
    """No usable surrogate was found for a value; the caller should use a placeholder instead."""


class SurrogateFactory:
    """Issues the surrogates of one request and remembers which value each stands for.

    `exclude_texts` are texts that no surrogate may occur in, typically the
    request's own texts. `locale` is a Faker locale such as `en_US` or `de_DE`;
    an unknown locale raises ValueError.
    """

    def __init__(
        self,
        seed: bytes | str,
        *,
        locale: str = DEFAULT_LOCALE,
        exclude_texts: Iterable[str] = (),
    ) -> None:
        self._seed = seed.encode() if isinstance(seed, str) else seed
        self._faker = _faker_for(locale)
        self._locale = locale
        self._exclude_texts = tuple(exclude_texts)
        self._by_value: dict[str, str] = {}
        self._by_surrogate: dict[str, str] = {}

    def surrogate_for(self, entity_type: str, value: str) -> str:
        """Return the surrogate of `value`, generating one the first time `value` is seen.

        The registry is keyed by value alone: a value seen again under another
        entity type keeps the surrogate it got first. Raise SurrogateError when
        no candidate passes the checks in `MAX_ATTEMPTS` tries, which happens
        for values with almost no letters or digits.
        """
        existing = self._by_value.get(value)
        if existing is not None:
            return existing

        generate = GENERATORS.get(entity_type, shape_surrogate)
        for attempt in range(MAX_ATTEMPTS):
            self._faker.seed_instance(self._derive_seed(entity_type, value, attempt))
            candidate = generate(self._faker, value)
            if self._is_usable(candidate, value):
                self._by_value[value] = candidate
                self._by_surrogate[candidate] = value
                return candidate
        raise SurrogateError(
            f"no unused surrogate found for a {entity_type} value after {MAX_ATTEMPTS} attempts"
        )

    def lookup(self, surrogate: str) -> str | None:
        """Return the value behind `surrogate`, or None if this factory did not issue it."""
        return self._by_surrogate.get(surrogate)

    @property
    def mapping(self) -> Mapping[str, str]:
        """A read-only view of surrogate -> original value."""
        return MappingProxyType(self._by_surrogate)

    def __len__(self) -> int:
        return len(self._by_surrogate)

    def __repr__(self) -> str:
        # Never show values: factories end up in tracebacks and debug logs.
        return f"<SurrogateFactory locale={self._locale} surrogates={len(self._by_surrogate)}>"

    def _derive_seed(self, entity_type: str, value: str, attempt: int) -> int:
        message = json.dumps([entity_type, value, attempt]).encode()
        return int.from_bytes(hmac.new(self._seed, message, hashlib.sha256).digest()[:16], "big")

    def _is_usable(self, candidate: str, value: str) -> bool:
        """Reject a candidate that reveals the value or could be confused with another entry.

        A candidate may not share a word of letters with the value ("John
        White" for "John Smith" reveals the first name). It may not contain an
        issued surrogate or be contained in one, because the restorer would
        then replace part of a longer surrogate.
        """
        if not candidate or candidate.casefold() == value.casefold():
            return False
        if _words(candidate) & _words(value):
            return False
        if candidate in self._by_value:
            return False
        if any(candidate in issued or issued in candidate for issued in self._by_surrogate):
            return False
        return not any(candidate in text for text in self._exclude_texts)


# One Faker per thread and locale: `seed_instance` changes the state of an instance.
_local = threading.local()


def _faker_for(locale: str) -> Faker:
    cache: dict[str, Faker] = getattr(_local, "fakers", None) or {}
    _local.fakers = cache
    if locale not in cache:
        try:
            cache[locale] = Faker(locale)
        except AttributeError as exc:
            raise ValueError(f"unknown Faker locale {locale!r}, use one such as en_US") from exc
    return cache[locale]


def _words(text: str) -> set[str]:
    return {word.casefold() for word in text.split() if word.isalpha()}


def _random_digits(fake: Faker, count: int) -> str:
    return "".join(str(fake.random.randint(0, 9)) for _ in range(count))


def _replace_digits(value: str, digits: str) -> str:
    """Write `digits` into the digit positions of `value`, in order, keeping everything else."""
    replacement = iter(digits)
    return "".join(next(replacement) if c.isdecimal() else c for c in value)


def _digit_count(value: str) -> int:
    return sum(c.isdecimal() for c in value)


def shape_surrogate(fake: Faker, value: str) -> str:
    """Return a value of the same shape: random digits and ASCII letters of the same case."""
    characters = []
    for character in value:
        if character.isdecimal():
            characters.append(str(fake.random.randint(0, 9)))
        elif character.isalpha():
            letter = fake.random.choice("abcdefghijklmnopqrstuvwxyz")
            characters.append(letter.upper() if character.isupper() else letter)
        else:
            characters.append(character)
    return "".join(characters)


def person_surrogate(fake: Faker, value: str) -> str:
    """Return a first name for a one-word name, else a first and a last name."""
    if len(value.split()) == 1:
        name = fake.first_name()
    else:
        name = f"{fake.first_name()} {fake.last_name()}"
    return name.upper() if value.isupper() else name


def email_surrogate(fake: Faker, value: str) -> str:
    """Return an address at example.com, example.net or example.org (RFC 2606)."""
    domain = fake.random.choice(("example.com", "example.net", "example.org"))
    return f"{fake.user_name()}{fake.random.randint(10, 99)}@{domain}"


def phone_surrogate(fake: Faker, value: str) -> str:
    """Return a number in the layout of `value`.

    A North American number (10 digits, or 11 starting with 1) gets a random
    area code and the fictional exchange 555-0100 to 555-0199. Other numbers
    keep their country code after a leading `+` and get random digits.
    """
    digits = [c for c in value if c.isdecimal()]
    count = len(digits)
    international = value.lstrip().startswith("+")
    if (count == 10 and not international) or (count == 11 and digits[0] == "1"):
        area = str(fake.random.randint(2, 9)) + _random_digits(fake, 2)
        new = ("1" if count == 11 else "") + area + "55501" + _random_digits(fake, 2)
        return _replace_digits(value, new)

    country_code = _country_code(value) if international else ""
    rest = count - len(country_code)
    if rest <= 0:
        return shape_surrogate(fake, value)
    new = country_code + str(fake.random.randint(1, 9)) + _random_digits(fake, rest - 1)
    return _replace_digits(value, new)


def _country_code(value: str) -> str:
    """Return the digits right after `+` when a separator ends them within 3 digits."""
    after_plus = value.lstrip()[1:]
    code = ""
    for character in after_plus:
        if not character.isdecimal():
            break
        code += character
    separated = len(code) < len(after_plus)
    return code if separated and len(code) <= 3 else ""


# Prefixes of card numbers that payment networks and processors publish as test numbers.
_TEST_CARD_PREFIXES = {15: "378282", 14: "305693", 16: "424242"}
_DEFAULT_TEST_CARD_PREFIX = "400000"


def card_surrogate(fake: Faker, value: str) -> str:
    """Return a Luhn-valid number with as many digits as `value`, in its layout."""
    count = _digit_count(value)
    if count < 12:
        return shape_surrogate(fake, value)
    prefix = _TEST_CARD_PREFIXES.get(count, _DEFAULT_TEST_CARD_PREFIX)
    payload = prefix + _random_digits(fake, count - len(prefix) - 1)
    return _replace_digits(value, payload + luhn_check_digit(payload))


def luhn_check_digit(payload: str) -> str:
    """Return the digit that makes `payload` followed by it pass the Luhn check."""
    total = 0
    for position, character in enumerate(reversed(payload)):
        digit = int(character)
        if position % 2 == 0:
            digit = digit * 2 - 9 if digit > 4 else digit * 2
        total += digit
    return str(-total % 10)


def iban_surrogate(fake: Faker, value: str) -> str:
    """Return an IBAN of the same country, length and layout, with valid check digits.

    The account part keeps its pattern of letters and digits. Check digits
    inside it that some countries define are not computed.
    """
    compact = "".join(value.split()).upper()
    country, account = compact[:2], compact[4:]
    if not (country.isalpha() and country.isascii() and account.isalnum()):
        return shape_surrogate(fake, value)

    new_account = shape_surrogate(fake, account).upper()
    new_compact = country + iban_check_digits(country, new_account) + new_account
    replacement = iter(new_compact)
    return "".join(c if c.isspace() else _same_case(next(replacement), c) for c in value)


def iban_check_digits(country: str, account: str) -> str:
    """Return the two ISO 13616 check digits (mod 97) for a country code and account part."""
    numeric = "".join(str(int(c, 36)) for c in account + country + "00")
    return f"{98 - int(numeric) % 97:02d}"


def _same_case(character: str, model: str) -> str:
    return character.lower() if model.islower() else character


def ssn_surrogate(fake: Faker, value: str) -> str:
    """Return a number with area 900-999 and group 01-49 in the layout of `value`."""
    if _digit_count(value) != 9:
        return shape_surrogate(fake, value)
    area = str(fake.random.randint(900, 999))
    group = f"{fake.random.randint(1, 49):02d}"
    serial = f"{fake.random.randint(1, 9999):04d}"
    return _replace_digits(value, area + group + serial)


_IPV4_DOCUMENTATION_NETWORKS = ("192.0.2", "198.51.100", "203.0.113")
_IPV6_DOCUMENTATION_PREFIX = 0x20010DB8 << 96


def ip_surrogate(fake: Faker, value: str) -> str:
    """Return an address in a documentation range, keeping a `/prefix` suffix."""
    address, slash, prefix_length = value.partition("/")
    if ":" in address:
        host = ipaddress.IPv6Address(_IPV6_DOCUMENTATION_PREFIX | fake.random.getrandbits(96))
        new = host.compressed
    else:
        network = fake.random.choice(_IPV4_DOCUMENTATION_NETWORKS)
        new = f"{network}.{fake.random.randint(1, 254)}"
    return new + slash + prefix_length


def url_surrogate(fake: Faker, value: str) -> str:
    """Return a URL on an example domain (RFC 2606), with a scheme if `value` has one."""
    domain = fake.random.choice(("example.com", "example.net", "example.org"))
    scheme = "https://" if "://" in value else ""
    return f"{scheme}www.{domain}/{fake.uri_path()}"


_DATE_FORMATS = ("%Y-%m-%d", "%m/%d/%Y", "%d.%m.%Y", "%B %d, %Y", "%b %d, %Y", "%d %B %Y")
_DATE_RANGE = (date(1940, 1, 1), date(2020, 12, 31))


def date_surrogate(fake: Faker, value: str) -> str:
    """Return a date from 1940 to 2020 in the format of `value`, or a value of the same shape."""
    for date_format in _DATE_FORMATS:
        try:
            datetime.strptime(value, date_format)
        except ValueError:
            continue
        return fake.date_between_dates(*_DATE_RANGE).strftime(date_format)
    return shape_surrogate(fake, value)


GENERATORS: Mapping[str, Generator] = MappingProxyType(
    {
        "PERSON": person_surrogate,
        "EMAIL_ADDRESS": email_surrogate,
        "PHONE_NUMBER": phone_surrogate,
        "CREDIT_CARD": card_surrogate,
        "IBAN_CODE": iban_surrogate,
        "US_SSN": ssn_surrogate,
        "IP_ADDRESS": ip_surrogate,
        "URL": url_surrogate,
        "DATE_TIME": date_surrogate,
        "LOCATION": lambda fake, value: str(fake.city()),
        "ORGANIZATION": lambda fake, value: str(fake.company()),
    }
)
