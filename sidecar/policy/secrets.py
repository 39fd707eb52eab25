"""The secrets pack: Presidio recognizers for API keys, tokens, private keys and passwords.

Every recognizer reports the one entity type `SECRET`, so one policy rule such
as `entities: {SECRET: {action: block}}` acts on every kind of secret,
including kinds added in later versions. The recognizer name (for example
`GitHubTokenRecognizer`) names the kind that was found. Presidio stores it in
`RecognizerResult.recognition_metadata["recognizer_name"]`.

What is found:

- Provider keys by their documented prefixes: OpenAI, Anthropic, AWS access key
  IDs, GitHub, GitLab, Slack, Stripe, Google, and a few other developer
  platforms (Hugging Face, npm, PyPI, SendGrid, DigitalOcean, Groq, xAI,
  Shopify). They are found anywhere: in prose, quoted strings, env files, JSON,
  YAML and HTTP headers.
- JWTs, when the first segment decodes to a JSON header with `alg` or `enc`.
- PEM and PGP private key blocks, also with `\\n` escapes as in JSON, and
  blocks cut off before their END line.
- Passwords in URLs (`postgres://user:PASS@host/db`), in key-value connection
  strings (`Password=PASS;`), in `.netrc` lines and in `mysql -p`, `curl -u`
  and `sshpass -p` command lines.
- Literal values assigned to credential-like names in code and configuration
  (`DB_PASSWORD=...`, `"api_key": "..."`, `<password>...</password>`,
  `--token ...`) and credentials in `Authorization` and API key headers.

A finding covers the secret only: for a password in a URL, the password between
`:` and `@`, so the rest of the URL stays readable; for an assignment, the
value without its quotes.

Limits:

- A key without its provider prefix is found only next to a credential-like
  name or header, so an AWS secret access key on its own line is missed unless
  an access key ID or a name such as `aws_secret_access_key` precedes it.
- Placeholders (`${VAR}`, `<token>`, `YOUR_API_KEY`, `{{ var }}`, `****`) and
  values that read as code (`settings.password`, `get_password()`) are skipped.
  So is an unquoted identifier after a spaced `=` (`password = hunter2`),
  because in source code that is a variable. In an INI file it is a value,
  and it is missed.
- A URL password that contains whitespace, or that starts with digits followed
  by `/` (which reads as a port and a path), is not found.
- Short values are skipped: an assigned password must have at least 4
  characters, any other assigned secret at least 8.
"""

from __future__ import annotations

import base64
import binascii
import json
import re
import string
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, ClassVar

from presidio_analyzer import (
    AnalysisExplanation,
    EntityRecognizer,
    Pattern,
    PatternRecognizer,
    RecognizerResult,
)

if TYPE_CHECKING:
    from presidio_analyzer.nlp_engine import NlpArtifacts

SECRET = "SECRET"

Check = Callable[["re.Match[str]"], bool]


@dataclass(frozen=True, slots=True)
class PatternSpec:
    """One regular expression of a recognizer, with its score and an optional check.

    When the expression has a group named `secret`, the finding covers that
    group; otherwise it covers the whole match. `check` receives the match and
    returns False to drop it.
    """

    name: str
    regex: str
    score: float
    check: Check | None = None


class SecretPattern(Pattern):
    """A Presidio `Pattern` compiled case-sensitively, with its `PatternSpec` check."""

    def __init__(self, spec: PatternSpec) -> None:
        super().__init__(name=spec.name, regex=spec.regex, score=spec.score)
        self.check = spec.check
        self.compiled = re.compile(spec.regex, re.MULTILINE)
        self.group: str | int = "secret" if "secret" in self.compiled.groupindex else 0

    def spans(self, text: str) -> Iterator[tuple[int, int]]:
        """Yield the (start, end) offsets of the accepted matches in `text`.

        After a match that the check drops, the search resumes one character
        after its start, so the dropped match cannot hide one that overlaps it.
        """
        position = 0
        while (match := self.compiled.search(text, position)) is not None:
            start, end = match.span(self.group)
            if start < end and (self.check is None or self.check(match)):
                yield start, end
                position = max(match.end(), match.start() + 1)
            else:
                position = match.start() + 1


