# ruff: noqa: RUF001 (names and possessives may use the typographic apostrophe U+2019)
"""Person names: a code-aware spaCy recognizer and a case-insensitive name gazetteer.

The sm spaCy model misses names written in lower case or ALL CAPS, tags some
first names as places, and tags identifiers in code (`TimeoutError`,
`crc_table[(c`) as people. `TunedSpacyRecognizer` filters and repairs the
model's spans; `NameGazetteerRecognizer` finds first-name + last-name pairs in
any letter case from the name lists that ship with Faker.
"""

from __future__ import annotations

import importlib
import re
from collections.abc import Iterator
from functools import cache
from typing import Any

from presidio_analyzer import AnalysisExplanation, EntityRecognizer, RecognizerResult
from presidio_analyzer.nlp_engine import NlpArtifacts
from presidio_analyzer.predefined_recognizers import SpacyRecognizer
from spacy.lang.en.stop_words import STOP_WORDS

from sidecar.detect.recognizers.code import is_code_line, is_glued, looks_like_code

# Faker person providers whose names are written in Latin letters.
NAME_LOCALES = (
    "en_US", "en_GB", "en_IN", "de_DE", "es_ES", "es_MX", "fr_FR", "it_IT", "pt_BR", "pt_PT",
    "nl_NL", "pl_PL", "sv_SE", "da_DK", "no_NO", "fi_FI", "tr_TR", "cs_CZ", "ro_RO", "hu_HU",
    "id_ID", "vi_VN", "en_NG", "yo_NG", "zu_ZA", "sw",
)  # fmt: skip
# Names that are also common English words, or labels in forms and code; the
# gazetteer does not take these as names on their own evidence.
COMMON_WORDS = frozenset(
    """
    april art august bill bob bud case chase christian dawn dean destiny faith frank gene
    grace guy hope hunter iris ivy jack jade joy june king lane lee long mark max may miles
    norman page pat patience penny pearl ray river rose ruby rust sandy sky spring summer
    sunny victor will young white black green brown gray grey hill wood stone price cook
    hall ward bell field love may son new north south west east day early rich key line
    item total bill due date status name user test admin root master main
    """.split()  # noqa: SIM905 (a word list reads better as text)
)
SIGN_OFF_WORDS = frozenset(
    """
    cheers regards thanks thank best hi hello dear bill item total invoice subject re fwd
    customer patient employee reporter owner contact summary note
    """.split()  # noqa: SIM905 (a word list reads better as text)
)
NAME_SUFFIXES = ("Jr.", "Sr.", "II", "III", "IV", "PhD", "MD")
# Words after which a lone first name is taken as a person.
FIRST_NAME_CUES = frozenset(
    """
    hi hello hey dear thanks thank cc for with from to by ping ask asked tell told called
    call assistant colleague spouse wife husband manager dr mr mrs ms miss and
    """.split()  # noqa: SIM905 (a word list reads better as text)
)
# A word, an apostrophe name such as O'Brien, or an initial; "Maria's" yields "Maria".
WORD = re.compile(r"[A-Za-z]['’][A-Z][A-Za-z]+|[A-Za-z]{2,}|[A-Z]\.")
GAZETTEER_NAME = "NameGazetteerRecognizer"
GAZETTEER_FULL_SCORE = 0.85
GAZETTEER_CASELESS_SCORE = 0.75
GAZETTEER_SINGLE_SCORE = 0.6
GAZETTEER_FIRST_ONLY_SCORE = 0.65
# Capitalized words that follow first names without being surnames.
NOT_SURNAMES = frozenset(
    """
    said says wrote writes called calls from team group dept finance sales support please
    thanks mentioned reports joins needs wants asked handles exceeded
    """.split()  # noqa: SIM905 (a word list reads better as text)
)


@cache
def name_lists() -> tuple[frozenset[str], frozenset[str]]:
    """Return the lower-case (first names, last names) of the Faker locales above.

    Last names exclude `COMMON_WORDS`; first names keep them, and `_is_first`
    accepts one only before a known last name in Title case ("Grace Delgado").
    """
    first: set[str] = set()
    last: set[str] = set()
    for locale in NAME_LOCALES:
        provider = importlib.import_module(f"faker.providers.person.{locale}").Provider
        for attribute in ("first_names", "first_names_male", "first_names_female"):
            first.update(_latin_names(getattr(provider, attribute, ())))
        last.update(_latin_names(getattr(provider, "last_names", ())))
    return frozenset(first), frozenset(last - COMMON_WORDS)


