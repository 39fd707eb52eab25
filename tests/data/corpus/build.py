"""Write the labelled evaluation corpus (pii.jsonl, technical.jsonl) from marked templates.

Run `python tests/data/corpus/build.py` after changing a template, and commit the
.jsonl files with it; `--check` exits 1 when the committed files are stale.

A template marks each labelled value with `⟦slot⟧`, `⟦slot#n⟧` or
`⟦ENTITY_TYPE=literal value⟧`. The builder replaces the marker with the value
and records the span, so offsets are computed and never counted by hand.
Slots of one template instance with the same name and number get the same
value; `#n` picks another person or value. Every value is synthetic: names are
drawn from the pools below, addresses use example.com/org/net, card numbers
are the networks' published test numbers, IBANs are the registries' examples,
phone numbers are from fictional ranges (US 555-01xx, UK 07700 900xxx) and IP
addresses from the documentation ranges of RFC 5737.
"""

from __future__ import annotations

import argparse
import json
import random
import re
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import technical_texts  # noqa: E402 (needs the path above)
import templates  # noqa: E402 (needs the path above)
from pools import value_for  # noqa: E402 (needs the path above)

MARKER = re.compile(r"⟦([A-Za-z][A-Za-z0-9_]*)(?:#(\d+))?(?:=([^⟧]*))?⟧")
SEED = 20261204


@dataclass(frozen=True)
class Record:
    """One corpus text with its labelled spans."""

    id: str
    category: str
    technical: bool
    text: str
    spans: tuple[tuple[int, int, str], ...]

    def to_json(self) -> str:
        spans = [{"start": s, "end": e, "entity_type": t} for s, e, t in self.spans]
        record = {
            "id": self.id,
            "category": self.category,
            "technical": self.technical,
            "text": self.text,
            "spans": spans,
        }
        return json.dumps(record, ensure_ascii=False)


def render(
    template: str, pick: Callable[[str, int], tuple[str, str]]
) -> tuple[str, list[tuple[int, int, str]]]:
    """Replace the markers of `template`; `pick(slot, n)` returns (value, entity type)."""
    parts: list[str] = []
    spans: list[tuple[int, int, str]] = []
    length = 0
    position = 0
    for match in MARKER.finditer(template):
        literal = template[position : match.start()]
        parts.append(literal)
        length += len(literal)

        name, number, value = match.group(1), int(match.group(2) or 1), match.group(3)
        if value is None:
            value, entity_type = pick(name, number)
        else:
            entity_type = name
        parts.append(value)
        spans.append((length, length + len(value), entity_type))
        length += len(value)
        position = match.end()
    parts.append(template[position:])
    return "".join(parts), spans


def instantiate(template: str, rng: random.Random) -> tuple[str, list[tuple[int, int, str]]]:
    """Render one instance of a template, with one value per (slot, number)."""
    chosen: dict[tuple[str, int], tuple[str, str]] = {}
    people: dict[int, int] = {}

    def pick(slot: str, number: int) -> tuple[str, str]:
        key = (slot, number)
        if key not in chosen:
            person_seed = people.setdefault(number, rng.randrange(1 << 30))
            chosen[key] = value_for(slot, random.Random(person_seed), rng)
        return chosen[key]

    return render(template, pick)


def pii_records() -> Iterator[Record]:
    rng = random.Random(SEED)
    for category, group in templates.TEMPLATES.items():
        for index, (template, copies) in enumerate(group):
            for copy in range(copies):
                text, spans = instantiate(template, rng)
                yield Record(f"{category}-{index:03d}-{copy}", category, False, text, tuple(spans))


def technical_records() -> Iterator[Record]:
    rng = random.Random(SEED + 1)
    for category, identifier, template in technical_texts.all_texts(rng):
        text, spans = render(template, _no_slots)
        yield Record(f"{category}-{identifier}", category, True, text, tuple(spans))


def _no_slots(slot: str, number: int) -> tuple[str, str]:
    raise ValueError(f"technical texts use literal markers only, got slot {slot!r}")


def build() -> dict[str, str]:
    """Return the content of each corpus file by file name."""
    return {
        "pii.jsonl": "".join(r.to_json() + "\n" for r in pii_records()),
        "technical.jsonl": "".join(r.to_json() + "\n" for r in technical_records()),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="compare instead of writing")
    args = parser.parse_args(argv)

    stale = []
    for name, content in build().items():
        path = HERE / name
        if args.check:
            if not path.exists() or path.read_text(encoding="utf-8") != content:
                stale.append(name)
        else:
            path.write_text(content, encoding="utf-8")
    if stale:
        print(f"stale corpus files: {', '.join(stale)}; run {Path(__file__).name}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