class SecretRecognizer(PatternRecognizer):
    """Base class of the pack: a pattern recognizer for `SECRET` built from `PATTERNS`.

    Unlike a plain `PatternRecognizer`, matching is case-sensitive (an AWS key
    ID is upper case, `AKIA` in lower case is not one), and a finding covers
    the `secret` group of its pattern when there is one.
    """

    PATTERNS: ClassVar[tuple[PatternSpec, ...]] = ()

    def __init__(self, supported_language: str = "en") -> None:
        self.secret_patterns = [SecretPattern(spec) for spec in self.PATTERNS]
        super().__init__(
            supported_entity=SECRET,
            name=type(self).__name__,
            supported_language=supported_language,
            patterns=list(self.secret_patterns),
            global_regex_flags=re.MULTILINE,
        )

    def analyze(
        self,
        text: str,
        entities: list[str],
        nlp_artifacts: NlpArtifacts | None = None,
        regex_flags: int | None = None,
    ) -> list[RecognizerResult]:
        """Return one `SECRET` result per accepted match; `regex_flags` is ignored."""
        results = [
            self._result(pattern, start, end)
            for pattern in self.secret_patterns
            for start, end in pattern.spans(text)
        ]
        return list(EntityRecognizer.remove_duplicates(results))

    def _result(self, pattern: SecretPattern, start: int, end: int) -> RecognizerResult:
        name = type(self).__name__
        explanation = AnalysisExplanation(
            recognizer=name,
            original_score=pattern.score,
            pattern_name=pattern.name,
            pattern=pattern.regex,
            textual_explanation=f"Detected by `{name}` using pattern `{pattern.name}`",
            regex_flags=re.MULTILINE,
        )
        return RecognizerResult(
            entity_type=SECRET,
            start=start,
            end=end,
            score=pattern.score,
            analysis_explanation=explanation,
            recognition_metadata={
                RecognizerResult.RECOGNIZER_NAME_KEY: name,
                RecognizerResult.RECOGNIZER_IDENTIFIER_KEY: self.id,
            },
        )


def _token(prefix: str, body: str) -> str:
    """Return a regex for a token that starts with the literal `prefix`.

    The token must not continue a word, so `task-proj-...` never reads as an
    OpenAI `sk-proj-...` key. The lookbehind follows the prefix, because a
    regex that starts with a literal is searched much faster.
    """
    literal = re.escape(prefix)
    return rf"{literal}(?<![A-Za-z0-9]{literal}){body}"


# Checks of the values that have no fixed prefix.

_PLACEHOLDER = re.compile(
    r"^\$|\$\{|\{\{|\{%|%\(|^%[sd]$|^<.*>$|^\[.*\]$|\.\.\.|…|\{[A-Za-z_][\w.]*\}"
    r"|your|placeholder|replace|redacted|insert|xxxx",
    re.IGNORECASE,
)
_REPEATED_CHARACTER = re.compile(r"^(.)\1{2,}$", re.DOTALL)
_NON_SECRET_LITERALS = frozenset(
    {
        "true", "false", "yes", "no", "on", "off", "null", "none", "nil", "undefined",
        "required", "optional", "empty", "env", "str", "string", "bool", "boolean",
        "int", "integer", "number", "bytes", "any", "object", "text", "secretstr",
    }
)  # fmt: skip
# Values that read as source code: `settings.db.password`, `user_password`,
# `SecretStr`, `password!r` in an f-string.
_CODE_REFERENCE = re.compile(
    r"^[A-Za-z_]\w*(?:\.[A-Za-z_]\w*)+$|^_*[a-z]+(?:_[a-z0-9]+)+$"
    r"|^[A-Z][a-z]+(?:[A-Z][a-z]+)+$|^[A-Za-z_][\w.]*![rsa]$"
)
_ENV_VARIABLE_NAME = re.compile(r"^[A-Z][A-Z0-9]*(?:_[A-Z0-9]+)+$")
_FILE_PATH = re.compile(
    r"^(?:/|\./|\.\./|~/|[A-Za-z]:\\)|\.(?:pem|key|crt|cer|p12|pfx|json|txt|env|ya?ml|ini|cfg)$",
    re.IGNORECASE,
)
_URL = re.compile(r"^[a-z][a-z0-9+.-]*://", re.IGNORECASE)
_PASSWORD_WORD = re.compile(r"(?:pass(?:word|wd|phrase)?|pwd)$", re.IGNORECASE)
_NAME_CHARACTERS = frozenset(string.ascii_letters + string.digits + "_.-")
_UPPER_CASE_WORDS = frozenset({"PASSWORD", "PASSWD", "SECRET", "TOKEN", "APIKEY"})
_MAX_NAME_LENGTH = 60
_MAX_JOSE_HEADER_LENGTH = 65536


