"""Frozen pydantic models of a version 1 policy file.

The models check what one field can check alone: types, ranges, names and
regular expressions. Checks that need several fields or the detector's entity
types live in `sidecar.policy.checks`.
"""

from __future__ import annotations

from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any, Literal

import regex
from faker.config import AVAILABLE_LOCALES
from pydantic import (
    BaseModel,
    ConfigDict,
    Discriminator,
    Field,
    PrivateAttr,
    Tag,
    field_validator,
    model_validator,
)

# A field named `regex` shadows the module inside model classes, so the type gets its own name.
from regex import Pattern as RegexPattern

from sidecar.redact.operators import (
    DEFAULT_MASK,
    MAX_DIGEST_LENGTH,
    MIN_DIGEST_LENGTH,
    HashOptions,
    MaskOptions,
)
from sidecar.redact.surrogates import DEFAULT_LOCALE

# Entity types become placeholder names such as `<EMPLOYEE_ID_1>`. The
# restorer and the scan for placeholders a user typed read a type as letters
# and underscores, so a custom type may contain nothing else.
ENTITY_TYPE_PATTERN = r"^[A-Z][A-Z_]*$"
# A client names a policy in a header, so names stay within a header-safe set.
POLICY_NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.-]*$"
LANGUAGE_PATTERN = r"^[a-z]{2,3}$"
ENV_VAR_PATTERN = r"^[A-Za-z_][A-Za-z0-9_]*$"

# Presidio compiles recognizer patterns with these flags unless a recognizer
# sets `global_regex_flags` (presidio-analyzer 2.2: DOTALL | MULTILINE | IGNORECASE).
PRESIDIO_REGEX_FLAGS = regex.DOTALL | regex.MULTILINE | regex.IGNORECASE


class Action(StrEnum):
    """The treatment of a detected value."""

    PLACEHOLDER = "placeholder"
    REDACT = "redact"
    MASK = "mask"
    HASH = "hash"
    SURROGATE = "surrogate"
    BLOCK = "block"
    ALLOW = "allow"

    @property
    def reversible(self) -> bool:
        return self in (Action.PLACEHOLDER, Action.SURROGATE)


class Mode(StrEnum):
    """`enforce` rewrites requests; `audit` only detects and records."""

    ENFORCE = "enforce"
    AUDIT = "audit"


class Validator(StrEnum):
    """Named checksums a custom recognizer can run on each regex match."""

    LUHN = "luhn"
    IBAN = "iban"
    MOD97 = "mod97"
    ABA_ROUTING = "aba_routing"
    VERHOEFF = "verhoeff"
    NHS = "nhs"


_DEFAULT_HASH = HashOptions()


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


def compile_regex(pattern: str, flags: int = 0) -> RegexPattern[str]:
    """Compile `pattern` with the `regex` module Presidio uses; raise ValueError if invalid."""
    try:
        return regex.compile(pattern, flags)
    except regex.error as exc:
        raise ValueError(f"invalid regular expression: {exc}") from None


class MaskSettings(_Frozen):
    """Settings of `mask`: the mask character and the characters kept.

    `sidecar.redact.operators.MaskOptions` has the rules. At most half of the
    maskable characters are kept, so a short value is never shown whole.
    """

    mask_char: str = Field(default=DEFAULT_MASK.mask_char, min_length=1, max_length=1)
    keep_first: int = Field(default=DEFAULT_MASK.keep_first, ge=0)
    keep_last: int = Field(default=DEFAULT_MASK.keep_last, ge=0)
    keep_separators: bool = DEFAULT_MASK.keep_separators
    separators: str = DEFAULT_MASK.separators

    @model_validator(mode="after")
    def _check_options(self) -> MaskSettings:
        self.options()
        return self

    def options(self) -> MaskOptions:
        return MaskOptions(**self.model_dump())


class HashSettings(_Frozen):
    """The key of `hash` (HMAC-SHA256) and how a digest is written.

    At most one of `key_env` and `key_file` is set; with neither, the key
    comes from PII_SIDECAR_HASH_KEY. A relative `key_file` is resolved
    against the policy file's directory. The key is read when the policy
    loads, so a policy that hashes does not load without a key.
    """

    key_env: str | None = Field(default=None, pattern=ENV_VAR_PATTERN)
    key_file: str | None = Field(default=None, min_length=1)
    length: int = Field(default=_DEFAULT_HASH.length, ge=MIN_DIGEST_LENGTH, le=MAX_DIGEST_LENGTH)
    """Hexadecimal digits of the digest that are kept."""
    template: str = _DEFAULT_HASH.template
    """The output, from the fields `{entity_type}` and `{digest}`."""

    @model_validator(mode="after")
    def _check_options(self) -> HashSettings:
        self.options()
        return self

    def options(self, base_dir: Path | None = None) -> HashOptions:
        key_file = self.key_file
        if key_file is not None and base_dir is not None:
            key_file = str(base_dir / key_file)
        return HashOptions(self.key_env, key_file, self.length, self.template)


