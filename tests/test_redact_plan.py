"""Tests of the redaction plan: every action on the request side, without a detector.

Findings are written by hand, so each test controls exactly what was found.
"""

from __future__ import annotations

import re
import textwrap

import pytest

from sidecar.detect.findings import Finding
from sidecar.policy.load import parse_policy
from sidecar.policy.model import Action, Policy
from sidecar.redact.plan import build_plan
from sidecar.redact.restore import Restorer

HASH_KEY = "0123456789abcdef0123456789abcdef"
SEED = b"test-seed"


def policy(body: str = "") -> Policy:
    text = "version: 1\nname: test\nsecrets: false\n" + textwrap.dedent(body)
    return parse_policy(text.encode(), "test.yaml")


def find(
    text: str, value: str, entity_type: str, score: float = 0.9, occurrence: int = 0
) -> Finding:
    starts = [match.start() for match in re.finditer(re.escape(value), text)]
    start = starts[occurrence]
    return Finding(entity_type, start, start + len(value), score)


def test_placeholder_numbers_by_first_appearance() -> None:
    text = "Ann Lee met Bob Stone, then Ann Lee left."
    findings = [
        find(text, "Ann Lee", "PERSON"),
        find(text, "Bob Stone", "PERSON"),
        find(text, "Ann Lee", "PERSON", occurrence=1),
    ]

    plan = build_plan(policy(), [text], [findings])

    assert plan.texts == ["<PERSON_1> met <PERSON_2>, then <PERSON_1> left."]
    assert plan.vault.lookup("PERSON", 2) == "Bob Stone"


def test_placeholder_is_restored() -> None:
    text = "Mail ann@example.org today."
    plan = build_plan(policy(), [text], [[find(text, "ann@example.org", "EMAIL_ADDRESS")]])

    restored = Restorer(plan.vault).restore("Sent to <EMAIL_ADDRESS_1>.")

    assert restored == "Sent to ann@example.org."


def test_redact_uses_fixed_text() -> None:
    text = "SSN 219-09-9999 on file."
    plan = build_plan(
        policy("default_action: redact\n"), [text], [[find(text, "219-09-9999", "US_SSN")]]
    )

    assert plan.texts == ["SSN [REDACTED] on file."]
    assert len(plan.vault) == 0


def test_redact_text_names_type() -> None:
    text = "Ann Lee called."
    rules = "entities:\n  PERSON: {action: redact, redact_text: '[{entity_type} removed]'}\n"

    plan = build_plan(policy(rules), [text], [[find(text, "Ann Lee", "PERSON")]])

    assert plan.texts == ["[PERSON removed] called."]


def test_redact_is_never_restored() -> None:
    text = "Ann Lee called."
    plan = build_plan(
        policy("default_action: redact\n"), [text], [[find(text, "Ann Lee", "PERSON")]]
    )

    assert Restorer(plan.vault).restore("[REDACTED] <PERSON_1>") == "[REDACTED] <PERSON_1>"


def test_mask_keeps_last_digits() -> None:
    text = "Card 4111 1111 1111 1111 expired."
    rules = "entities:\n  CREDIT_CARD: {action: mask, mask: {keep_last: 4}}\n"

    plan = build_plan(policy(rules), [text], [[find(text, "4111 1111 1111 1111", "CREDIT_CARD")]])

    assert plan.texts == ["Card **** **** **** 1111 expired."]


def test_mask_char_and_separators_configurable() -> None:
    text = "Call 415-555-0134."
    rules = (
        "mask: {mask_char: '#', keep_separators: false}\n"
        "entities:\n  PHONE_NUMBER: {action: mask, mask: {keep_first: 3}}\n"
    )

    plan = build_plan(policy(rules), [text], [[find(text, "415-555-0134", "PHONE_NUMBER")]])

    assert plan.texts == ["Call 415#########."]