def _is_placeholder(value: str) -> bool:
    return bool(_PLACEHOLDER.search(value) or _REPEATED_CHARACTER.match(value))


def _is_literal_secret(value: str, name: str) -> bool:
    """Return whether `value`, assigned to the credential-like `name`, reads as a real secret."""
    lowered = value.lower()
    if _is_placeholder(value) or lowered in _NON_SECRET_LITERALS or lowered == name.lower():
        return False
    if _CODE_REFERENCE.match(value) or _ENV_VARIABLE_NAME.match(value):
        return False
    if _FILE_PATH.search(value) or _URL.match(value) or "public" in name.lower():
        return False
    if any(character.isspace() for character in value):
        return name.lower().endswith("phrase")
    if _PASSWORD_WORD.search(name):
        return len(value) >= 4
    return len(value) >= 8 and not value.isdigit()


def _starts_word(before: str, word: str) -> bool:
    """Return whether `word` starts a new word of a name when `before` precedes it."""
    if before in "_.-":
        return True
    if (before.islower() or before.isdigit()) and word[0].isupper():
        return True
    return before.isupper() and word in _UPPER_CASE_WORDS


def _credential_name(match: re.Match[str]) -> str | None:
    """Return the whole name that ends with the `key` group, or None if `key` is inside a word.

    For `DB_PASSWORD` the `key` group is `PASSWORD` and the name `DB_PASSWORD`;
    for `bypass` the group is `pass`, which does not start a word.
    """
    text, key_start = match.string, match.start("key")
    name_start = key_start
    while (
        name_start > 0
        and key_start - name_start < _MAX_NAME_LENGTH
        and text[name_start - 1] in _NAME_CHARACTERS
    ):
        name_start -= 1
    if name_start < key_start and not _starts_word(text[key_start - 1], match.group("key")):
        return None
    return text[name_start:key_start] + match.group("key")


def _check_assigned_value(match: re.Match[str]) -> bool:
    name = _credential_name(match)
    return name is not None and _is_literal_secret(match.group("secret"), name)


def _check_unquoted_value(match: re.Match[str]) -> bool:
    value = match.group("secret")
    if value[0] in "*!&|>":  # YAML aliases, tags, block scalars
        return False
    separator = match.group("separator")
    spaced_equals = "=" in separator and separator != separator.strip()
    if spaced_equals and value.isidentifier():
        return False
    return _check_assigned_value(match)


def _check_raw_string(match: re.Match[str]) -> bool:
    """Drop Python raw strings, which contain regular expressions far more often than secrets."""
    return "r" not in match.group("prefix").lower() and _check_assigned_value(match)


def _check_option_value(match: re.Match[str]) -> bool:
    """Return whether the value of a long option reads as a secret.

    A value of letters only after a space reads as prose ("the --password
    option"), and a value that starts with `-` is the next option.
    """
    value = match.group("secret")
    if value.startswith("-") or (match.group("separator") != "=" and value.isalpha()):
        return False
    return _check_assigned_value(match)


def _check_not_placeholder_or_code(match: re.Match[str]) -> bool:
    value = match.group("secret")
    return not _is_placeholder(value) and not _CODE_REFERENCE.match(value)


def _check_password_value(match: re.Match[str]) -> bool:
    return _is_literal_secret(match.group("secret"), "password")


def _check_url_password(match: re.Match[str]) -> bool:
    before = match.string[max(0, match.start() - 32) : match.start()]
    scheme = re.search(r"[A-Za-z][A-Za-z0-9+.-]{1,30}$", before)
    value = match.group("secret")
    looks_like_port = re.match(r"\d{1,5}(?:[/?#]|$)", value) is not None
    return scheme is not None and not looks_like_port and not _is_placeholder(value)


