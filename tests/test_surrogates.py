"""Tests of the surrogate factory and its generators."""

from __future__ import annotations

import ipaddress
import re
import threading

import pytest

from sidecar.redact.surrogates import (
    MAX_ATTEMPTS,
    SurrogateError,
    SurrogateFactory,
    iban_check_digits,
    luhn_check_digit,
)

SEED = b"test-seed"


def passes_luhn(number: str) -> bool:
    digits = [c for c in number if c.isdigit()]
    return luhn_check_digit("".join(digits[:-1])) == digits[-1]


def iban_is_valid(iban: str) -> bool:
    compact = iban.replace(" ", "").upper()
    rearranged = compact[4:] + compact[:4]
    return int("".join(str(int(c, 36)) for c in rearranged)) % 97 == 1


def digit_layout(value: str) -> str:
    return re.sub(r"\d", "9", value)


@pytest.fixture
def factory() -> SurrogateFactory:
    return SurrogateFactory(SEED)


def test_luhn_check_digit_known_numbers() -> None:
    assert luhn_check_digit("411111111111111") == "1"
    assert luhn_check_digit("37828224631000") == "5"


def test_iban_check_digits_known_number() -> None:
    assert iban_check_digits("DE", "370400440532013000") == "89"
    assert iban_check_digits("GB", "WEST12345698765432") == "82"


@pytest.mark.parametrize(
    "card",
    [
        pytest.param("4111 1111 1111 1111", id="visa-spaces"),
        pytest.param("4111-1111-1111-1111", id="visa-dashes"),
        pytest.param("5555555555554444", id="mastercard-compact"),
        pytest.param("378282246310005", id="amex"),
        pytest.param("30569309025904", id="diners"),
        pytest.param("4222222222222", id="visa-13"),
        pytest.param("6011 0009 9013 9424 123", id="19-digits"),
    ],
)
def test_card_surrogate_luhn_valid_same_layout(factory: SurrogateFactory, card: str) -> None:
    surrogate = factory.surrogate_for("CREDIT_CARD", card)

    assert surrogate != card
    assert digit_layout(surrogate) == digit_layout(card)
    assert passes_luhn(surrogate)


@pytest.mark.parametrize(
    "phone",
    [
        pytest.param("(415) 555-2671", id="us-parentheses"),
        pytest.param("415-555-2671", id="us-dashes"),
        pytest.param("+1 415 555 2671", id="us-international"),
        pytest.param("4155552671", id="us-compact"),
        pytest.param("+44 20 7946 0958", id="uk"),
        pytest.param("+49 (0)30 901820", id="germany"),
        pytest.param("06 12 34 56 78", id="france-national"),
    ],
)
def test_phone_surrogate_same_layout(factory: SurrogateFactory, phone: str) -> None:
    surrogate = factory.surrogate_for("PHONE_NUMBER", phone)

    assert surrogate != phone
    assert digit_layout(surrogate) == digit_layout(phone)


def test_us_phone_surrogate_fictional_range(factory: SurrogateFactory) -> None:
    surrogate = factory.surrogate_for("PHONE_NUMBER", "(415) 555-2671")

    assert re.fullmatch(r"\([2-9]\d\d\) 555-01\d\d", surrogate)


def test_international_phone_keeps_country_code(factory: SurrogateFactory) -> None:
    surrogate = factory.surrogate_for("PHONE_NUMBER", "+44 20 7946 0958")

    assert surrogate.startswith("+44 ")


@pytest.mark.parametrize(
    "iban",
    [
        pytest.param("DE89 3704 0044 0532 0130 00", id="germany-grouped"),
        pytest.param("GB82WEST12345698765432", id="uk-compact-letters"),
        pytest.param("FR14 2004 1010 0505 0001 3M02 606", id="france"),
        pytest.param("NL91ABNA0417164300", id="netherlands"),
    ],
)
def test_iban_surrogate_valid_checksum(factory: SurrogateFactory, iban: str) -> None:
    surrogate = factory.surrogate_for("IBAN_CODE", iban)

    assert surrogate != iban
    assert surrogate[:2] == iban[:2]
    assert len(surrogate) == len(iban)
    assert [c.isspace() for c in surrogate] == [c.isspace() for c in iban]
    assert iban_is_valid(surrogate)