class HashFormat(_Frozen):
    """The per-entity part of the hash settings; the key is shared by the whole policy."""

    length: int | None = Field(default=None, ge=MIN_DIGEST_LENGTH, le=MAX_DIGEST_LENGTH)
    template: str | None = None

    @model_validator(mode="after")
    def _check_template(self) -> HashFormat:
        if self.template is not None:
            HashOptions(template=self.template)
        return self


class EntityRule(_Frozen):
    """The action and score threshold for one entity type, with optional action settings.

    `redact_text`, `mask` and `hash` apply only with the matching action.
    """

    action: Action
    min_score: float | None = Field(default=None, ge=0.0, le=1.0)
    redact_text: str | None = None
    mask: MaskSettings | None = None
    hash: HashFormat | None = None


class Scope(_Frozen):
    """The parts of a request that are scanned; every part by default."""

    system: bool = True
    user: bool = True
    assistant: bool = True
    tool_results: bool = True
    tool_arguments: bool = True

    @property
    def scans_anything(self) -> bool:
        return any(self.model_dump().values())


class AllowTerm(_Frozen):
    """A term that is never replaced; a string entry of `allow_list` is a term too."""

    term: str = Field(min_length=1)
    ignore_case: bool = False


class AllowRegex(_Frozen):
    """A regular expression that a detected value must match in full to be left alone."""

    regex: str = Field(min_length=1)
    ignore_case: bool = False

    @field_validator("regex")
    @classmethod
    def _check_regex(cls, pattern: str) -> str:
        compile_regex(pattern)
        return pattern

    def compiled(self) -> RegexPattern[str]:
        return regex.compile(self.regex, regex.IGNORECASE if self.ignore_case else 0)


def _allow_entry_tag(value: Any) -> str:
    if isinstance(value, dict) and "regex" in value:
        return "regex"
    return "term"


def _allow_term_from_string(value: Any) -> Any:
    return {"term": value} if isinstance(value, str) else value


AllowEntry = Annotated[
    Annotated[AllowTerm, Tag("term")] | Annotated[AllowRegex, Tag("regex")],
    Discriminator(_allow_entry_tag),
]


class PatternSpec(_Frozen):
    """One regex of a custom recognizer and the score of its matches (Presidio's `Pattern`)."""

    name: str = Field(min_length=1)
    regex: str = Field(min_length=1)
    score: float = Field(ge=0.0, le=1.0)

    @field_validator("regex")
    @classmethod
    def _check_regex(cls, pattern: str) -> str:
        compile_regex(pattern, PRESIDIO_REGEX_FLAGS)
        return pattern


class LanguageContext(_Frozen):
    """A language of a recognizer with its own context words (Presidio's newer YAML form)."""

    language: str = Field(pattern=LANGUAGE_PATTERN)
    context: tuple[str, ...] | None = None


class CustomRecognizer(_Frozen):
    """A pattern or deny-list recognizer in Presidio's recognizer YAML format.

    The fields are those of Presidio's `PatternRecognizer` and its YAML loader,
    so an entry of a Presidio `recognizers:` file is valid here unchanged.
    `validator` is the sidecar's own addition: a named checksum that every
    match must pass. A passing match scores 1.0, as in Presidio's credit card
    recognizer, and a failing one is dropped.
    """

    name: str = Field(min_length=1)
    type: Literal["custom"] = "custom"
    enabled: bool = True
    supported_entity: str | None = Field(default=None, pattern=ENTITY_TYPE_PATTERN)
    supported_entities: tuple[Annotated[str, Field(pattern=ENTITY_TYPE_PATTERN)], ...] | None = None
    supported_language: str | None = Field(default=None, pattern=LANGUAGE_PATTERN)
    supported_languages: (
        tuple[Annotated[str, Field(pattern=LANGUAGE_PATTERN)] | LanguageContext, ...] | None
    ) = None
    patterns: tuple[PatternSpec, ...] = ()
    context: tuple[str, ...] = ()
    deny_list: tuple[Annotated[str, Field(min_length=1)], ...] = ()
    deny_list_score: float = Field(default=1.0, ge=0.0, le=1.0)
    global_regex_flags: int | None = Field(default=None, ge=0)
    score_thresholds: dict[str, Annotated[float, Field(ge=0.0, le=1.0)]] | None = None
    version: str | None = None
    country_code: str | None = None
    validator: Validator | None = None

    @property
    def entity_type(self) -> str | None:
        """The one entity type the recognizer reports (Presidio takes the first listed)."""
        if self.supported_entity is not None:
            return self.supported_entity
        return self.supported_entities[0] if self.supported_entities else None

    def languages(self, default: tuple[str, ...]) -> dict[str, tuple[str, ...]]:
        """Return each language the recognizer runs in, with its context words."""
        if self.supported_languages:
            languages: dict[str, tuple[str, ...]] = {}
            for entry in self.supported_languages:
                if isinstance(entry, str):
                    languages[entry] = self.context
                else:
                    context = entry.context if entry.context is not None else self.context
                    languages[entry.language] = context
            return languages
        if self.supported_language is not None:
            return {self.supported_language: self.context}
        return {language: self.context for language in default}