def _check_jose_header(match: re.Match[str]) -> bool:
    """Return whether the first segment of the match decodes to a JWS or JWE header.

    Segments longer than 64 KiB are rejected unread, and so are headers nested
    too deeply for the JSON parser.
    """
    segment = match.group(0).split(".", 1)[0]
    if len(segment) > _MAX_JOSE_HEADER_LENGTH:
        return False
    try:
        header = json.loads(base64.urlsafe_b64decode(segment + "=" * (-len(segment) % 4)))
    except (binascii.Error, ValueError, RecursionError):
        return False
    return isinstance(header, dict) and ("alg" in header or "enc" in header)


def _check_mixed_case(match: re.Match[str]) -> bool:
    value = match.group("secret")
    return any(c.isupper() for c in value) and any(c.islower() for c in value)


# Provider keys.


class OpenAIKeyRecognizer(SecretRecognizer):
    """OpenAI API keys: project, service account and admin keys, and legacy user keys."""

    PATTERNS = (
        PatternSpec(
            "openai_scoped_key",
            _token("sk-", r"(?:proj|svcacct|admin|None)-[A-Za-z0-9_-]{40,}"),
            1.0,
        ),
        PatternSpec("openai_user_key", _token("sk-", r"[A-Za-z0-9]{32,}"), 1.0),
    )


class AnthropicKeyRecognizer(SecretRecognizer):
    """Anthropic API, admin and OAuth keys (`sk-ant-api03-...`, `sk-ant-admin01-...`)."""

    PATTERNS = (PatternSpec("anthropic_key", _token("sk-ant-", r"[A-Za-z0-9_-]{32,}"), 1.0),)


_AWS_SEPARATOR = r"[\"']?\s*(?:=>|:=|[:=])?\s*[\"']?"
_AWS_KEY_ID = _token("A", r"(?:KIA|SIA|BIA|CCA)[A-Z0-9]{16}(?![A-Za-z0-9])")


class AwsKeyRecognizer(SecretRecognizer):
    """AWS access key IDs, and secret access keys and session tokens next to their names.

    A secret access key is 40 base64 characters with no prefix, so it is found
    only after a name such as `aws_secret_access_key` or `SecretAccessKey`, or
    right after an access key ID as in the credentials CSV file.
    """

    PATTERNS = (
        PatternSpec("aws_access_key_id", _AWS_KEY_ID, 0.95),
        PatternSpec(
            "aws_secret_access_key",
            r"(?i:(?:aws[_-]?)?secret[_-]?(?:access[_-]?)?key)"
            + _AWS_SEPARATOR
            + r"(?P<secret>[A-Za-z0-9/+]{40})(?![A-Za-z0-9/+=])",
            0.95,
        ),
        PatternSpec(
            "aws_secret_access_key_after_key_id",
            _AWS_KEY_ID + r"[\s,;:|'\"/]{1,8}(?P<secret>[A-Za-z0-9/+]{40})(?![A-Za-z0-9/+=])",
            0.9,
            _check_mixed_case,
        ),
        PatternSpec(
            "aws_session_token",
            r"(?i:aws[_-]?session[_-]?token|sessionToken|x-amz-security-token)"
            + _AWS_SEPARATOR
            + r"(?P<secret>[A-Za-z0-9/+=]{100,})",
            0.95,
        ),
    )


class GitHubTokenRecognizer(SecretRecognizer):
    """GitHub personal, OAuth, app and refresh tokens (`ghp_`, `gho_`, ...).

    Fine-grained personal access tokens (`github_pat_...`) too.
    """

    PATTERNS = (
        PatternSpec("github_token", _token("gh", r"[pousr]_[A-Za-z0-9]{36,}"), 1.0),
        PatternSpec("github_fine_grained_pat", _token("github_pat_", r"[A-Za-z0-9_]{50,}"), 1.0),
    )