def _latin_names(names: Any) -> Iterator[str]:
    for name in names:
        if name.isascii() and name.replace("'", "").isalpha() and len(name) > 2:
            yield name.lower()


def _is_first(word: str, allow_common: bool = False) -> bool:
    lowered = word.lower()
    if lowered in STOP_WORDS or (lowered in COMMON_WORDS and not allow_common):
        return False
    return lowered in name_lists()[0]


def _is_last(word: str) -> bool:
    return word.lower() in name_lists()[1] and word.lower() not in STOP_WORDS


def _case_style(word: str) -> str:
    if word.isupper():
        return "upper"
    if word.islower():
        return "lower"
    return "title" if word[0].isupper() else "mixed"


class NameGazetteerRecognizer(EntityRecognizer):
    """First-name + last-name pairs in any one letter case, and cued first names.

    Matches `First Last`, `First M. Last`, `Last, First` (each word in the same
    case: lower, UPPER or Title) with an optional suffix such as `Jr.`, and a
    lone Title-case first name after a cue word (`Hi Priya`, `for Imani`) or
    before `'s`. Words listed in `COMMON_WORDS` and English stop words never
    count as names.
    """

    def __init__(self, supported_language: str = "en") -> None:
        super().__init__(
            supported_entities=["PERSON"],
            supported_language=supported_language,
            name=GAZETTEER_NAME,
        )

    def load(self) -> None:
        name_lists()

    def analyze(
        self, text: str, entities: list[str], nlp_artifacts: NlpArtifacts | None = None
    ) -> list[RecognizerResult]:
        words = [m for m in WORD.finditer(text) if not is_glued(text, m.start(), m.end())]
        results = []
        for start, end, score in _name_spans(text, words):
            if not is_code_line(text, start):
                results.append(self._result(start, end, score))
        return results

    def _result(self, start: int, end: int, score: float) -> RecognizerResult:
        return RecognizerResult(
            entity_type="PERSON",
            start=start,
            end=end,
            score=score,
            analysis_explanation=AnalysisExplanation(
                recognizer=GAZETTEER_NAME,
                original_score=score,
                textual_explanation="name gazetteer",
            ),
            recognition_metadata={
                RecognizerResult.RECOGNIZER_NAME_KEY: GAZETTEER_NAME,
                RecognizerResult.RECOGNIZER_IDENTIFIER_KEY: self.id,
            },
        )


def _name_spans(text: str, words: list[re.Match[str]]) -> Iterator[tuple[int, int, float]]:
    index = 0
    while index < len(words):
        found = _full_name_at(text, words, index) or _single_name_at(text, words, index)
        if found is None:
            index += 1
            continue
        start, end, score, used = found
        yield start, _extend_suffix(text, end), score
        index += used


def _separated_by(text: str, left: re.Match[str], right: re.Match[str], gap: str) -> bool:
    return text[left.end() : right.start()] == gap


def _full_name_at(
    text: str, words: list[re.Match[str]], index: int
) -> tuple[int, int, float, int] | None:
    first = words[index]
    style = _case_style(first.group())
    if style == "mixed" or index + 1 >= len(words):
        return None

    following = words[index + 1]
    if (
        _is_last(first.group())
        and _separated_by(text, first, following, ", ")
        and _is_first(following.group())
        and _case_style(following.group()) == style
        and style != "lower"
    ):
        return first.start(), following.end(), _full_score(style), 2

    if not _is_first(first.group(), allow_common=style == "title"):
        return None
    common_first = not _is_first(first.group())
    used = 1
    if following.group().endswith(".") and len(following.group()) == 2 and index + 2 < len(words):
        if not _separated_by(text, first, following, " "):
            return None
        used, first_gap_end = 2, following
        following = words[index + 2]
    else:
        first_gap_end = first
    if not _separated_by(text, first_gap_end, following, " "):
        return None
    if _case_style(following.group()) != style:
        return None
    if _is_last(following.group()):
        return first.start(), following.end(), _full_score(style), used + 1
    if style != "lower" and not common_first and _could_be_surname(following.group()):
        return first.start(), following.end(), GAZETTEER_FIRST_ONLY_SCORE, used + 1
    return None


def _could_be_surname(word: str) -> bool:
    lowered = word.lower()
    return (
        len(word) > 2
        and word.isalpha()
        and lowered not in STOP_WORDS
        and lowered not in COMMON_WORDS
        and lowered not in SIGN_OFF_WORDS
        and lowered not in NOT_SURNAMES
    )


def _full_score(style: str) -> float:
    return GAZETTEER_FULL_SCORE if style == "title" else GAZETTEER_CASELESS_SCORE