def test_hash_is_keyed_and_truncated(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PII_SIDECAR_HASH_KEY", HASH_KEY)
    text = "Mail ann@example.org and ann@example.org."
    rules = "hash: {length: 12}\nentities:\n  EMAIL_ADDRESS: {action: hash}\n"
    findings = [
        find(text, "ann@example.org", "EMAIL_ADDRESS"),
        find(text, "ann@example.org", "EMAIL_ADDRESS", occurrence=1),
    ]

    plan = build_plan(policy(rules), [text], [findings])

    match = re.fullmatch(r"Mail (<EMAIL_ADDRESS:hmac:[0-9a-f]{12}>) and \1\.", plan.texts[0])
    assert match is not None
    assert len(plan.vault) == 0


def test_hash_depends_on_key(monkeypatch: pytest.MonkeyPatch) -> None:
    text = "Mail ann@example.org."
    rules = "entities:\n  EMAIL_ADDRESS: {action: hash}\n"
    findings = [[find(text, "ann@example.org", "EMAIL_ADDRESS")]]
    monkeypatch.setenv("PII_SIDECAR_HASH_KEY", HASH_KEY)
    first = build_plan(policy(rules), [text], findings).texts[0]

    monkeypatch.setenv("PII_SIDECAR_HASH_KEY", HASH_KEY[::-1])
    second = build_plan(policy(rules), [text], findings).texts[0]

    assert first != second


def test_hash_template_per_entity(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PII_SIDECAR_HASH_KEY", HASH_KEY)
    text = "User ann@example.org."
    rules = (
        "entities:\n  EMAIL_ADDRESS: {action: hash, hash: {template: 'user-{digest}', length: 8}}\n"
    )

    plan = build_plan(policy(rules), [text], [[find(text, "ann@example.org", "EMAIL_ADDRESS")]])

    assert re.fullmatch(r"User user-[0-9a-f]{8}\.", plan.texts[0])


def test_surrogate_is_consistent_and_restored() -> None:
    text = "Ann Lee wrote to Ann Lee."
    rules = "entities:\n  PERSON: {action: surrogate}\n"
    findings = [find(text, "Ann Lee", "PERSON"), find(text, "Ann Lee", "PERSON", occurrence=1)]

    plan = build_plan(policy(rules), [text], [findings], surrogate_seed=SEED)

    surrogate = plan.texts[0].split(" wrote to ")[0]
    assert plan.texts[0] == f"{surrogate} wrote to {surrogate}."
    assert surrogate != "Ann Lee"
    assert Restorer(plan.vault).restore(f"Hello {surrogate}!") == "Hello Ann Lee!"


def test_surrogate_keeps_type_format() -> None:
    text = "Card 4111 1111 1111 1111."
    rules = "entities:\n  CREDIT_CARD: {action: surrogate}\n"

    plan = build_plan(
        policy(rules),
        [text],
        [[find(text, "4111 1111 1111 1111", "CREDIT_CARD")]],
        surrogate_seed=SEED,
    )

    assert re.fullmatch(r"Card \d{4} \d{4} \d{4} \d{4}\.", plan.texts[0])
    assert plan.texts[0] != text


def test_surrogate_avoids_request_text() -> None:
    text = "Ann Lee"
    rules = "entities:\n  PERSON: {action: surrogate}\n"

    for seed in (b"a", b"b", b"c", b"d"):
        plan = build_plan(
            policy(rules), [text], [[find(text, "Ann Lee", "PERSON")]], ["Other text"], seed
        )
        surrogate = plan.texts[0]
        assert surrogate not in "Other text"


def test_surrogate_without_letters_falls_back_to_placeholder() -> None:
    text = "Note: --- here"
    rules = "entities:\n  NRP: {action: surrogate}\n"

    plan = build_plan(policy(rules), [text], [[find(text, "---", "NRP")]], surrogate_seed=SEED)

    assert plan.texts == ["Note: <NRP_1> here"]
    assert Restorer(plan.vault).restore("<NRP_1>") == "---"


def test_block_counts_and_redacts() -> None:
    text = "SSN 219-09-9999 and 219-09-9998."
    rules = "entities:\n  US_SSN: {action: block}\n"
    findings = [find(text, "219-09-9999", "US_SSN"), find(text, "219-09-9998", "US_SSN")]

    plan = build_plan(policy(rules), [text], [findings])

    assert plan.blocked_counts == {"US_SSN": 2}
    assert "219-09" not in plan.texts[0]


def test_allow_changes_nothing() -> None:
    text = "Meet on 2024-06-01."
    rules = "entities:\n  DATE_TIME: {action: allow}\n"

    plan = build_plan(policy(rules), [text], [[find(text, "2024-06-01", "DATE_TIME")]])

    assert plan.texts == [text]
    assert plan.changed is False
    assert plan.entity_counts == {"DATE_TIME": {Action.ALLOW: 1}}


def test_below_min_score_is_ignored() -> None:
    text = "Call 415-555-0134."
    rules = "entities:\n  PHONE_NUMBER: {action: redact, min_score: 0.5}\n"

    plan = build_plan(
        policy(rules), [text], [[find(text, "415-555-0134", "PHONE_NUMBER", score=0.4)]]
    )

    assert plan.texts == [text]
    assert plan.entity_counts == {}


def test_audit_mode_rewrites_nothing() -> None:
    text = "Ann Lee, SSN 219-09-9999."
    rules = "mode: audit\nentities:\n  US_SSN: {action: block}\n"
    findings = [find(text, "Ann Lee", "PERSON"), find(text, "219-09-9999", "US_SSN")]

    plan = build_plan(policy(rules), [text], [findings])

    assert plan.texts == [text]
    assert len(plan.vault) == 0
    assert plan.entity_counts == {"PERSON": {Action.PLACEHOLDER: 1}, "US_SSN": {Action.BLOCK: 1}}
    assert plan.spans == [[(0, 7), (13, 24)]]


def test_overlap_takes_strictest_action() -> None:
    text = "Call 415-555-0134 now."
    rules = "entities:\n  PHONE_NUMBER: {action: placeholder}\n  US_BANK_NUMBER: {action: redact}\n"
    findings = [
        find(text, "415-555-0134", "PHONE_NUMBER"),
        find(text, "555-0134", "US_BANK_NUMBER", 0.6),
    ]

    plan = build_plan(policy(rules), [text], [findings])

    assert plan.texts == ["Call [REDACTED] now."]


def test_output_spans_locate_replacements() -> None:
    text = "Ann Lee (ann@example.org) on 2024-06-01"
    rules = "entities:\n  DATE_TIME: {action: allow}\n  EMAIL_ADDRESS: {action: redact}\n"
    findings = [
        find(text, "Ann Lee", "PERSON"),
        find(text, "ann@example.org", "EMAIL_ADDRESS"),
        find(text, "2024-06-01", "DATE_TIME"),
    ]

    plan = build_plan(policy(rules), [text], [findings])

    rewritten = plan.texts[0]
    assert [rewritten[start:end] for start, end in plan.spans[0]] == [
        "<PERSON_1>",
        "[REDACTED]",
        "2024-06-01",
    ]


# Allow list.


def test_allow_term_shields_exact_value() -> None:
    text = "Write to support@acme.example or ann@example.org."
    rules = "allow_list: [support@acme.example]\n"
    findings = [
        find(text, "support@acme.example", "EMAIL_ADDRESS"),
        find(text, "ann@example.org", "EMAIL_ADDRESS"),
    ]

    plan = build_plan(policy(rules), [text], [findings])

    assert plan.texts == ["Write to support@acme.example or <EMAIL_ADDRESS_1>."]


def test_allow_term_shields_finding_inside() -> None:
    text = "Write to support@acme.example."
    rules = "allow_list: [support@acme.example]\n"

    plan = build_plan(policy(rules), [text], [[find(text, "acme.example", "URL")]])

    assert plan.texts == [text]


def test_allow_term_is_case_sensitive_by_default() -> None:
    text = "ACME Corp and Acme Corp"
    rules = "allow_list: [Acme Corp]\n"
    findings = [find(text, "ACME Corp", "ORGANIZATION"), find(text, "Acme Corp", "ORGANIZATION")]

    plan = build_plan(policy(rules), [text], [findings])

    assert plan.texts == ["<ORGANIZATION_1> and Acme Corp"]


def test_allow_term_ignore_case() -> None:
    text = "ACME Corp"
    rules = "allow_list: [{term: Acme Corp, ignore_case: true}]\n"

    plan = build_plan(policy(rules), [text], [[find(text, "ACME Corp", "ORGANIZATION")]])

    assert plan.texts == [text]


def test_allow_term_does_not_shield_longer_finding() -> None:
    text = "Acme Corp Smith"
    rules = "allow_list: [Acme Corp]\n"

    plan = build_plan(policy(rules), [text], [[find(text, "Corp Smith", "PERSON")]])

    assert plan.texts == ["Acme <PERSON_1>"]


def test_allow_regex_must_match_whole_value() -> None:
    text = "Ann Lee at ann@corp.example and bob@corp.example.net"
    rules = "allow_list: [{regex: '[a-z]+@corp\\.example'}]\n"
    findings = [
        find(text, "Ann Lee", "PERSON"),
        find(text, "ann@corp.example", "EMAIL_ADDRESS"),
        find(text, "bob@corp.example.net", "EMAIL_ADDRESS"),
    ]

    plan = build_plan(policy(rules), [text], [findings])

    assert plan.texts == ["<PERSON_1> at ann@corp.example and <EMAIL_ADDRESS_1>"]


def test_context_texts_reserve_placeholder_numbers() -> None:
    text = "Ann Lee"

    plan = build_plan(policy(), [text], [[find(text, "Ann Lee", "PERSON")]], ["see <PERSON_1>"])

    assert plan.texts == ["<PERSON_2>"]