class GitLabTokenRecognizer(SecretRecognizer):
    """GitLab personal, deploy, runner, trigger, OAuth and feed tokens.

    Runner registration tokens (`GR1348941...`) too.
    """

    PATTERNS = (
        PatternSpec(
            "gitlab_token",
            _token(
                "gl",
                r"(?:pat|dt|rt|ptt|oas|cbt|ft|imt|agent|soat|ffct|wt)-[A-Za-z0-9_-]{20,}"
                r"(?:\.[A-Za-z0-9_-]+)*",
            ),
            1.0,
        ),
        PatternSpec(
            "gitlab_runner_registration_token", _token("GR1348941", r"[A-Za-z0-9_-]{20,}"), 1.0
        ),
    )


class SlackTokenRecognizer(SecretRecognizer):
    """Slack bot, user, app, configuration and refresh tokens.

    For a webhook URL the finding covers the secret path after `/services/`.
    """

    PATTERNS = (
        PatternSpec(
            "slack_token", _token("xox", r"(?:[abeoprs]|e\.xox[bp])-[0-9A-Za-z-]{20,}"), 1.0
        ),
        PatternSpec("slack_app_token", _token("xapp-", r"[0-9]-[0-9A-Za-z-]{20,}"), 1.0),
        PatternSpec(
            "slack_webhook",
            r"hooks\.slack\.com/(?:services|workflows|triggers)/(?P<secret>[A-Za-z0-9_/+-]{20,})",
            1.0,
        ),
    )


class StripeKeyRecognizer(SecretRecognizer):
    """Stripe secret and restricted keys, live and test, and webhook signing secrets.

    Publishable keys (`pk_live_...`) are public by design and are not reported.
    """

    PATTERNS = (
        PatternSpec(
            "stripe_secret_key", r"[sr]k_(?<![A-Za-z0-9][sr]k_)(?:live|test)_[A-Za-z0-9]{20,}", 1.0
        ),
        PatternSpec("stripe_webhook_secret", _token("whsec_", r"[A-Za-z0-9+/=]{24,}"), 1.0),
    )


class GoogleKeyRecognizer(SecretRecognizer):
    """Google API keys, OAuth client secrets, and OAuth access and refresh tokens."""

    PATTERNS = (
        PatternSpec("google_api_key", _token("AIza", r"[0-9A-Za-z_-]{35}(?![0-9A-Za-z_-])"), 1.0),
        PatternSpec("google_oauth_client_secret", _token("GOCSPX-", r"[0-9A-Za-z_-]{28,}"), 1.0),
        PatternSpec("google_oauth_access_token", _token("ya29.", r"[0-9A-Za-z_-]{20,}"), 0.95),
        PatternSpec(
            "google_oauth_refresh_token", r"1//0(?<![0-9A-Za-z/]1//0)[0-9A-Za-z_-]{30,}", 0.9
        ),
    )


class DeveloperPlatformKeyRecognizer(SecretRecognizer):
    """Tokens of other developer platforms with distinctive prefixes."""

    PATTERNS = (
        PatternSpec("huggingface_token", _token("hf_", r"[A-Za-z0-9]{34,}"), 1.0),
        PatternSpec("npm_token", _token("npm_", r"[A-Za-z0-9]{36}(?![A-Za-z0-9])"), 1.0),
        PatternSpec("pypi_token", _token("pypi-AgE", r"[A-Za-z0-9_-]{50,}"), 1.0),
        PatternSpec(
            "sendgrid_key",
            _token("SG.", r"[A-Za-z0-9_-]{22}\.[A-Za-z0-9_-]{43}(?![A-Za-z0-9_-])"),
            1.0,
        ),
        PatternSpec("digitalocean_token", _token("do", r"[opr]_v1_[a-f0-9]{64}(?![a-f0-9])"), 1.0),
        PatternSpec("groq_key", _token("gsk_", r"[A-Za-z0-9]{48,}"), 1.0),
        PatternSpec("xai_key", _token("xai-", r"[A-Za-z0-9]{70,}"), 1.0),
        PatternSpec(
            "shopify_token", _token("shp", r"(?:at|ca|pa|ss)_[a-fA-F0-9]{32}(?![a-fA-F0-9])"), 1.0
        ),
    )


# Tokens and keys recognized by their structure.