class PredefinedRecognizer(_Frozen):
    """A reference to one of the detector's predefined recognizers (Presidio's `type: predefined`).

    The detector shares one instance of each predefined recognizer across
    policies, so a policy can only switch one off (`enabled: false`) and
    cannot change its parameters.
    """

    name: str = Field(min_length=1)
    type: Literal["predefined"]
    enabled: bool = True
    class_name: str | None = None
    supported_language: str | None = Field(default=None, pattern=LANGUAGE_PATTERN)
    supported_languages: tuple[Annotated[str, Field(pattern=LANGUAGE_PATTERN)], ...] | None = None
    country_code: str | None = None

    @property
    def recognizer_name(self) -> str:
        return self.class_name or self.name


def _recognizer_tag(value: Any) -> str:
    if isinstance(value, dict) and value.get("type") == "predefined":
        return "predefined"
    return "custom"


RecognizerSpec = Annotated[
    Annotated[CustomRecognizer, Tag("custom")] | Annotated[PredefinedRecognizer, Tag("predefined")],
    Discriminator(_recognizer_tag),
]


class RecognizerFile(_Frozen):
    """A recognizer file in Presidio's YAML format: a `recognizers:` list and registry defaults."""

    recognizers: tuple[RecognizerSpec, ...]
    supported_languages: tuple[Annotated[str, Field(pattern=LANGUAGE_PATTERN)], ...] | None = None
    global_regex_flags: int | None = Field(default=None, ge=0)


class Policy(_Frozen):
    """A parsed, validated policy; `content_hash` identifies the exact file content.

    The loader attaches what the policy needs at run time (its Presidio
    recognizers and its hash key) in `runtime`; see `sidecar.policy.runtime`.
    """

    version: Literal[1]
    name: str = Field(min_length=1, max_length=64, pattern=POLICY_NAME_PATTERN)
    description: str = ""
    mode: Mode = Mode.ENFORCE
    languages: tuple[Annotated[str, Field(pattern=LANGUAGE_PATTERN)], ...] = ("en",)
    min_score: float = Field(default=0.5, ge=0.0, le=1.0)
    default_action: Action = Action.PLACEHOLDER
    redact_text: str = "[REDACTED]"
    mask: MaskSettings = MaskSettings()
    hash: HashSettings | None = None
    """Settings of `hash`; without them, the key comes from PII_SIDECAR_HASH_KEY."""
    entities: dict[str, EntityRule] = Field(default_factory=dict)
    allow_list: tuple[Annotated[AllowEntry, Field()], ...] = ()
    deny_list: dict[
        Annotated[str, Field(pattern=ENTITY_TYPE_PATTERN)],
        tuple[Annotated[str, Field(min_length=1)], ...],
    ] = Field(default_factory=dict)
    recognizers: tuple[RecognizerSpec, ...] = ()
    recognizer_files: tuple[Annotated[str, Field(min_length=1)], ...] = ()
    secrets: bool = True
    surrogate_locale: str = DEFAULT_LOCALE
    """The Faker locale of surrogate names, addresses and companies, such as en_US or de_DE."""
    scope: Scope = Scope()
    content_hash: str = ""

    _rules: dict[str, EntityRule] = PrivateAttr(default_factory=dict)
    _runtime: Any = PrivateAttr(default=None)

    @field_validator("surrogate_locale")
    @classmethod
    def _check_locale(cls, locale: str) -> str:
        if locale not in AVAILABLE_LOCALES:
            raise ValueError("unknown Faker locale; use one such as en_US, en_GB, de_DE or fr_FR")
        return locale

    @field_validator("allow_list", mode="before")
    @classmethod
    def _terms_from_strings(cls, entries: Any) -> Any:
        if isinstance(entries, list | tuple):
            return [_allow_term_from_string(entry) for entry in entries]
        return entries

    def rule_for(self, entity_type: str) -> EntityRule:
        """Return the rule for `entity_type` with every default of the policy filled in.

        The result always has `min_score` and the settings of its action
        (`redact_text`, `mask` or `hash`); per-entity settings override the
        policy-wide ones field by field.
        """
        rule = self._rules.get(entity_type)
        if rule is None:
            rule = self._resolve(self.entities.get(entity_type))
            self._rules[entity_type] = rule
        return rule

    def _resolve(self, rule: EntityRule | None) -> EntityRule:
        if rule is None:
            rule = EntityRule(action=self.default_action)
        mask = self.mask
        if rule.mask is not None:
            mask = self.mask.model_copy(update=rule.mask.model_dump(exclude_unset=True))
        hash_settings = self.hash or HashSettings()
        hash_format = HashFormat(length=hash_settings.length, template=hash_settings.template)
        if rule.hash is not None:
            hash_format = hash_format.model_copy(update=rule.hash.model_dump(exclude_none=True))
        return EntityRule(
            action=rule.action,
            min_score=self.min_score if rule.min_score is None else rule.min_score,
            redact_text=self.redact_text if rule.redact_text is None else rule.redact_text,
            mask=mask,
            hash=hash_format,
        )

    @property
    def actions(self) -> set[Action]:
        """Every action the policy can take: the default and each listed entity's."""
        return {self.default_action, *(rule.action for rule in self.entities.values())}
