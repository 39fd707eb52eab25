
"""Pools of synthetic values for the corpus templates, and the slot → value mapping."""

from __future__ import annotations

import base64
import json
import random
import string

# fmt: off
FIRST_NAMES = (
    "Robert", "Maria", "James", "Aisha", "Wei", "Priya", "Carlos", "Olga", "Kwame", "Sofia",
    "Liam", "Fatima", "Hiroshi", "Elena", "Mateo", "Chloe", "Dmitri", "Amara", "Noah", "Ingrid",
    "Rahul", "Grace", "Tomasz", "Yuki", "Daniel", "Leila", "Oscar", "Nadia", "Samuel", "Hannah",
    "Arjun", "Beatriz", "Ethan", "Zainab", "Lucas", "Mei", "Patrick", "Anika", "Victor", "Rosa",
    "Jonas", "Imani", "Kevin", "Svetlana", "Diego", "Emily", "Omar", "Lena", "Marcus", "Ayesha",
    "Henrik", "Julia", "Tariq", "Claire", "Andre", "Keiko", "Felix", "Natalia", "Bilal", "Sarah",
)
LAST_NAMES = (
    "Smith", "Garcia", "Okafor", "Chen", "Patel", "Kowalski", "Nguyen", "Johansson", "Haddad",
    "Murphy", "Fernandez", "Ivanova", "Tanaka", "Mensah", "Schmidt", "Rossi", "O'Brien", "Kim",
    "Dubois", "Alvarez", "Novak", "Sharma", "Williams", "Andersen", "Costa", "Yilmaz", "Brown",
    "Moreau", "Kaplan", "Lindqvist", "Adeyemi", "Walsh", "Romero", "Weber", "Hussain", "Clarke",
    "Petrov", "Martins", "Reyes", "Fischer", "Bennett", "Suzuki", "Hughes", "Delgado", "Novotny",
    "Mwangi", "Larsen", "Baptiste", "Kaur", "Thompson", "Ortiz", "Jensen", "Farouk", "Morgan",
)
SUFFIXES = ("Jr.", "Sr.", "III", "II")
EMAIL_DOMAINS = (
    "example.com", "example.org", "example.net", "mail.example.com", "corp.example.org",
)
CITIES = (
    "Chicago", "Berlin", "Toronto", "Manchester", "Lyon", "Austin", "Seattle", "Dublin", "Madrid",
    "Melbourne", "Denver", "Boston", "Rotterdam", "Oslo", "Lisbon", "Portland", "Atlanta",
)
STREETS = (
    "Maple Avenue", "Oak Street", "Elm Road", "Harbor Drive", "Cedar Lane", "Park Place",
    "Mill Street", "Sunset Boulevard", "Church Road", "Lakeview Terrace",
)
CARDS = (
    "4111 1111 1111 1111", "5555 5555 5555 4444", "3782 822463 10005", "6011 1111 1111 1117",
    "4012 8888 8888 1881", "5105 1051 0510 5100", "3530 1113 3330 0000", "4242 4242 4242 4242",
    "3714 496353 98431", "6011 0009 9013 9424", "5200 8282 8282 8210", "4000 0566 5566 5556",
    "2223 0031 2200 3222", "4111-1111-1111-1111", "5555-5555-5555-4444", "4242424242424242",
    "5105105105105100", "378282246310005",
)
IBANS = (
    "GB82 WEST 1234 5698 7654 32", "DE89 3704 0044 0532 0130 00", "FR14 2004 1010 0505 0001 3M02 606",
    "NL91 ABNA 0417 1643 00", "ES91 2100 0418 4502 0005 1332", "IT60 X054 2811 1010 0000 0123 456",
    "CH93 0076 2011 6238 5295 7", "BE68 5390 0754 7034", "AT61 1904 3002 3457 3201",
    "PL61 1090 1014 0000 0712 1981 2874", "GB33BUKB20201555555555", "DE89370400440532013000",
    "IE29 AIBK 9311 5212 3456 78", "SE45 5000 0000 0583 9825 7466", "NL91ABNA0417164300",
)
NHS_NUMBERS = ("943 476 5919", "943 476 5870", "401 023 2137")
MONTHS = (
    "January", "February", "March", "April", "May", "June", "July", "August", "September",
    "October", "November", "December",
)
# fmt: on