@pytest.mark.parametrize("ssn", ["123-45-6789", "123 45 6789", "123456789"])
def test_ssn_surrogate_never_issued_range(factory: SurrogateFactory, ssn: str) -> None:
    surrogate = factory.surrogate_for("US_SSN", ssn)
    digits = re.sub(r"\D", "", surrogate)

    assert digit_layout(surrogate) == digit_layout(ssn)
    assert digits[0] == "9"
    assert 1 <= int(digits[3:5]) <= 49
    assert digits[5:] != "0000"


@pytest.mark.parametrize(
    ("address", "networks"),
    [
        pytest.param("10.1.2.3", ("192.0.2.0/24", "198.51.100.0/24", "203.0.113.0/24"), id="ipv4"),
        pytest.param("fe80::1ff:fe23:4567:890a", ("2001:db8::/32",), id="ipv6"),
    ],
)
def test_ip_surrogate_documentation_range(
    factory: SurrogateFactory, address: str, networks: tuple[str, ...]
) -> None:
    surrogate = ipaddress.ip_address(factory.surrogate_for("IP_ADDRESS", address))

    assert any(surrogate in ipaddress.ip_network(network) for network in networks)


def test_ip_surrogate_keeps_prefix_length(factory: SurrogateFactory) -> None:
    assert factory.surrogate_for("IP_ADDRESS", "10.0.0.0/8").endswith("/8")


def test_email_surrogate_reserved_domain(factory: SurrogateFactory) -> None:
    surrogate = factory.surrogate_for("EMAIL_ADDRESS", "jane.doe@acme-corp.io")

    assert re.fullmatch(r"[a-z0-9._]+@example\.(com|net|org)", surrogate)


def test_person_surrogate_word_count(factory: SurrogateFactory) -> None:
    assert len(factory.surrogate_for("PERSON", "Alice").split()) == 1
    assert len(factory.surrogate_for("PERSON", "Alice Smith").split()) == 2


def test_person_surrogate_shares_no_name(factory: SurrogateFactory) -> None:
    names = ["John Smith", "Mary Johnson", "James Williams", "Michael Brown", "David Jones"]
    for name in names:
        surrogate_words = set(factory.surrogate_for("PERSON", name).split())
        assert not surrogate_words & set(name.split())


def test_person_surrogate_keeps_upper_case(factory: SurrogateFactory) -> None:
    assert factory.surrogate_for("PERSON", "ALICE SMITH").isupper()


@pytest.mark.parametrize(
    ("value", "pattern"),
    [
        pytest.param("2021-03-04", r"\d{4}-\d{2}-\d{2}", id="iso"),
        pytest.param("03/04/2021", r"\d{2}/\d{2}/\d{4}", id="us"),
        pytest.param("March 4, 2021", r"[A-Z][a-z]+ \d{2}, \d{4}", id="long"),
    ],
)
def test_date_surrogate_same_format(factory: SurrogateFactory, value: str, pattern: str) -> None:
    surrogate = factory.surrogate_for("DATE_TIME", value)

    assert surrogate != value
    assert re.fullmatch(pattern, surrogate)


def test_unknown_type_keeps_shape(factory: SurrogateFactory) -> None:
    surrogate = factory.surrogate_for("US_DRIVER_LICENSE", "D123-4567-ab")

    assert re.fullmatch(r"[A-Z]\d{3}-\d{4}-[a-z]{2}", surrogate)
    assert surrogate != "D123-4567-ab"


def test_unicode_value_gets_ascii_shape(factory: SurrogateFactory) -> None:
    surrogate = factory.surrogate_for("NRP", "Ελληνικά")

    assert re.fullmatch(r"[A-Z][a-z]{7}", surrogate)


def test_same_value_same_surrogate(factory: SurrogateFactory) -> None:
    first = factory.surrogate_for("PERSON", "Alice Smith")
    second = factory.surrogate_for("PERSON", "Alice Smith")

    assert first == second
    assert len(factory) == 1


def test_value_keeps_first_surrogate_across_types(factory: SurrogateFactory) -> None:
    as_person = factory.surrogate_for("PERSON", "Jordan")

    assert factory.surrogate_for("LOCATION", "Jordan") == as_person


def test_distinct_values_distinct_surrogates() -> None:
    factory = SurrogateFactory(SEED)
    values = [
        f"{first} {last}" for first in ("Ann", "Bob", "Cy", "Di") for last in ("Lee", "Ng", "Ode")
    ]
    surrogates = [factory.surrogate_for("PERSON", value) for value in values]

    assert len(set(surrogates)) == len(values)