class JwtRecognizer(SecretRecognizer):
    """JSON Web Tokens: JWS (three segments) and JWE (five segments) in compact form."""

    PATTERNS = (
        PatternSpec(
            "jwt",
            r"eyJ(?<![A-Za-z0-9_-]eyJ)[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]*\.[A-Za-z0-9_-]*"
            r"(?:\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+)?",
            0.95,
            _check_jose_header,
        ),
    )


_PEM_LABEL = r"[A-Z0-9 ]{0,40}PRIVATE KEY(?: BLOCK)?"


class PrivateKeyRecognizer(SecretRecognizer):
    """PEM and PGP private key blocks, whole or cut off before the END line.

    The body of a whole block may be up to 64 KiB long and must contain a
    base64 run, so a bare BEGIN and END line pair in source code is no key. A
    block without its END line is covered through its last run of base64 lines.
    The search for an END line stops at the next BEGIN line, which keeps the
    time linear in the length of the text.
    """

    PATTERNS = (
        PatternSpec(
            "private_key_block",
            r"-----BEGIN (?P<label>" + _PEM_LABEL + r")-----"
            r"(?=(?s:.){0,200}?[A-Za-z0-9+/]{16})(?:(?!-----BEGIN )(?s:.)){0,65536}?"
            r"-----END (?P=label)-----",
            1.0,
        ),
        PatternSpec(
            "private_key_block_unterminated",
            r"-----BEGIN " + _PEM_LABEL + r"-----"
            r"(?:(?:\s|\\[rn])*(?:[A-Za-z0-9+/=]{16,}|[A-Za-z-]+: [^\r\n\\]*))+",
            1.0,
        ),
    )


# Passwords.

# A host ends with an optional port, then a path, query, fragment or the end of the URL.
_URL_HOST_END = r"(?::[0-9]{1,5})?(?:[/?#\s'\"<>,;)\]}]|$)"


class UrlPasswordRecognizer(SecretRecognizer):
    """The password in the user information of a URL: `scheme://user:PASSWORD@host`.

    The password may contain `@`, `:` and `/`. It ends at the first `@` that is
    followed by a host name and then a port, path, query, fragment or the end
    of the URL. User names and passwords longer than 256 characters are not
    found; the limit keeps the search time linear.
    """

    PATTERNS = (
        PatternSpec(
            "url_password",
            r"://[^\s:/?#'\"<>\[\]]{0,256}:(?P<secret>[^\s'\"<>]{1,256}?)@"
            r"(?=(?:[^\s'\"<>@/?#:\[]+|\[[0-9A-Fa-f:.]+\])" + _URL_HOST_END + ")",
            0.95,
            _check_url_password,
        ),
    )


class ConnectionStringPasswordRecognizer(SecretRecognizer):
    """Passwords in key-value connection strings (ADO.NET, ODBC, libpq, JDBC) and `.netrc` lines."""

    PATTERNS = (
        PatternSpec(
            "connection_string_password",
            r"(?:^|(?<=[;\s?&\"'(]))(?i:password|pwd|passwd)\s*="
            r"(?P<secret>[^=;&\s'\"(),{}\[\]][^;&\s'\"(),{}\[\]]*)(?=[;&'\"]|\s|$)",
            0.9,
            _check_password_value,
        ),
        PatternSpec(
            "odbc_braced_password",
            r"(?<![A-Za-z0-9_])(?i:password|pwd)\s*=\s*\{(?P<secret>[^}]+)\}",
            0.9,
            _check_password_value,
        ),
        PatternSpec(
            "netrc_password",
            r"\b(?:machine\s+\S+|default)\s+login\s+\S+\s+password\s+(?P<secret>\S+)",
            0.95,
            _check_not_placeholder_or_code,
        ),
    )


_QUOTED_ARGUMENT = r"(?P<quote>['\"]?)(?P<secret>[^\s'\"]+)(?P=quote)"