def value_for(slot: str, person: random.Random, rng: random.Random) -> tuple[str, str]:
    """Return (value, entity type) for `slot`; `person` is seeded per person number."""
    if slot in PERSON_SLOTS:
        return PERSON_SLOTS[slot](_person(person)), "PERSON"
    if slot == "email":
        return _email(_person(person), rng), "EMAIL_ADDRESS"
    maker, entity_type = OTHER_SLOTS[slot]
    return maker(rng), entity_type


def _person(rng: random.Random) -> tuple[str, str, str, str]:
    state = random.Random(rng.random())
    return (
        state.choice(FIRST_NAMES),
        state.choice(string.ascii_uppercase),
        state.choice(LAST_NAMES),
        state.choice(SUFFIXES),
    )


PERSON_SLOTS = {
    "name": lambda p: f"{p[0]} {p[2]}",
    "name_mi": lambda p: f"{p[0]} {p[1]}. {p[2]}",
    "name_suffix": lambda p: f"{p[0]} {p[2]} {p[3]}",
    "name_lower": lambda p: f"{p[0]} {p[2]}".lower(),
    "name_upper": lambda p: f"{p[0]} {p[2]}".upper(),
    "last_first": lambda p: f"{p[2]}, {p[0]}",
    "first": lambda p: p[0],
    "first_lower": lambda p: p[0].lower(),
    "first_upper": lambda p: p[0].upper(),
    "last": lambda p: p[2],
    "last_upper": lambda p: p[2].upper(),
}


def _email(person: tuple[str, str, str, str], rng: random.Random) -> str:
    first, initial, last = person[0].lower(), person[1].lower(), person[2].lower().replace("'", "")
    local = rng.choice(
        (
            f"{first}.{last}",
            f"{first[0]}{last}",
            f"{first}_{last}{rng.randrange(10, 99)}",
            f"{first}.{initial}.{last}",
            f"{first}+support@",
            f"{last}.{first}",
        )
    ).rstrip("@")
    return f"{local}@{rng.choice(EMAIL_DOMAINS)}"


def _phone_us(rng: random.Random) -> str:
    area = rng.choice(("202", "312", "415", "617", "212", "303", "512", "206"))
    line = f"01{rng.randrange(0, 100):02d}"
    return rng.choice(
        (
            f"({area}) 555-{line}",
            f"{area}-555-{line}",
            f"+1 {area} 555 {line}",
            f"{area}.555.{line}",
            f"+1-{area}-555-{line}",
            f"1 ({area}) 555-{line}",
        )
    )


def _phone_uk(rng: random.Random) -> str:
    number = f"{rng.randrange(0, 1000):03d}"
    return rng.choice((f"07700 900{number}", f"+44 7700 900{number}", f"+44 (0)7700 900{number}"))


def _phone_intl(rng: random.Random) -> str:
    return rng.choice(
        (
            f"+49 30 {rng.randrange(1000000, 9999999)}",
            f"+33 1 {rng.randrange(10, 99)} {rng.randrange(10, 99)} {rng.randrange(10, 99)} "
            f"{rng.randrange(10, 99)}",
            f"+61 2 9{rng.randrange(100, 999)} {rng.randrange(1000, 9999)}",
            f"+91 98{rng.randrange(100, 999)} {rng.randrange(10000, 99999)}",
        )
    )


def _ssn(rng: random.Random) -> str:
    area = rng.choice([a for a in range(1, 900) if a != 666 and a not in (123, 219, 78)])
    group = rng.randrange(1, 100)
    serial = rng.randrange(1, 10000)
    separator = rng.choice(("-", "-", "-", " "))
    return f"{area:03d}{separator}{group:02d}{separator}{serial:04d}"


def _ip(rng: random.Random) -> str:
    prefix = rng.choice(("192.0.2", "198.51.100", "203.0.113"))
    return f"{prefix}.{rng.randrange(1, 255)}"


def _ipv6(rng: random.Random) -> str:
    return f"2001:db8:{rng.randrange(0, 0xFFFF):x}::{rng.randrange(1, 0xFFFF):x}"


def _street(rng: random.Random) -> str:
    return f"{rng.randrange(2, 990)} {rng.choice(STREETS)}"


