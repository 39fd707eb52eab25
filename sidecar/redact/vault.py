"""The placeholder vault of one request: which placeholder stands for which value."""

from __future__ import annotations

import re
from collections.abc import Iterable

# Anything a client could type that our restorer might read as a placeholder:
# `<TYPE_N>`, `[TYPE N]`, `TYPE_N` in any letter case.
_PLACEHOLDER_LIKE = re.compile(r"(?<![A-Za-z0-9])([A-Za-z][A-Za-z_]*?)[_ ]([0-9]+)(?![0-9])")


def placeholder_text(entity_type: str, number: int) -> str:
    return f"<{entity_type}_{number}>"


def reserved_keys(texts: Iterable[str]) -> set[tuple[str, int]]:
    """Return the (TYPE, N) pairs that already occur in the request's own text.

    The vault never issues these, so a placeholder the user typed can never be
    restored to somebody else's value.
    """
    keys: set[tuple[str, int]] = set()
    for text in texts:
        for match in _PLACEHOLDER_LIKE.finditer(text):
            keys.add((match.group(1).upper(), int(match.group(2))))
    return keys


class Vault:
    """The reversible mapping of one request.

    Numbers are issued per entity type, in the order `placeholder_for` is
    called, so a caller that walks texts in message order gets the same
    numbering every time the same conversation is sent. One value gets one
    placeholder, even when it is detected as different types in two places.
    """

    def __init__(self, reserved: set[tuple[str, int]] | None = None) -> None:
        self._reserved = reserved or set()
        self._by_value: dict[str, str] = {}
        self._values: dict[tuple[str, int], str] = {}
        self._next_number: dict[str, int] = {}
        self._surrogates: dict[str, str] = {}

    def placeholder_for(self, entity_type: str, value: str) -> str:
        existing = self._by_value.get(value)
        if existing is not None:
            return existing
        number = self._next_free_number(entity_type)
        placeholder = placeholder_text(entity_type, number)
        self._by_value[value] = placeholder
        self._values[(entity_type, number)] = value
        return placeholder

    def add_surrogate(self, surrogate: str, value: str) -> None:
        """Record a surrogate value so the restorer maps it back to `value`."""
        self._surrogates[surrogate] = value

    def lookup(self, entity_type: str, number: int) -> str | None:
        return self._values.get((entity_type.upper(), number))

    def lookup_surrogate(self, surrogate: str) -> str | None:
        return self._surrogates.get(surrogate)

    @property
    def entity_types(self) -> set[str]:
        return {entity_type for entity_type, _ in self._values}

    @property
    def surrogates(self) -> list[str]:
        return list(self._surrogates)

    def __len__(self) -> int:
        return len(self._values) + len(self._surrogates)

    def __repr__(self) -> str:
        # Never show values: vaults end up in tracebacks and debug logs.
        return f"<Vault placeholders={len(self._values)} surrogates={len(self._surrogates)}>"

    def _next_free_number(self, entity_type: str) -> int:
        number = self._next_number.get(entity_type, 1)
        while (entity_type, number) in self._reserved:
            number += 1
        self._next_number[entity_type] = number + 1
        return number