class CommandLinePasswordRecognizer(SecretRecognizer):
    """Passwords and tokens given as command-line arguments.

    Covers `mysql -pPASS`, `curl -u user:PASS`, `sshpass -p PASS` and long
    options such as `--password PASS`, `--token=TOKEN` or `--api-key KEY`.
    """

    PATTERNS = (
        PatternSpec(
            "mysql_password_option",
            _token("mysql", r"(?:dump|admin|sh)?\b[^\n]{0,200}?\s-p" + _QUOTED_ARGUMENT),
            0.9,
            _check_not_placeholder_or_code,
        ),
        PatternSpec(
            "curl_user_password",
            _token(
                "curl",
                r"\b[^\n]{0,300}?\s(?:-u|--user)\s*(?P<quote>['\"]?)[^\s:'\"]+:"
                r"(?P<secret>[^\s'\"]+)(?P=quote)",
            ),
            0.9,
            _check_not_placeholder_or_code,
        ),
        PatternSpec(
            "sshpass_password",
            _token("sshpass", r"\s+-p\s*" + _QUOTED_ARGUMENT),
            0.9,
            _check_not_placeholder_or_code,
        ),
        PatternSpec(
            "password_option",
            r"--(?<![\w-]--)(?:[a-z0-9]+-)*"
            r"(?P<key>password|passwd|pass|token|secret|api-key|apikey|access-key|secret-key"
            r"|client-secret|auth-token)(?P<separator>=|\s+)" + _QUOTED_ARGUMENT,
            0.9,
            _check_option_value,
        ),
    )


_HEADER_VALUE = r"(?P<secret>[A-Za-z0-9._~+/=:-]{8,})"


class AuthorizationHeaderRecognizer(SecretRecognizer):
    """Credentials in `Authorization` headers and in API key headers such as `x-api-key`."""

    PATTERNS = (
        PatternSpec(
            "authorization_header",
            r"(?i:authorization)[\"']?\s*[:=]\s*[\"']?\s*"
            r"(?i:bearer|basic|token|bot|apikey|sso-key)\s+" + _HEADER_VALUE,
            0.95,
            _check_not_placeholder_or_code,
        ),
        PatternSpec(
            "api_key_header",
            r"(?i:x-api-key|api-key|x-auth-token|private-token|x-goog-api-key"
            r"|x-api-token|x-access-token|ocp-apim-subscription-key)[\"']?\s*:\s*[\"']?"
            + _HEADER_VALUE,
            0.9,
            _check_not_placeholder_or_code,
        ),
    )


# The last word of a credential-like name: `DB_PASSWORD`, `apiKey`, `client_secret`.
# `_credential_name` checks that the word is not the tail of another word.
_NAME_WORD = (
    r"(?P<key>(?i:pass(?:word|wd|phrase)?|pwd|secret|token|credentials?"
    r"|(?:api|access|secret|private|auth|signing|encryption|master|client|app)[_-]?key))"
    r"(?![A-Za-z0-9])(?:\\?[\"'])?"
)
# `=`, `:`, `:=`, `=>`, `==` and the like, after an optional type annotation
# (`password: str = ...`).
_ASSIGNMENT = (
    r"(?::\s*[A-Za-z_][\w.\[\]| ]{0,40}?)?"
    r"(?P<separator>\s*(?:===?|!==?|:=|=>|->|=|:)\s*)"
)
_UNQUOTED_VALUE = r"(?P<secret>[^\s'\"`;,&(){}\[\]<>]+)"


def _quoted(character: str) -> str:
    """Return a regex for a string literal quoted by `character`, or by its `\\`-escaped form.

    The content is the `secret` group. The escaped form occurs in JSON that is
    itself inside a JSON string. The group `prefix` contains a Python string prefix.
    """
    quote = re.escape(character)
    return (
        r"(?P<prefix>[bBrRuUfF]{0,2})"
        rf"(?P<quote>\\?{quote})(?P<secret>(?:[^{quote}\\\n]|\\[^{quote}\n])+)(?P=quote)"
    )