def _single_name_at(
    text: str, words: list[re.Match[str]], index: int
) -> tuple[int, int, float, int] | None:
    word = words[index]
    if _case_style(word.group()) != "title" or not _is_first(word.group()):
        return None
    possessive = text[word.end() : word.end() + 2] in ("'s", "’s")
    previous = words[index - 1].group().lower().rstrip(".") if index else ""
    cued = previous in FIRST_NAME_CUES and text[words[index - 1].end() : word.start()] in (
        " ",
        ", ",
    )
    if not (possessive or cued or _alone_on_line(text, word.start(), word.end())):
        return None
    return word.start(), word.end(), GAZETTEER_SINGLE_SCORE, 1


def _alone_on_line(text: str, start: int, end: int) -> bool:
    line_start = text.rfind("\n", 0, start) + 1
    line_end = text.find("\n", end)
    line = text[line_start : line_end if line_end >= 0 else len(text)]
    return line.strip(" .,!-—") == text[start:end] and line_start > 0


def _extend_suffix(text: str, end: int) -> int:
    for suffix in NAME_SUFFIXES:
        for gap in (" ", ", "):
            candidate = gap + suffix
            after = end + len(candidate)
            if text.startswith(candidate, end) and not text[after : after + 1].isalnum():
                return after
    return end


class TunedSpacyRecognizer(SpacyRecognizer):
    """spaCy NER results without code tokens, with names repaired.

    Drops PERSON, LOCATION, NRP and ORGANIZATION spans with code syntax, digits,
    dotted or CamelCase identifiers, and spans that continue a longer token. It
    also drops lower-case words not known as first names, and greetings,
    sign-offs and form labels ("Cheers", "Bill to"). A LOCATION made
    only of known first and last names, with no place preposition before it,
    becomes a PERSON. Possessive `'s` is cut off and suffixes such as `Jr.`
    are added to PERSON spans.
    """

    def analyze(self, text: str, entities: list[str], nlp_artifacts: Any = None) -> list[Any]:
        results: list[RecognizerResult] = super().analyze(text, entities, nlp_artifacts)
        kept = []
        for result in results:
            repaired = _repair(text, result)
            if repaired is not None:
                kept.append(repaired)
        return kept


NAMED_TYPES = frozenset({"PERSON", "LOCATION", "NRP", "ORGANIZATION"})
PLACE_PREPOSITIONS = frozenset({"in", "at", "to", "from", "near", "of", "via", "into"})


def _repair(text: str, result: RecognizerResult) -> RecognizerResult | None:
    if result.entity_type not in NAMED_TYPES:
        return result
    value = text[result.start : result.end]
    if looks_like_code(value) or is_glued(text, result.start, result.end):
        return None
    if is_code_line(text, result.start):
        return None
    if value.lower().rstrip(":") in SIGN_OFF_WORDS or value.split()[0].lower() in SIGN_OFF_WORDS:
        return None
    if value.islower() and not (result.entity_type == "PERSON" and _is_first(value.split()[0])):
        return None

    if (
        result.entity_type == "LOCATION"
        and _all_name_words(value)
        and not _after_place_word(text, result.start)
    ):
        result.entity_type = "PERSON"
    if result.entity_type == "PERSON" and _is_place_position(text, result.start, value):
        result.entity_type = "LOCATION"
    if result.entity_type == "PERSON":
        result.end = _extend_suffix(text, _trim_possessive(text, result.start, result.end))
    return result


def _all_name_words(value: str) -> bool:
    return all(_is_first(word) or _is_last(word) for word in value.split())


def _after_place_word(text: str, start: int) -> bool:
    before = text[max(0, start - 12) : start].split()
    return bool(before) and before[-1].lower() in PLACE_PREPOSITIONS


def _is_place_position(text: str, start: int, value: str) -> bool:
    """Return True for a one-word span after `in`/`near`/`at` or after a street address."""
    if " " in value or _is_first(value):
        return False
    before = text[max(0, start - 40) : start]
    words = before.split()
    if words and words[-1].lower() in ("in", "near", "at"):
        return True
    return bool(_STREET_THEN_COMMA.search(before))


_STREET_THEN_COMMA = re.compile(r"\d+ [A-Z][a-z]+(?: [A-Z][a-z]+)*,\s*$")


def _trim_possessive(text: str, start: int, end: int) -> int:
    for suffix in ("'s", "’s", "'S"):
        if text.endswith(suffix, start, end) and end - len(suffix) > start:
            return end - len(suffix)
    return end
