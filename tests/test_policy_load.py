"""Tests of policy loading: every validation error names the file, the field path and the value."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from sidecar.policy.catalog import Catalog, default_catalog
from sidecar.policy.load import PolicyError, load_policy, load_policy_files, parse_policy
from sidecar.policy.model import Action, MaskSettings, Mode
from sidecar.policy.runtime import runtime_of

REPO = Path(__file__).resolve().parent.parent
SHIPPED = sorted((REPO / "policies").glob("*.yaml"))
HASH_KEY = "k" * 32


def parse(text: str, source: str = "policy.yaml", base_dir: Path | None = None) -> object:
    return parse_policy(textwrap.dedent(text).encode(), source, base_dir)


def problems_of(text: str, base_dir: Path | None = None) -> list[str]:
    with pytest.raises(PolicyError) as caught:
        parse(text, base_dir=base_dir)
    return list(caught.value.problems)


MINIMAL = "version: 1\nname: test\n"


@pytest.mark.parametrize("path", SHIPPED, ids=[path.stem for path in SHIPPED])
def test_shipped_policy_loads(path: Path) -> None:
    policy = load_policy(path)

    assert policy.name == path.stem
    assert policy.content_hash.startswith("sha256:")


def test_minimal_policy_has_defaults() -> None:
    policy = parse(MINIMAL)

    assert policy.mode is Mode.ENFORCE
    assert policy.languages == ("en",)
    assert policy.secrets is True
    assert policy.rule_for("PERSON").action is Action.PLACEHOLDER
    assert policy.rule_for("PERSON").min_score == 0.5


def test_content_hash_is_sha256_of_bytes() -> None:
    import hashlib

    raw = MINIMAL.encode()

    policy = parse_policy(raw, "policy.yaml")

    assert policy.content_hash == "sha256:" + hashlib.sha256(raw).hexdigest()


def test_rule_merges_entity_and_policy_settings() -> None:
    policy = parse(
        """
        version: 1
        name: test
        min_score: 0.6
        redact_text: "[{entity_type}]"
        mask: {mask_char: "#", keep_last: 2}
        entities:
          CREDIT_CARD: {action: mask, mask: {keep_last: 4}}
          PERSON: {action: redact, min_score: 0.8}
        """
    )

    card = policy.rule_for("CREDIT_CARD")
    person = policy.rule_for("PERSON")
    assert card.mask == MaskSettings(mask_char="#", keep_last=4)
    assert card.min_score == 0.6
    assert person.min_score == 0.8
    assert person.redact_text == "[{entity_type}]"


INVALID = [
    pytest.param(
        "version: 2\nname: x\n", "policy.yaml: version: Input should be 1 (got 2)", id="version"
    ),
    pytest.param("name: x\n", "policy.yaml: version: Field required", id="missing-version"),
    pytest.param(
        MINIMAL + "colour: blue\n",
        "policy.yaml: colour: unknown field (got 'blue')",
        id="unknown-key",
    ),
    pytest.param(
        MINIMAL + "entities:\n  PERSON: {action: placeholder, colour: red}\n",
        "policy.yaml: entities.PERSON.colour: unknown field (got 'red')",
        id="unknown-nested-key",
    ),
    pytest.param(
        MINIMAL + "min_score: high\n",
        "policy.yaml: min_score: Input should be a valid number, unable to parse string as a number (got 'high')",
        id="wrong-type",
    ),
    pytest.param(
        MINIMAL + "min_score: 1.5\n",
        "policy.yaml: min_score: Input should be less than or equal to 1 (got 1.5)",
        id="score-range",
    ),
    pytest.param(
        MINIMAL + "entities:\n  PERSON: {action: scramble}\n",
        "policy.yaml: entities.PERSON.action: Input should be 'placeholder', 'redact', 'mask', "
        "'hash', 'surrogate', 'block' or 'allow' (got 'scramble')",
        id="unknown-action",
    ),
    pytest.param(
        "version: 1\nname: has space\n",
        "policy.yaml: name: must start with a letter or digit and contain only letters, digits, "
        "'_', '.' and '-' (got 'has space')",
        id="policy-name",
    ),
    pytest.param(
        MINIMAL + "mode: shadow\n",
        "policy.yaml: mode: Input should be 'enforce' or 'audit' (got 'shadow')",
        id="mode",
    ),
    pytest.param(
        MINIMAL + "languages: [english]\n",
        "policy.yaml: languages[0]: must be a two- or three-letter ISO 639 language code in lower "
        "case, such as en (got 'english')",
        id="language-code",
    ),
    pytest.param(
        MINIMAL + "languages: [de]\n",
        "policy.yaml: languages[0]: the detector has no NLP model for this language; it supports: en (got 'de')",
        id="language-without-model",
    ),
    pytest.param(
        MINIMAL + "languages: []\n",
        "policy.yaml: languages: list at least one language; the detector supports: en",
        id="no-language",
    ),
    pytest.param(
        MINIMAL + "entities:\n  EMPLOYEE_ID: {action: redact}\n",
        "policy.yaml: entities.EMPLOYEE_ID: unknown entity type: neither the detector nor the "
        "policy's recognizers or deny_list report it; known types: AGE, CREDIT_CARD,",
        id="unknown-entity",
    ),
    pytest.param(
        MINIMAL + "secrets: false\nentities:\n  SECRET: {action: block}\n",
        "policy.yaml: entities.SECRET: the secrets pack reports this type, but the policy switches it "
        "off (secrets: false)",
        id="secret-without-pack",
    ),
    pytest.param(
        MINIMAL + "allow_list: [{regex: '(unclosed'}]\n",
        "policy.yaml: allow_list[0].regex: invalid regular expression: missing ) at position 9 "
        "(got '(unclosed')",
        id="allow-regex",
    ),
    pytest.param(
        MINIMAL + "allow_list: [{term: ''}]\n",
        "policy.yaml: allow_list[0].term: String should have at least 1 character (got '')",
        id="allow-empty-term",
    ),
    pytest.param(
        MINIMAL
        + "recognizers:\n  - name: r\n    supported_entity: X\n"
        + "    patterns: [{name: p, regex: '[a-', score: 0.5}]\n",
        "policy.yaml: recognizers[0].patterns[0].regex: invalid regular expression: unterminated "
        "character set at position 3 (got '[a-')",
        id="recognizer-regex",
    ),
    pytest.param(
        MINIMAL
        + "recognizers:\n  - name: r\n    supported_entity: X\n"
        + "    patterns: [{name: p, regex: 'x', score: 2}]\n",
        "policy.yaml: recognizers[0].patterns[0].score: Input should be less than or equal to 1 (got 2)",
        id="pattern-score",
    ),
    pytest.param(
        MINIMAL
        + "recognizers:\n  - name: r\n    supported_entity: employee-id\n    deny_list: [x]\n",
        "policy.yaml: recognizers[0].supported_entity: must be upper-case letters and underscores, "
        "such as EMPLOYEE_ID (got 'employee-id')",
        id="entity-type-name",
    ),
    pytest.param(
        MINIMAL
        + "recognizers:\n  - name: r\n    supported_entity: X\n    deny_list: [x]\n    validator: crc32\n",
        "policy.yaml: recognizers[0].validator: Input should be 'luhn', 'iban', 'mod97', "
        "'aba_routing', 'verhoeff' or 'nhs' (got 'crc32')",
        id="unknown-validator",
    ),
    pytest.param(
        MINIMAL + "recognizers:\n  - name: r\n    supported_entity: X\n",
        "policy.yaml: recognizers[0]: a recognizer needs patterns, a deny_list, or both",
        id="recognizer-without-patterns",
    ),
    pytest.param(
        MINIMAL + "recognizers:\n  - name: r\n    deny_list: [x]\n",
        "policy.yaml: recognizers[0]: missing supported_entity: name the entity type the recognizer reports",
        id="recognizer-without-entity",
    ),
    pytest.param(
        MINIMAL + "recognizers:\n  - name: r\n    supported_entities: [A, B]\n    deny_list: [x]\n",
        "policy.yaml: recognizers[0].supported_entities: a pattern recognizer reports one entity "
        "type; list one, or add a recognizer per type (got ['A', 'B'])",
        id="recognizer-two-entities",
    ),
    pytest.param(
        MINIMAL
        + "recognizers:\n"
        + "  - {name: r, supported_entity: A, deny_list: [x]}\n"
        + "  - {name: r, supported_entity: B, deny_list: [y]}\n",
        "policy.yaml: recognizers[1].name: the name is already used by recognizers[0] (got 'r')",
        id="recognizer-duplicate-name",
    ),
    pytest.param(
        MINIMAL + "recognizers:\n  - {name: NoSuchRecognizer, type: predefined, enabled: false}\n",
        "policy.yaml: recognizers[0].name: unknown predefined recognizer; the detector has: ",
        id="unknown-predefined",
    ),
    pytest.param(
        MINIMAL + "recognizers:\n  - {name: PhoneRecognizer, type: predefined, context: [tel]}\n",
        "policy.yaml: recognizers[0].context: a predefined recognizer takes only name, type, enabled, "
        "class_name, supported_language(s) and country_code, because every policy shares one instance "
        "of it (got ['tel'])",
        id="predefined-parameters",
    ),
    pytest.param(
        MINIMAL + "deny_list:\n  project: [Bluebird]\n",
        "policy.yaml: deny_list.project: invalid key: must be upper-case letters and underscores, "
        "such as EMPLOYEE_ID (got 'project')",
        id="deny-list-type",
    ),
    pytest.param(
        MINIMAL + "deny_list:\n  PROJECT: []\n",
        "policy.yaml: deny_list.PROJECT: lists no terms",
        id="deny-list-empty",
    ),
    pytest.param(
        MINIMAL + "allow_list: [Bluebird]\ndeny_list:\n  PROJECT: [bluebird]\n",
        "policy.yaml: deny_list.PROJECT[0]: the term is also allowed by allow_list[0], so it would be "
        "both always and never replaced (got 'bluebird')",
        id="deny-and-allow-term",
    ),
    pytest.param(
        MINIMAL + "allow_list: [{regex: 'blue.*'}]\ndeny_list:\n  PROJECT: [bluebird]\n",
        "policy.yaml: deny_list.PROJECT[0]: the term is also allowed by allow_list[0]",
        id="deny-and-allow-regex",
    ),
    pytest.param(
        MINIMAL + "entities:\n  PERSON: {action: redact, mask: {keep_last: 2}}\n",
        "policy.yaml: entities.PERSON.mask: mask applies only to action mask, but the action is redact",
        id="mask-settings-without-mask",
    ),
    pytest.param(
        MINIMAL + "entities:\n  PERSON: {action: mask, redact_text: x}\n",
        "policy.yaml: entities.PERSON.redact_text: redact_text applies only to action redact, but the "
        "action is mask",
        id="redact-text-without-redact",
    ),
    pytest.param(
        MINIMAL + "entities:\n  PERSON: {action: placeholder, hash: {length: 12}}\n",
        "policy.yaml: entities.PERSON.hash: hash applies only to action hash, but the action is placeholder",
        id="hash-settings-without-hash",
    ),
    pytest.param(
        MINIMAL + "hash: {key_env: A, key_file: b}\n",
        "policy.yaml: hash: set key_env or key_file for the HMAC key, not both",
        id="hash-two-keys",
    ),
    pytest.param(
        MINIMAL + "hash: {key_env: A, length: 4}\n",
        "policy.yaml: hash.length: Input should be greater than or equal to 8 (got 4)",
        id="hash-length",
    ),
    pytest.param(
        MINIMAL + "mask: {mask_char: '**'}\n",
        "policy.yaml: mask.mask_char: String should have at most 1 character (got '**')",
        id="mask-char",
    ),
    pytest.param(
        MINIMAL + "hash: {template: '<{entity_type}>'}\n",
        "policy.yaml: hash: hash template '<{entity_type}>' must contain {digest}",
        id="hash-template",
    ),
    pytest.param(
        MINIMAL + "entities:\n  PERSON: {action: hash, hash: {template: '{value}'}}\n",
        "policy.yaml: entities.PERSON.hash: invalid field {value} in hash template '{value}'",
        id="entity-hash-template",
    ),
    pytest.param(
        MINIMAL
        + "scope: {system: false, user: false, assistant: false, tool_results: false, "
        + "tool_arguments: false}\n",
        "policy.yaml: scope: every part of the request is switched off, so nothing would be scanned",
        id="empty-scope",
    ),
    pytest.param(
        MINIMAL + "content_hash: sha256:00\n",
        "policy.yaml: content_hash: the sidecar sets this field; remove it",
        id="content-hash-set",
    ),
    pytest.param(
        MINIMAL + "entities:\n  PERSON: {action: redact}\n  PERSON: {action: allow}\n",
        "policy.yaml: invalid YAML at line 5, column 3: duplicate key 'PERSON'",
        id="duplicate-key",
    ),
    pytest.param(
        "version: [1\n",
        "policy.yaml: invalid YAML at line 2, column 1: expected ',' or ']', but got '<stream end>' "
        "(while parsing a flow sequence)",
        id="not-yaml",
    ),
    pytest.param(
        "- version: 1\n", "policy.yaml: a policy must be a YAML mapping, got list", id="not-mapping"
    ),
    pytest.param("", "policy.yaml: a policy must be a YAML mapping, got empty", id="empty-file"),
]


@pytest.mark.parametrize(("document", "expected"), INVALID)
def test_invalid_policy_names_field(document: str, expected: str) -> None:
    problems = problems_of(document)

    assert any(problem.startswith(expected) for problem in problems), problems


def test_every_problem_is_listed() -> None:
    document = MINIMAL + "colour: blue\nmin_score: 3\nmode: shadow\n"

    problems = problems_of(document)

    assert len(problems) == 3


def test_semantic_problems_are_all_listed() -> None:
    document = (
        MINIMAL
        + "languages: [en, fr]\nentities:\n  A_TYPE: {action: redact}\n  B_TYPE: {action: redact}\n"
    )

    problems = problems_of(document)

    assert [problem.split(":")[1].strip() for problem in problems] == [
        "languages[1]",
        "entities.A_TYPE",
        "entities.B_TYPE",
    ]


def test_missing_file_names_path(tmp_path: Path) -> None:
    missing = tmp_path / "absent.yaml"

    with pytest.raises(PolicyError, match=r"absent.yaml: cannot read file: No such file"):
        load_policy(missing)


def test_custom_types_are_known() -> None:
    policy = parse(
        """
        version: 1
        name: test
        deny_list:
          PROJECT: [Bluebird]
        recognizers:
          - name: employee ids
            supported_entity: EMPLOYEE_ID
            patterns: [{name: id, regex: 'E-\\d{6}', score: 0.6}]
        entities:
          PROJECT: {action: redact}
          EMPLOYEE_ID: {action: block}
        """
    )

    assert policy.rule_for("EMPLOYEE_ID").action is Action.BLOCK


def test_recognizer_in_unlisted_language_is_idle() -> None:
    document = (
        MINIMAL
        + "recognizers:\n  - {name: r, supported_entity: STEUER_ID, supported_language: de, deny_list: [x]}\n"
        + "entities:\n  STEUER_ID: {action: redact}\n"
    )

    problems = problems_of(document)

    assert problems == [
        "policy.yaml: entities.STEUER_ID: only recognizer r (de) reports this type, in languages "
        "the policy does not list under languages"
    ]


def test_catalog_decides_known_types() -> None:
    catalog = Catalog(
        entity_types=frozenset({"PERSON"}),
        recognizer_names=frozenset(),
        languages=frozenset({"en"}),
        secret_entity_types=frozenset({"SECRET"}),
    )
    raw = (MINIMAL + "entities:\n  EMAIL_ADDRESS: {action: redact}\n").encode()

    with pytest.raises(PolicyError, match=r"entities\.EMAIL_ADDRESS: unknown entity type"):
        parse_policy(raw, "policy.yaml", catalog=catalog)


def test_default_catalog_lists_detector_types() -> None:
    catalog = default_catalog()

    assert {"PERSON", "EMAIL_ADDRESS", "CREDIT_CARD", "US_SSN"} <= catalog.entity_types
    assert catalog.secret_entity_types == {"SECRET"}
    assert "EmailRecognizer" in catalog.recognizer_names


def test_hash_key_from_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TEST_PII_HASH_KEY", HASH_KEY + "\n")
    document = MINIMAL + "hash: {key_env: TEST_PII_HASH_KEY}\nentities:\n  PERSON: {action: hash}\n"

    policy = parse(document)

    assert runtime_of(policy).hash_key == HASH_KEY.encode()


def test_hash_key_from_relative_file(tmp_path: Path) -> None:
    (tmp_path / "hash.key").write_text(HASH_KEY + "\n")
    document = MINIMAL + "hash: {key_file: hash.key}\nentities:\n  PERSON: {action: hash}\n"

    loaded = load_policy_files(_write(tmp_path / "p.yaml", document))

    assert runtime_of(loaded.policy).hash_key == HASH_KEY.encode()
    assert tmp_path / "hash.key" in loaded.files


def test_hash_key_unset_is_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("TEST_PII_HASH_KEY", raising=False)
    document = MINIMAL + "hash: {key_env: TEST_PII_HASH_KEY}\nentities:\n  PERSON: {action: hash}\n"

    problems = problems_of(document)

    assert problems == [
        "policy.yaml: hash: hash key environment variable TEST_PII_HASH_KEY is not set or empty; "
        "the hash action needs a secret key, for example `export TEST_PII_HASH_KEY=$(openssl rand "
        "-hex 32)`"
    ]


def test_hash_key_defaults_to_sidecar_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PII_SIDECAR_HASH_KEY", HASH_KEY)

    policy = parse(MINIMAL + "entities:\n  EMAIL_ADDRESS: {action: hash}\n")

    assert runtime_of(policy).hash_key == HASH_KEY.encode()


def test_hash_without_any_key_is_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("PII_SIDECAR_HASH_KEY", raising=False)

    problems = problems_of(MINIMAL + "entities:\n  EMAIL_ADDRESS: {action: hash}\n")

    assert problems[0].startswith(
        "policy.yaml: hash: hash key environment variable PII_SIDECAR_HASH_KEY is not set or empty"
    )


def test_hash_key_too_short_is_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TEST_PII_HASH_KEY", "short")
    document = MINIMAL + "hash: {key_env: TEST_PII_HASH_KEY}\nentities:\n  PERSON: {action: hash}\n"

    problems = problems_of(document)

    assert "TEST_PII_HASH_KEY is 5 bytes long; an HMAC key needs at least 16 bytes" in problems[0]
    assert "short" not in problems[0]


def test_hash_key_not_read_without_hash_action(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("TEST_PII_HASH_KEY", raising=False)

    policy = parse(MINIMAL + "hash: {key_env: TEST_PII_HASH_KEY}\n")

    assert runtime_of(policy).hash_key is None


def _write(path: Path, text: str) -> Path:
    path.write_text(textwrap.dedent(text))
    return path


PRESIDIO_FILE = """\
recognizers:
  -
    name: "Zip code Recognizer"
    supported_language: "en"
    patterns:
      -
         name: "zip code (weak)"
         regex: "(\\\\b\\\\d{5}(?:\\\\-\\\\d{4})?\\\\b)"
         score: 0.01
    context:
     - zip
     - code
    supported_entity: "ZIP"
  -
    name: "Titles recognizer"
    supported_language: "en"
    supported_entity: "TITLE"
    deny_list:
      - Mr.
      - Mrs.
      - Dr.
  -
    name: "German only"
    supported_language: "de"
    supported_entity: "PLZ"
    patterns: [{name: plz, regex: "\\\\d{5}", score: 0.3}]
