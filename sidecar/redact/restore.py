"""Restoration of placeholders and surrogates in model output, whole or streamed.

Models alter placeholders, so the restorer accepts more than the exact
`<PERSON_1>`. It also takes the alterations that still name one vault entry
unambiguously. These are any letter case inside brackets, square brackets, a
space instead of the underscore inside brackets, a bare `PERSON_1` in upper
case, and brackets escaped for HTML (`&lt;`) or JSON (`\\u003c`).
A token naming no entry, such as `<PERSON>` or `<PERSON_9>`, is left as it is.
"""

from __future__ import annotations

import json
from collections.abc import Callable

import regex

from sidecar.redact.vault import Vault

Escape = Callable[[str], str]

_OPEN = r"<|\[|&lt;|\\u003c"
_CLOSE = r">|\]|&gt;|\\u003e"
# The longest bracket token is `\\u003c` or `\\u003e`; a placeholder number
# has at most this many digits before the stream stops holding it back.
_LONGEST_BRACKET = len("\\u003c")
_MAX_DIGITS = 9


def no_escape(value: str) -> str:
    return value


def json_string_escape(value: str) -> str:
    """Escape `value` for insertion inside a JSON string literal."""
    return json.dumps(value, ensure_ascii=False)[1:-1]


class Restorer:
    """Restores the placeholders and surrogates of one vault in complete texts."""

    def __init__(self, vault: Vault) -> None:
        self.vault = vault
        self.pattern = _compile(vault)
        self.first_chars = _first_chars(vault)
        self.window = _longest_form(vault)

    def restore(self, text: str, escape: Escape = no_escape) -> str:
        if self.pattern is None:
            return text
        return self.substitute(text, 0, len(text), escape)

    def stream(self, escape: Escape = no_escape) -> StreamRestorer:
        return StreamRestorer(self, escape)

    def substitute(self, text: str, start: int, end: int, escape: Escape) -> str:
        """Restore `text[start:end]`; matches may look behind `start` but must end by `end`."""
        assert self.pattern is not None
        pieces = []
        position = start
        for match in self.pattern.finditer(text, start):
            if match.end() > end:
                break
            pieces.append(text[position : match.start()])
            pieces.append(self._replacement(match, escape))
            position = match.end()
        pieces.append(text[position:end])
        return "".join(pieces)

    def _replacement(self, match: regex.Match[str], escape: Escape) -> str:
        surrogate = match.groupdict().get("surrogate")
        if surrogate is not None:
            value = self.vault.lookup_surrogate(surrogate)
        else:
            entity_type = match.group("t1") or match.group("t2")
            number = int(match.group("n1") or match.group("n2"))
            value = self.vault.lookup(entity_type, number)
        return match.group() if value is None else escape(value)


class StreamRestorer:
    """Restores one streamed text field, chunk by chunk.

    `feed` returns at once every character that can no longer become part of a
    placeholder, and holds back only a suffix that still could: a held-back
    part is at most `Restorer.window` characters. `flush` releases what is held
    at the end of the field. Concatenated outputs equal `Restorer.restore`
    applied to the concatenated inputs.
    """

    def __init__(self, restorer: Restorer, escape: Escape = no_escape) -> None:
        self._restorer = restorer
        self._escape = escape
        self._held = ""
        # The last released character: a bare `PERSON_1` right after a letter
        # or digit is not a placeholder, so the next match needs to see it.
        self._context = ""

    @property
    def held(self) -> str:
        return self._held

    def feed(self, text: str) -> str:
        restorer = self._restorer
        if restorer.pattern is None:
            return text
        buffer = self._context + self._held + text
        start = len(self._context)
        return self._release(buffer, start, _hold_back_start(restorer, buffer, start))

    def flush(self) -> str:
        if self._restorer.pattern is None:
            return ""
        buffer = self._context + self._held
        return self._release(buffer, len(self._context), len(buffer))

    def _release(self, buffer: str, start: int, cut: int) -> str:
        self._held = buffer[cut:]
        if cut > start:
            self._context = buffer[cut - 1]
        return self._restorer.substitute(buffer, start, cut, self._escape)


def _hold_back_start(restorer: Restorer, buffer: str, start: int) -> int:
    """Return where the suffix of `buffer` that could still grow into a match starts.

    A match anchored at each candidate position is tried in turn, because an
    unanchored partial search prefers a complete match further right over a
    partial one that starts earlier. A complete match that straddles the cut
    is held back whole.
    """
    pattern = restorer.pattern
    assert pattern is not None
    cut = len(buffer)
    for position in range(max(start, len(buffer) - restorer.window), len(buffer)):
        if buffer[position] not in restorer.first_chars:
            continue
        match = pattern.match(buffer, position, partial=True)
        if match is None or match.end() != len(buffer):
            continue
        # Only a complete bracketed form cannot grow; `PERSON_1` may become `PERSON_12`.
        if match.partial or match.groupdict().get("t1") is None:
            cut = position
            break
    if cut == len(buffer):
        return cut
    for match in pattern.finditer(buffer, max(start, cut - restorer.window)):
        if match.start() >= cut:
            break
        if match.end() > cut:
            return int(match.start())
    return cut


def _compile(vault: Vault) -> regex.Pattern[str] | None:
    alternatives = []
    types = "|".join(sorted(vault.entity_types, key=len, reverse=True))
    if types:
        alternatives.append(
            rf"(?:{_OPEN})\s?(?P<t1>{types})[_ ](?P<n1>[0-9]+)\s?(?:{_CLOSE})"
            # A bare form only in upper case: `person_1` is a plausible
            # identifier in code a model writes, `PERSON_1` hardly.
            rf"|(?<!\w)(?-i:(?P<t2>{types})_(?P<n2>[0-9]+))(?![\w])"
        )
    surrogates = "|".join(regex.escape(s) for s in sorted(vault.surrogates, key=len, reverse=True))
    if surrogates:
        # Word boundaries keep a surrogate from matching inside a longer word.
        alternatives.append(rf"(?<!\w)(?-i:(?P<surrogate>{surrogates}))(?!\w)")
    if not alternatives:
        return None
    return regex.compile("|".join(alternatives), flags=regex.IGNORECASE)


def _first_chars(vault: Vault) -> str:
    chars = "<[&\\"
    for entity_type in vault.entity_types:
        chars += entity_type[0].lower() + entity_type[0].upper()
    for surrogate in vault.surrogates:
        chars += surrogate[:1]
    return chars


def _longest_form(vault: Vault) -> int:
    """Return the length of the longest text the pattern can match."""
    longest_type = max((len(t) for t in vault.entity_types), default=0)
    longest_placeholder = 2 * _LONGEST_BRACKET + 2 + longest_type + 1 + _MAX_DIGITS
    return max([longest_placeholder, *(len(s) for s in vault.surrogates)])