def test_no_surrogate_contains_another() -> None:
    factory = SurrogateFactory(SEED)
    surrogates = [factory.surrogate_for("PERSON", f"Person{n}") for n in range(200)]

    for surrogate in surrogates:
        containing = [other for other in surrogates if other != surrogate and surrogate in other]
        assert containing == []


def test_lookup_returns_original(factory: SurrogateFactory) -> None:
    surrogate = factory.surrogate_for("EMAIL_ADDRESS", "jane@acme.io")

    assert factory.lookup(surrogate) == "jane@acme.io"
    assert factory.lookup("nobody@example.com") is None
    assert factory.mapping == {surrogate: "jane@acme.io"}


def test_mapping_is_read_only(factory: SurrogateFactory) -> None:
    factory.surrogate_for("PERSON", "Alice")

    with pytest.raises(TypeError):
        factory.mapping["x"] = "y"  # type: ignore[index]


def test_deterministic_per_seed() -> None:
    values = [
        ("PERSON", "Alice Smith"),
        ("EMAIL_ADDRESS", "a@b.io"),
        ("CREDIT_CARD", "4111111111111111"),
    ]
    first = [SurrogateFactory(SEED).surrogate_for(*pair) for pair in values]
    second = [SurrogateFactory(SEED).surrogate_for(*pair) for pair in values]
    other_seed = [SurrogateFactory(b"other-seed").surrogate_for(*pair) for pair in values]

    assert first == second
    assert first != other_seed


def test_surrogate_independent_of_order() -> None:
    forward = SurrogateFactory(SEED)
    backward = SurrogateFactory(SEED)
    forward.surrogate_for("PERSON", "Alice Smith")
    forward_bob = forward.surrogate_for("PERSON", "Bob Jones")
    backward_bob = backward.surrogate_for("PERSON", "Bob Jones")

    assert forward_bob == backward_bob


def test_string_seed_equals_bytes_seed() -> None:
    assert SurrogateFactory("s").surrogate_for("PERSON", "Al") == SurrogateFactory(
        b"s"
    ).surrogate_for("PERSON", "Al")


def test_surrogate_never_equals_value() -> None:
    factory = SurrogateFactory(SEED)
    for n in range(300):
        value = f"{n:03d}"
        assert factory.surrogate_for("US_BANK_NUMBER", value) != value


def test_surrogate_avoids_excluded_texts() -> None:
    plain = SurrogateFactory(SEED).surrogate_for("PERSON", "Alice Smith")
    excluding = SurrogateFactory(SEED, exclude_texts=[f"cc {plain} on this"])

    assert excluding.surrogate_for("PERSON", "Alice Smith") != plain


def test_surrogate_never_equals_other_original() -> None:
    plain = SurrogateFactory(SEED).surrogate_for("PERSON", "Alice Smith")
    factory = SurrogateFactory(SEED)
    factory.surrogate_for("PERSON", plain)

    assert factory.surrogate_for("PERSON", "Alice Smith") != plain


def test_exhausted_values_raise() -> None:
    factory = SurrogateFactory(SEED)

    with pytest.raises(SurrogateError, match=f"after {MAX_ATTEMPTS} attempts"):
        factory.surrogate_for("US_BANK_NUMBER", "---")


def test_error_message_has_no_value() -> None:
    factory = SurrogateFactory(SEED)

    with pytest.raises(SurrogateError) as caught:
        factory.surrogate_for("PASSWORD_HINT", "@@@@")

    assert "@@@@" not in str(caught.value)


def test_repr_has_no_values(factory: SurrogateFactory) -> None:
    surrogate = factory.surrogate_for("PERSON", "Alice Smith")

    assert "Alice" not in repr(factory)
    assert surrogate not in repr(factory)


def test_unknown_locale_raises() -> None:
    with pytest.raises(ValueError, match="unknown Faker locale"):
        SurrogateFactory(SEED, locale="xx_YY")


def test_other_locale() -> None:
    surrogate = SurrogateFactory(SEED, locale="de_DE").surrogate_for("PERSON", "Hans Müller")

    assert len(surrogate.split()) >= 2


def test_factories_in_threads_are_deterministic() -> None:
    expected = SurrogateFactory(SEED).surrogate_for("PERSON", "Alice Smith")
    results: list[str] = []

    def run() -> None:
        for _ in range(50):
            results.append(SurrogateFactory(SEED).surrogate_for("PERSON", "Alice Smith"))

    threads = [threading.Thread(target=run) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert set(results) == {expected}