"""


def test_presidio_recognizer_file_loads(tmp_path: Path) -> None:
    _write(tmp_path / "presidio.yaml", PRESIDIO_FILE)
    policy_path = _write(
        tmp_path / "p.yaml",
        MINIMAL
        + "recognizer_files: [presidio.yaml]\nentities:\n  ZIP: {action: redact}\n  TITLE: {action: allow}\n",
    )

    loaded = load_policy_files(policy_path)

    names = sorted(recognizer.name for recognizer in runtime_of(loaded.policy).recognizers)
    assert "Titles recognizer" in names
    assert "Zip code Recognizer" in names
    assert "German only" not in names
    assert loaded.files == (policy_path, tmp_path / "presidio.yaml")


def test_presidio_entries_inline_load() -> None:
    policy = parse(
        """
        version: 1
        name: test
        recognizers:
          - name: "Titles recognizer"
            supported_language: "en"
            supported_entity: "TITLE"
            deny_list: [Mr., Mrs.]
            type: custom
            enabled: true
            version: "0.0.1"
            score_thresholds: {default: 0.3}
          - {name: EmailRecognizer, type: predefined, enabled: false}
        """
    )

    runtime = runtime_of(policy)
    assert "EmailRecognizer" in runtime.disabled_recognizers
    assert runtime.recognizers[0].score_thresholds == {"default": 0.3}


def test_recognizer_file_errors_name_file(tmp_path: Path) -> None:
    _write(
        tmp_path / "bad.yaml",
        "recognizers:\n  - name: r\n    supported_entity: X\n    colour: red\n    deny_list: [x]\n",
    )
    policy_path = _write(
        tmp_path / "p.yaml", MINIMAL + "recognizer_files: [bad.yaml, absent.yaml]\n"
    )

    with pytest.raises(PolicyError) as caught:
        load_policy(policy_path)

    problems = caught.value.problems
    assert (
        problems[0] == f"{tmp_path / 'bad.yaml'}: recognizers[0].colour: unknown field (got 'red')"
    )
    assert problems[1].startswith(
        f"{policy_path}: recognizer_files[1]: {tmp_path / 'absent.yaml'}: cannot read file"
    )


def test_recognizer_file_changes_content_hash(tmp_path: Path) -> None:
    recognizers = _write(
        tmp_path / "r.yaml", "recognizers:\n  - {name: r, supported_entity: X, deny_list: [a]}\n"
    )
    policy_path = _write(tmp_path / "p.yaml", MINIMAL + "recognizer_files: [r.yaml]\n")
    before = load_policy(policy_path).content_hash

    recognizers.write_text("recognizers:\n  - {name: r, supported_entity: X, deny_list: [b]}\n")

    assert load_policy(policy_path).content_hash != before


def test_recognizer_file_takes_file_defaults(tmp_path: Path) -> None:
    _write(
        tmp_path / "r.yaml",
        "supported_languages: [de]\nrecognizers:\n  - {name: r, supported_entity: X, deny_list: [a]}\n",
    )
    policy_path = _write(tmp_path / "p.yaml", MINIMAL + "recognizer_files: [r.yaml]\n")

    policy = load_policy(policy_path)

    assert all(recognizer.name != "r" for recognizer in runtime_of(policy).recognizers)