def _date(rng: random.Random) -> str:
    day, month, year = rng.randrange(1, 29), rng.randrange(1, 13), rng.randrange(2023, 2027)
    return rng.choice(
        (
            f"{MONTHS[month - 1]} {day}, {year}",
            f"{day} {MONTHS[month - 1]} {year}",
            f"{year}-{month:02d}-{day:02d}",
            f"{month:02d}/{day:02d}/{year}",
        )
    )


def _dob(rng: random.Random) -> str:
    day, month, year = rng.randrange(1, 29), rng.randrange(1, 13), rng.randrange(1940, 2004)
    return rng.choice(
        (
            f"{month:02d}/{day:02d}/{year}",
            f"{year}-{month:02d}-{day:02d}",
            f"{MONTHS[month - 1]} {day}, {year}",
        )
    )


def _token(rng: random.Random, alphabet: str, length: int) -> str:
    return "".join(rng.choice(alphabet) for _ in range(length))


ALNUM = string.ascii_letters + string.digits
UPPER_DIGITS = string.ascii_uppercase + string.digits
HEX = "0123456789abcdef"


def _aws_key(rng: random.Random) -> str:
    return "AKIA" + _token(rng, UPPER_DIGITS, 16)


def _aws_secret(rng: random.Random) -> str:
    return _token(rng, ALNUM + "/+", 40)


def _github_token(rng: random.Random) -> str:
    return rng.choice(("ghp_", "gho_", "github_pat_11A")) + _token(rng, ALNUM, 36)


def _slack_token(rng: random.Random) -> str:
    return f"xoxb-{rng.randrange(10**11, 10**12)}-{rng.randrange(10**11, 10**12)}-" + _token(
        rng, ALNUM, 24
    )


def _stripe_key(rng: random.Random) -> str:
    return rng.choice(("sk_live_", "rk_live_")) + _token(rng, ALNUM, 24)


def _openai_key(rng: random.Random) -> str:
    return "sk-proj-" + _token(rng, ALNUM + "-_", 48)


def _jwt(rng: random.Random) -> str:
    header = {"alg": "HS256", "typ": "JWT"}
    payload = {"sub": str(rng.randrange(10**6, 10**7)), "iat": 1700000000 + rng.randrange(10**6)}
    parts = [
        base64.urlsafe_b64encode(json.dumps(p, separators=(",", ":")).encode()).decode().rstrip("=")
        for p in (header, payload)
    ]
    return ".".join([*parts, _token(rng, ALNUM + "-_", 43)])


def _password(rng: random.Random) -> str:
    return _token(rng, ALNUM, 10) + rng.choice("!#%&*") + _token(rng, ALNUM, 3)


def _url_password(rng: random.Random) -> str:
    """A password that may stand unencoded in a URL's user information."""
    return _token(rng, ALNUM, 10) + rng.choice("!*-_~") + _token(rng, ALNUM, 3)


def _generic_key(rng: random.Random) -> str:
    return _token(rng, HEX, 32)


OTHER_SLOTS = {
    "phone": (_phone_us, "PHONE_NUMBER"),
    "phone_uk": (_phone_uk, "PHONE_NUMBER"),
    "phone_intl": (_phone_intl, "PHONE_NUMBER"),
    "card": (lambda rng: rng.choice(CARDS), "CREDIT_CARD"),
    "iban": (lambda rng: rng.choice(IBANS), "IBAN_CODE"),
    "ssn": (_ssn, "US_SSN"),
    "nhs": (lambda rng: rng.choice(NHS_NUMBERS), "UK_NHS"),
    "ip": (_ip, "IP_ADDRESS"),
    "ipv6": (_ipv6, "IP_ADDRESS"),
    "city": (lambda rng: rng.choice(CITIES), "LOCATION"),
    "street": (_street, "LOCATION"),
    "date": (_date, "DATE_TIME"),
    "dob": (_dob, "DATE_TIME"),
    "aws_key": (_aws_key, "SECRET"),
    "aws_secret": (_aws_secret, "SECRET"),
    "github_token": (_github_token, "SECRET"),
    "slack_token": (_slack_token, "SECRET"),
    "stripe_key": (_stripe_key, "SECRET"),
    "openai_key": (_openai_key, "SECRET"),
    "jwt": (_jwt, "SECRET"),
    "password": (_password, "SECRET"),
    "url_password": (_url_password, "SECRET"),
    "api_key": (_generic_key, "SECRET"),
}