class CredentialAssignmentRecognizer(SecretRecognizer):
    """Literal values given to credential-like names in code, env files, JSON, YAML and XML.

    Examples: `DB_PASSWORD=hunter2`, `"api_key": "..."`, `clientSecret: '...'`,
    `export GITHUB_TOKEN="..."`, `<password>...</password>`.
    """

    PATTERNS = (
        *(
            PatternSpec(
                f"quoted_assignment_{name}",
                _NAME_WORD + _ASSIGNMENT + _quoted(character),
                0.85,
                _check_raw_string,
            )
            for name, character in (("double", '"'), ("single", "'"), ("backtick", "`"))
        ),
        # Env files, shell, Docker `-e` and URL queries: `NAME=value` with no
        # spaces around `=`.
        PatternSpec(
            "env_assignment",
            _NAME_WORD + r"(?P<separator>=)" + _UNQUOTED_VALUE + r"(?=[\s&#]|$)",
            0.85,
            _check_unquoted_value,
        ),
        # YAML, INI and properties files: the value runs to the end of the line.
        PatternSpec(
            "config_assignment",
            _NAME_WORD
            + r"(?P<separator>[ \t]*(?::|=)[ \t]*)"
            + _UNQUOTED_VALUE
            + r"(?=[ \t]*(?:#[^\n]*)?$)",
            0.8,
            _check_unquoted_value,
        ),
        PatternSpec(
            "xml_element",
            r"<(?P<tag>[A-Za-z0-9_.:-]{0,60}?" + _NAME_WORD + r")>"
            r"(?P<secret>[^<>\n]+)</(?P=tag)>",
            0.85,
            _check_assigned_value,
        ),
    )


def _looks_generated(match: re.Match[str]) -> bool:
    """Accept a value that looks machine-made rather than like a word of the sentence.

    It needs three of lower case, upper case, digits and symbols, or at least
    20 characters with two of them, or 32 or more hexadecimal digits.
    """
    value = match.group("secret")
    classes = sum(
        (
            any(c.islower() for c in value),
            any(c.isupper() for c in value),
            any(c.isdigit() for c in value),
            any(not c.isalnum() for c in value),
        )
    )
    if len(value) >= 32 and all(c in "0123456789abcdefABCDEF" for c in value):
        return True
    return classes >= 3 or (len(value) >= 20 and classes >= 2)


_PROSE_NAME = (
    r"(?i:\b(?:pass(?:word|phrase|code)|pwd|secret|token"
    r"|(?:api|access|secret|private|auth)[ _-]?(?:key|token)))\b"
)
# A value is on the same line as its name, and ends before white space or
# before punctuation that ends the sentence.
_PROSE_VALUE = r"(?P<secret>[^\s\"'`<>()\[\]{}]{6,128}?)(?=[.,;:!?]*(?:\s|$))"


class ProseCredentialRecognizer(SecretRecognizer):
    """Credentials written in a sentence: "the password for staging is ...", "api key ...".

    Only values that look machine-made are taken, so "the token is expired"
    or "the password is required" is not a finding.
    """

    PATTERNS = (
        PatternSpec(
            "prose_credential_is",
            _PROSE_NAME + r"[^\n.]{0,40}?\b(?:is|was|=|:)[ \t]+" + _PROSE_VALUE,
            0.75,
            _looks_generated,
        ),
        PatternSpec(
            "prose_credential_after_name",
            _PROSE_NAME + r"[ \t]+" + _PROSE_VALUE,
            0.75,
            _looks_generated,
        ),
    )


_RECOGNIZER_CLASSES: tuple[type[SecretRecognizer], ...] = (
    OpenAIKeyRecognizer,
    AnthropicKeyRecognizer,
    AwsKeyRecognizer,
    GitHubTokenRecognizer,
    GitLabTokenRecognizer,
    SlackTokenRecognizer,
    StripeKeyRecognizer,
    GoogleKeyRecognizer,
    DeveloperPlatformKeyRecognizer,
    JwtRecognizer,
    PrivateKeyRecognizer,
    UrlPasswordRecognizer,
    ConnectionStringPasswordRecognizer,
    CommandLinePasswordRecognizer,
    AuthorizationHeaderRecognizer,
    CredentialAssignmentRecognizer,
    ProseCredentialRecognizer,
)


def secret_recognizers(languages: Sequence[str] = ("en",)) -> list[EntityRecognizer]:
    """Return a fresh instance of every recognizer of the pack for each language.

    Secrets look the same in every language, but Presidio runs a recognizer
    only for the language it was created for, so each language gets its own set.
    """
    return [
        cls(supported_language=language) for language in languages for cls in _RECOGNIZER_CLASSES
    ]
