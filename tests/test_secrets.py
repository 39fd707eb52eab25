"""Tests of the secrets pack, run through a Presidio AnalyzerEngine with only its recognizers.

Every fake key is assembled at run time from a prefix and seeded random
characters, so no file in the repository contains a whole key and secret
scanners have nothing to report.
"""

from __future__ import annotations

import base64
import json
import random
import string

import pytest
from presidio_analyzer import AnalyzerEngine, RecognizerRegistry, RecognizerResult
from presidio_analyzer.nlp_engine import NoOpNlpEngine

from sidecar.policy.secrets import SECRET, secret_recognizers

_RANDOM = random.Random(20240611)
ALNUM = string.ascii_letters + string.digits
BASE64 = ALNUM + "+/"
BASE64URL = ALNUM + "-_"
UPPER_ALNUM = string.ascii_uppercase + string.digits
HEX = "0123456789abcdef"


def chars(length: int, alphabet: str = ALNUM) -> str:
    return "".join(_RANDOM.choice(alphabet) for _ in range(length))


def b64url_json(document: dict[str, object]) -> str:
    raw = json.dumps(document, separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def make_analyzer(languages: list[str]) -> AnalyzerEngine:
    registry = RecognizerRegistry(
        recognizers=secret_recognizers(languages), supported_languages=languages
    )
    nlp_engine = NoOpNlpEngine(
        models=[{"lang_code": lang, "model_name": "none"} for lang in languages]
    )
    return AnalyzerEngine(registry=registry, nlp_engine=nlp_engine, supported_languages=languages)


@pytest.fixture(scope="module")
def analyzer() -> AnalyzerEngine:
    return make_analyzer(["en"])


def analyze(analyzer: AnalyzerEngine, text: str) -> list[RecognizerResult]:
    return list(analyzer.analyze(text, language="en"))


def found_spans(results: list[RecognizerResult]) -> set[tuple[int, int]]:
    return {(result.start, result.end) for result in results}


def recognizer_names(results: list[RecognizerResult], start: int, end: int) -> set[str]:
    return {
        result.recognition_metadata[RecognizerResult.RECOGNIZER_NAME_KEY]
        for result in results
        if (result.start, result.end) == (start, end)
    }


# Fake secrets, built from pieces.
OPENAI_PROJECT = "sk-" + "proj-" + chars(74, BASE64URL) + "T3Blbk" + "FJ" + chars(74, BASE64URL)
OPENAI_SERVICE_ACCOUNT = "sk-" + "svcacct-" + chars(64, BASE64URL)
OPENAI_ADMIN = "sk-" + "admin-" + chars(64, BASE64URL)
OPENAI_LEGACY = "sk-" + chars(20) + "T3Blbk" + "FJ" + chars(20)
OPENAI_SPEC_EXAMPLE = "sk-" + "proj-" + "A" * 48
ANTHROPIC_API = "sk-" + "ant-api03-" + chars(93, BASE64URL) + "AA"
ANTHROPIC_ADMIN = "sk-" + "ant-admin01-" + chars(93, BASE64URL) + "AA"
AWS_KEY_ID = "AKIA" + chars(16, string.ascii_uppercase + "234567")
AWS_TEMP_KEY_ID = "ASIA" + chars(16, string.ascii_uppercase + "234567")
AWS_SECRET = chars(40, BASE64)
AWS_SESSION_TOKEN = "IQoJb3JpZ2lu" + chars(300, BASE64)
GITHUB_PAT = "ghp" + "_" + chars(36)
GITHUB_OAUTH = "gho" + "_" + chars(36)
GITHUB_APP = "ghs" + "_" + chars(36)
GITHUB_FINE_GRAINED = "github" + "_pat_" + chars(22) + "_" + chars(59)
GITLAB_PAT = "glpat" + "-" + chars(20, BASE64URL)
GITLAB_DEPLOY = "gldt" + "-" + chars(20, BASE64URL)
GITLAB_RUNNER = "glrt" + "-" + chars(20, BASE64URL)
GITLAB_REGISTRATION = "GR1348941" + chars(20, BASE64URL)
SLACK_BOT = (
    "xoxb" + "-" + chars(12, string.digits) + "-" + chars(13, string.digits) + "-" + chars(24)
)
SLACK_USER = (
    "xoxp" + "-" + chars(12, string.digits) + "-" + chars(12, string.digits) + "-"
    + chars(13, string.digits) + "-" + chars(32, HEX)
)  # fmt: skip
SLACK_APP = (
    "xapp" + "-1-" + chars(11, UPPER_ALNUM) + "-" + chars(13, string.digits) + "-" + chars(64, HEX)
)
SLACK_CONFIG = "xoxe.xoxp" + "-1-" + chars(120)
SLACK_WEBHOOK_PATH = "T" + chars(8, UPPER_ALNUM) + "/B" + chars(10, UPPER_ALNUM) + "/" + chars(24)
STRIPE_LIVE = "sk" + "_live_" + chars(99)
STRIPE_TEST = "sk" + "_test_" + chars(99)
STRIPE_RESTRICTED = "rk" + "_live_" + chars(99)
STRIPE_WEBHOOK = "whsec" + "_" + chars(32)
GOOGLE_API = "AIza" + chars(35, BASE64URL)
GOOGLE_CLIENT_SECRET = "GOCSPX" + "-" + chars(28, BASE64URL)
GOOGLE_ACCESS = "ya29" + "." + chars(150, BASE64URL)
GOOGLE_REFRESH = "1//0" + chars(100, BASE64URL)
HUGGINGFACE = "hf" + "_" + chars(34)
NPM = "npm" + "_" + chars(36)
PYPI = "pypi" + "-AgEIcHlwaS5vcmc" + chars(120, BASE64URL)
SENDGRID = "SG" + "." + chars(22, BASE64URL) + "." + chars(43, BASE64URL)
DIGITALOCEAN = "dop" + "_v1_" + chars(64, HEX)
GROQ = "gsk" + "_" + chars(52)
SHOPIFY = "shpat" + "_" + chars(32, HEX)
JWT = (
    b64url_json({"alg": "HS256", "typ": "JWT"})
    + "."
    + b64url_json({"sub": "1234567890", "name": "Test User", "iat": 1516239022})
    + "."
    + chars(43, BASE64URL)
)
JWT_UNSIGNED = b64url_json({"alg": "none"}) + "." + b64url_json({"sub": "42"}) + "."
JWE = ".".join(
    [
        b64url_json({"alg": "RSA-OAEP", "enc": "A256GCM"}),
        chars(342, BASE64URL),
        chars(16, BASE64URL),
        chars(200, BASE64URL),
        chars(22, BASE64URL),
    ]
)


def pem(label: str, lines: int = 6, newline: str = "\n", headers: str = "") -> str:
    body = newline.join([chars(64, BASE64) for _ in range(lines)] + [chars(20, BASE64) + "=="])
    return f"-----BEGIN {label}-----{newline}{headers}{body}{newline}-----END {label}-----"


RSA_KEY = pem("RSA PRIVATE KEY")
PKCS8_KEY = pem("PRIVATE KEY")
OPENSSH_KEY = pem("OPENSSH PRIVATE KEY")
EC_KEY = pem("EC PRIVATE KEY", lines=2)
ENCRYPTED_PEM = pem(
    "RSA PRIVATE KEY", headers="Proc-Type: 4,ENCRYPTED\nDEK-Info: AES-128-CBC,0A1B2C3D4E5F\n\n"
)
PGP_KEY = pem("PGP PRIVATE KEY BLOCK", headers="Version: GnuPG v2\n\n")
JSON_ESCAPED_KEY = pem("PRIVATE KEY", newline="\\n")
TRUNCATED_KEY = (
    "-----BEGIN RSA " + "PRIVATE KEY-----\n" + "\n".join(chars(64, BASE64) for _ in range(3))
)

CLI_KEY = chars(32)
JS_KEY = chars(32)
HEX_TOKEN = chars(40, HEX)
DJANGO_KEY = "django-insecure-" + chars(50, ALNUM + "!@#%^&*(-_=+)")
PASSPHRASE = "correct horse battery staple"
HEADER_TOKEN = chars(32)

SERVICE_ACCOUNT = json.dumps(
    {"type": "service_account", "private_key_id": chars(40, HEX), "private_key": PKCS8_KEY + "\n"}
)


# (text, secret): the secret must be found, with a finding that covers exactly it.
TRUE_POSITIVES = [
    # OpenAI
    pytest.param(f"my key is {OPENAI_PROJECT}, keep it safe", OPENAI_PROJECT, id="openai-prose"),
    pytest.param(f"OPENAI_API_KEY={OPENAI_PROJECT}\n", OPENAI_PROJECT, id="openai-env-file"),
    pytest.param(
        f'{{"api_key": "{OPENAI_SERVICE_ACCOUNT}"}}', OPENAI_SERVICE_ACCOUNT, id="openai-json"
    ),
    pytest.param(f"admin_key: '{OPENAI_ADMIN}'", OPENAI_ADMIN, id="openai-admin-yaml"),
    pytest.param(
        f'client = OpenAI(api_key="{OPENAI_LEGACY}")', OPENAI_LEGACY, id="openai-legacy-python"
    ),
    pytest.param(f"key = {OPENAI_SPEC_EXAMPLE}", OPENAI_SPEC_EXAMPLE, id="openai-repeated-body"),
    pytest.param(
        f'curl https://api.openai.com/v1/models -H "Authorization: Bearer {OPENAI_PROJECT}"',
        OPENAI_PROJECT,
        id="openai-curl-header",
    ),
    # Anthropic
    pytest.param(f"export ANTHROPIC_API_KEY={ANTHROPIC_API}", ANTHROPIC_API, id="anthropic-export"),
    pytest.param(
        f"curl https://api.anthropic.com/v1/messages -H 'x-api-key: {ANTHROPIC_API}'",
        ANTHROPIC_API,
        id="anthropic-curl-header",
    ),
    pytest.param(
        f"anthropic:\n  admin_key: {ANTHROPIC_ADMIN}\n", ANTHROPIC_ADMIN, id="anthropic-yaml"
    ),
    # AWS
    pytest.param(f"AWS_ACCESS_KEY_ID={AWS_KEY_ID}", AWS_KEY_ID, id="aws-key-id-env"),
    pytest.param(
        f'{{"AccessKeyId": "{AWS_TEMP_KEY_ID}"}}', AWS_TEMP_KEY_ID, id="aws-temporary-key-id"
    ),
    pytest.param(
        f"[default]\naws_access_key_id = {AWS_KEY_ID}\naws_secret_access_key = {AWS_SECRET}\n",
        AWS_SECRET,
        id="aws-credentials-file",
    ),
    pytest.param(f'{{"SecretAccessKey": "{AWS_SECRET}"}}', AWS_SECRET, id="aws-secret-json"),
    pytest.param(
        f"aws configure set aws_secret_access_key {AWS_SECRET}", AWS_SECRET, id="aws-configure"
    ),
    pytest.param(
        f"Access key ID,Secret access key\n{AWS_KEY_ID},{AWS_SECRET}\n", AWS_SECRET, id="aws-csv"
    ),
    pytest.param(
        f"AWS_SESSION_TOKEN={AWS_SESSION_TOKEN}", AWS_SESSION_TOKEN, id="aws-session-token"
    ),
    # GitHub
    pytest.param(
        f"git clone https://{GITHUB_PAT}@github.com/acme/app.git", GITHUB_PAT, id="github-clone-url"
    ),
    pytest.param(f"GH_TOKEN={GITHUB_OAUTH}", GITHUB_OAUTH, id="github-oauth-env"),
    pytest.param(f"token: {GITHUB_APP}\n", GITHUB_APP, id="github-app-yaml"),
    pytest.param(
        f'GITHUB_TOKEN="{GITHUB_FINE_GRAINED}"', GITHUB_FINE_GRAINED, id="github-fine-grained"
    ),
    # GitLab
    pytest.param(
        f'curl --header "PRIVATE-TOKEN: {GITLAB_PAT}" https://gitlab.example.com/api/v4/projects',
        GITLAB_PAT,
        id="gitlab-pat-header",
    ),
    pytest.param(
        f"deploy token {GITLAB_DEPLOY} for the registry", GITLAB_DEPLOY, id="gitlab-deploy"
    ),
    pytest.param(
        f"gitlab-runner register --token {GITLAB_RUNNER}", GITLAB_RUNNER, id="gitlab-runner"
    ),
    pytest.param(
        f"registration-token: {GITLAB_REGISTRATION}", GITLAB_REGISTRATION, id="gitlab-registration"
    ),
    # Slack
    pytest.param(f"SLACK_BOT_TOKEN={SLACK_BOT}", SLACK_BOT, id="slack-bot"),
    pytest.param(f'{{"token": "{SLACK_USER}"}}', SLACK_USER, id="slack-user"),
    pytest.param(f"app_token = '{SLACK_APP}'", SLACK_APP, id="slack-app"),
    pytest.param(f"refresh with {SLACK_CONFIG} please", SLACK_CONFIG, id="slack-config"),
    pytest.param(
        f"curl -X POST https://hooks.slack.com/services/{SLACK_WEBHOOK_PATH} -d '{{}}'",
        SLACK_WEBHOOK_PATH,
        id="slack-webhook-path",
    ),
    # Stripe
    pytest.param(
        f"const stripe = require('stripe')('{STRIPE_LIVE}');", STRIPE_LIVE, id="stripe-js"
    ),
    pytest.param(f"STRIPE_SECRET_KEY={STRIPE_TEST}", STRIPE_TEST, id="stripe-test-env"),
    pytest.param(f"restricted: {STRIPE_RESTRICTED}", STRIPE_RESTRICTED, id="stripe-restricted"),
    pytest.param(f"endpoint_secret = '{STRIPE_WEBHOOK}'", STRIPE_WEBHOOK, id="stripe-webhook"),
    # Google
    pytest.param(
        f"https://maps.googleapis.com/maps/api/geocode/json?address=x&key={GOOGLE_API}",
        GOOGLE_API,
        id="google-api-key-url",
    ),
    pytest.param(
        f'{{"installed": {{"client_secret": "{GOOGLE_CLIENT_SECRET}"}}}}',
        GOOGLE_CLIENT_SECRET,
        id="google-client-secret",
    ),
    pytest.param(f"Authorization: Bearer {GOOGLE_ACCESS}", GOOGLE_ACCESS, id="google-access-token"),
    pytest.param(f"refresh_token={GOOGLE_REFRESH}", GOOGLE_REFRESH, id="google-refresh-token"),
    # Other developer platforms
    pytest.param(f"HF_TOKEN={HUGGINGFACE}", HUGGINGFACE, id="huggingface"),
    pytest.param(f"//registry.npmjs.org/:_authToken={NPM}", NPM, id="npmrc"),
    pytest.param(f"[pypi]\nusername = __token__\npassword = {PYPI}\n", PYPI, id="pypirc"),
    pytest.param(f"sg.send(key='{SENDGRID}')", SENDGRID, id="sendgrid"),
    pytest.param(f"doctl auth init -t {DIGITALOCEAN}", DIGITALOCEAN, id="digitalocean"),
    pytest.param(f"GROQ_API_KEY={GROQ}", GROQ, id="groq"),
    pytest.param(f"X-Shopify-Access-Token: {SHOPIFY}", SHOPIFY, id="shopify"),
    # JWT
    pytest.param(f"Authorization: Bearer {JWT}", JWT, id="jwt-header"),
    pytest.param(f"Set-Cookie: session={JWT}; HttpOnly", JWT, id="jwt-cookie"),
    pytest.param(f"why does {JWT_UNSIGNED} fail?", JWT_UNSIGNED, id="jwt-unsigned"),
    pytest.param(f"the JWE is {JWE}", JWE, id="jwe"),
    # Private keys
    pytest.param(f"Here is my key:\n{RSA_KEY}\nWhat is wrong?", RSA_KEY, id="pem-rsa"),
    pytest.param(PKCS8_KEY, PKCS8_KEY, id="pem-pkcs8"),
    pytest.param(f"cat ~/.ssh/id_ed25519\n{OPENSSH_KEY}\n", OPENSSH_KEY, id="pem-openssh"),
    pytest.param(f"key: |\n{EC_KEY}", EC_KEY, id="pem-ec"),
    pytest.param(ENCRYPTED_PEM, ENCRYPTED_PEM, id="pem-encrypted-headers"),
    pytest.param(f"{TRUNCATED_KEY}\n\n(pasted the rest later)", TRUNCATED_KEY, id="pem-cut-off"),
    pytest.param(f"export:\n{PGP_KEY}", PGP_KEY, id="pgp-private-key"),
    pytest.param(SERVICE_ACCOUNT, json.dumps(PKCS8_KEY)[1:-1], id="pem-service-account-json"),
    pytest.param(
        f'"private_key": "{JSON_ESCAPED_KEY}"', JSON_ESCAPED_KEY, id="pem-escaped-newlines"
    ),
    # Passwords in URLs
    pytest.param(
        "DATABASE_URL=postgres://app:" + "S3cr3tPass" + "@db.internal:5432/app",
        "S3cr3tPass",
        id="url-postgres",
    ),
    pytest.param(
        "engine = create_engine('mysql+pymysql://root:" + "hunter2" + "@localhost/shop')",
        "hunter2",
        id="url-sqlalchemy",
    ),
    pytest.param(
        "mongodb+srv://admin:" + "Xy9-kLm2" + "@cluster0.ab1cd.mongodb.net/?retryWrites=true",
        "Xy9-kLm2",
        id="url-mongodb-srv",
    ),
    pytest.param("redis://:" + "r3d1sPass" + "@cache:6379/0", "r3d1sPass", id="url-redis-no-user"),
    pytest.param(
        "amqp://guest:" + "p@ss:w0rd" + "@rabbit.internal:5672/vhost",
        "p@ss:w0rd",
        id="url-password-with-at-and-colon",
    ),
    pytest.param("mysql://root:" + "pa#ss" + "@localhost/db", "pa#ss", id="url-password-with-hash"),
    pytest.param(
        "https://alice:" + "pa%40ss" + "@api.example.com/invite?email=bob@example.com",
        "pa%40ss",
        id="url-basic-auth-email-in-query",
    ),
    pytest.param(
        "ftp://user:" + "letmein99" + "@[2001:db8::1]:21/files", "letmein99", id="url-ipv6-host"
    ),
    # Connection strings
    pytest.param(
        "Server=tcp:sql.example.com,1433;Database=shop;User ID=sa;Password=" + "Secr3t!" + ";",
        "Secr3t!",
        id="ado-net",
    ),
    pytest.param(
        "Driver={ODBC Driver 18};Server=db;UID=app;PWD={" + "w1th;semicolon" + "};",
        "w1th;semicolon",
        id="odbc-braced",
    ),
    pytest.param(
        "host=db.internal port=5432 user=app password=" + "pgSecret42" + " dbname=shop",
        "pgSecret42",
        id="libpq",
    ),
    pytest.param(
        "jdbc:mysql://db:3306/shop?user=app&password=" + "jdbcPass1" + "&useSSL=true",
        "jdbcPass1",
        id="jdbc-query",
    ),
    pytest.param(
        "machine api.example.com login alice password " + "n3trcPass", "n3trcPass", id="netrc"
    ),
    # Command lines
    pytest.param("mysql -u root -p" + "rootPass1" + " shop < dump.sql", "rootPass1", id="mysql-p"),
    pytest.param(
        "curl -u admin:" + "adminPass7" + " https://jenkins.example.com/api/json",
        "adminPass7",
        id="curl-user",
    ),
    pytest.param("sshpass -p '" + "sshPass9" + "' ssh pi@10.0.0.5", "sshPass9", id="sshpass"),
    pytest.param("vault login --password " + "vaultPass3", "vaultPass3", id="long-option-space"),
    pytest.param(f"tool --api-key={CLI_KEY} run", CLI_KEY, id="long-option-equals"),
    # Assignments in code and configuration
    pytest.param('password = "' + "hunter2" + '"', "hunter2", id="python-assignment"),
    pytest.param(f"const apiKey = '{JS_KEY}';", JS_KEY, id="js-camel-case"),
    pytest.param('dbPassword := "' + "g0lang!pw" + '"', "g0lang!pw", id="go-short-declaration"),
    pytest.param("$db_password = '" + "phpPass12" + "';", "phpPass12", id="php-variable"),
    pytest.param(f"config.secret_token = '{HEX_TOKEN}'", HEX_TOKEN, id="ruby-attribute"),
    pytest.param("DB_PASSWORD=" + "hunter2", "hunter2", id="env-file"),
    pytest.param(
        f"https://api.example.com/v1/data?api_key={HEADER_TOKEN}&format=json",
        HEADER_TOKEN,
        id="url-query-parameter",
    ),
    pytest.param("PGPASSWORD=" + "pgpw1234" + " psql -h db", "pgpw1234", id="env-prefix-command"),
    pytest.param(
        "docker run -e POSTGRES_PASSWORD=" + "secret123" + " -p 5432:5432 postgres",
        "secret123",
        id="docker-env",
    ),
    pytest.param(
        "database:\n  user: app\n  password: " + "yamlPass9" + "  # rotate\n",
        "yamlPass9",
        id="yaml-comment",
    ),
    pytest.param("[db]\npassword = " + "ini-Pass" + "\n", "ini-Pass", id="ini-spaced"),
    pytest.param(
        "spring.datasource.password=" + "springPass1", "springPass1", id="java-properties"
    ),
    pytest.param(f"SECRET_KEY = '{DJANGO_KEY}'", DJANGO_KEY, id="django"),
    pytest.param(
        "apiVersion: v1\nkind: Secret\ndata:\n  password: " + "aHVudGVyMg==" + "\n",
        "aHVudGVyMg==",
        id="kubernetes-secret",
    ),
    pytest.param("<password>" + "xmlPass42" + "</password>", "xmlPass42", id="xml-element"),
    pytest.param(
        '{\\"client_secret\\": \\"' + "escapedSecret99" + '\\"}',
        "escapedSecret99",
        id="escaped-json",
    ),
    pytest.param(f'passphrase: "{PASSPHRASE}"', PASSPHRASE, id="passphrase"),
    pytest.param('if password == "' + "letmein!" + '":', "letmein!", id="comparison"),
    pytest.param('password: str = "' + "annotated1" + '"', "annotated1", id="annotated"),
    # Headers
    pytest.param(
        "Authorization: Basic " + "YWxhZGRpbjpvcGVuc2VzYW1l", "YWxhZGRpbjpvcGVuc2VzYW1l", id="basic"
    ),
    pytest.param(
        f'headers = {{"Authorization": "Token {HEADER_TOKEN}"}}', HEADER_TOKEN, id="token-header"
    ),
    pytest.param(
        f"curl -H 'X-API-Key: {HEADER_TOKEN}' https://api.example.com",
        HEADER_TOKEN,
        id="x-api-key",
    ),
]


@pytest.mark.parametrize(("text", "secret"), TRUE_POSITIVES)
def test_secret_found_exactly(analyzer: AnalyzerEngine, text: str, secret: str) -> None:
    start = text.index(secret)
    end = start + len(secret)
    results = analyze(analyzer, text)
    overlapping = [(r.start, r.end) for r in results if r.start < end and start < r.end]

    assert (start, end) in found_spans(results)
    assert [span for span in overlapping if span[0] < start or span[1] > end] == []


@pytest.mark.parametrize(
    ("secret", "recognizer"),
    [
        pytest.param(OPENAI_PROJECT, "OpenAIKeyRecognizer", id="openai"),
        pytest.param(ANTHROPIC_API, "AnthropicKeyRecognizer", id="anthropic"),
        pytest.param(AWS_KEY_ID, "AwsKeyRecognizer", id="aws"),
        pytest.param(GITHUB_PAT, "GitHubTokenRecognizer", id="github"),
        pytest.param(GITLAB_PAT, "GitLabTokenRecognizer", id="gitlab"),
        pytest.param(SLACK_BOT, "SlackTokenRecognizer", id="slack"),
        pytest.param(STRIPE_LIVE, "StripeKeyRecognizer", id="stripe"),
        pytest.param(GOOGLE_API, "GoogleKeyRecognizer", id="google"),
        pytest.param(HUGGINGFACE, "DeveloperPlatformKeyRecognizer", id="huggingface"),
        pytest.param(JWT, "JwtRecognizer", id="jwt"),
        pytest.param(RSA_KEY, "PrivateKeyRecognizer", id="private-key"),
    ],
)
def test_recognizer_name_says_kind(analyzer: AnalyzerEngine, secret: str, recognizer: str) -> None:
    text = f"value: {secret}\n"
    start = text.index(secret)
    results = analyze(analyzer, text)

    assert recognizer in recognizer_names(results, start, start + len(secret))


def test_every_finding_is_secret(analyzer: AnalyzerEngine) -> None:
    text = "\n".join(param.values[0] for param in TRUE_POSITIVES)
    results = analyze(analyzer, text)

    assert results
    assert {result.entity_type for result in results} == {SECRET}


def test_url_finding_leaves_url_readable(analyzer: AnalyzerEngine) -> None:
    text = "postgres://app:" + "S3cr3tPass" + "@db.internal:5432/shop?sslmode=require"
    results = analyze(analyzer, text)

    assert len(results) == 1
    assert text[: results[0].start] == "postgres://app:"
    assert text[results[0].end :] == "@db.internal:5432/shop?sslmode=require"


def test_recognizers_for_each_language() -> None:
    analyzer = make_analyzer(["en", "de"])
    text = f"Mein Schlüssel lautet {GITHUB_PAT}."
    results = analyzer.analyze(text, language="de")

    assert found_spans(results) == {
        (text.index(GITHUB_PAT), text.index(GITHUB_PAT) + len(GITHUB_PAT))
    }


def test_one_recognizer_set_per_language() -> None:
    recognizers = secret_recognizers(["en", "de"])
    languages = [recognizer.supported_language for recognizer in recognizers]

    assert languages.count("en") == languages.count("de")
    assert len({type(recognizer) for recognizer in recognizers}) == languages.count("en")


def _png_data_uri(size: int) -> str:
    payload = b"\x89PNG\r\n\x1a\n" + _RANDOM.randbytes(size)
    return "data:image/png;base64," + base64.b64encode(payload).decode()


def _git_log() -> str:
    lines = []
    for _ in range(20):
        lines.append(f"commit {chars(40, HEX)}\nAuthor: Dev <dev@example.com>\n\n    Fix a bug\n")
    return "\n".join(lines)


# Code and text that contain no secret: nothing may be found.
TRUE_NEGATIVES = [
    pytest.param(_git_log(), id="git-log-hashes"),
    pytest.param(
        f"git checkout {chars(7, HEX)} && git cherry-pick {chars(40, HEX)}", id="git-refs"
    ),
    pytest.param(
        f"requests==2.32.3 --hash=sha256:{chars(64, HEX)} \\\n    --hash=sha256:{chars(64, HEX)}",
        id="pip-hashes",
    ),
    pytest.param(f"FROM python:3.11-slim@sha256:{chars(64, HEX)}", id="docker-digest"),
    pytest.param(
        "ids = [\n" + ",\n".join(f'    "{_RANDOM.getrandbits(128):032x}"' for _ in range(5)) + "]",
        id="hex-ids",
    ),
    pytest.param(
        'request_id = "123e4567-e89b-12d3-a456-426614174000"\nuser = User.get(uuid.UUID(request_id))',
        id="uuid",
    ),
    pytest.param(f'<img src="{_png_data_uri(30_000)}" alt="chart">', id="base64-image"),
    pytest.param(base64.urlsafe_b64encode(_RANDOM.randbytes(30_000)).decode(), id="base64url-blob"),
    pytest.param(
        "from transformers import AutoTokenizer\n"
        "tokenizer = AutoTokenizer.from_pretrained('bert-base-uncased')\n"
        "tokens = tokenizer(text, max_length=512, truncation=True)\n"
        "response = client.chat.completions.create(model=model, max_tokens=1024)\n",
        id="ml-code",
    ),
    pytest.param(
        '{"bos_token": "<|begin_of_text|>", "eos_token": "</s>", "pad_token": "[PAD]",\n'
        ' "unk_token": "<unk>", "tokenizer_class": "LlamaTokenizer"}',
        id="tokenizer-config",
    ),
    pytest.param(
        "def check_password(password: str, password_hash: bytes) -> bool:\n"
        "    if password == confirm_password:\n"
        "        return bcrypt.checkpw(password.encode(), password_hash)\n"
        "    password = user_password\n"
        "    password = hunter\n"
        "    token = request.headers.get('Authorization')\n"
        "    api_key = os.environ['OPENAI_API_KEY']\n"
        "    client = OpenAI(api_key=api_key)\n"
        "    secret = secrets.token_hex(32)\n"
        "    password = self.settings.db_password\n",
        id="python-credential-handling",
    ),
    pytest.param(
        "interface Login {\n  username: string;\n  password: string;\n}\n"
        "class Settings(BaseSettings):\n    api_key: SecretStr\n    token: Optional[str] = None\n"
        "    client_secret: ClientSecret\n",
        id="type-declarations",
    ),
    pytest.param(
        'headers = {"Authorization": f"Bearer {token}"}\n'
        'curl -H "Authorization: Bearer $OPENAI_API_KEY" https://api.openai.com/v1/models\n'
        "curl -H 'Authorization: Bearer <token>' https://api.example.com\n"
        "Authorization: Bearer YOUR_API_KEY\n",
        id="header-placeholders",
    ),
    pytest.param(
        "OPENAI_API_KEY=your-api-key-here\n"
        "ANTHROPIC_API_KEY=\n"
        "export GITHUB_TOKEN=$GITHUB_TOKEN\n"
        "api_key: ${API_KEY}\n"
        'password: "{{ vault_db_password }}"\n'
        'client_secret = "<client-secret>"\n'
        '"password": "********"\n'
        "db_password: !vault |\n"
        "token: ${{ secrets.GITHUB_TOKEN }}\n"
        "password = %(db_password)s\n"
        'secret_key = "{secret}"\n',
        id="config-placeholders",
    ),
    pytest.param(
        "DATABASE_URL=postgres://app:${DB_PASSWORD}@db/app\n"
        "https://user@github.com/acme/app.git\n"
        "ssh://git@github.com:22/acme/app.git\n"
        "git@github.com:acme/app.git\n"
        "http://localhost:8080/api/v1?email=ops@example.com\n"
        "http://host:8080/path/me@example.com\n"
        "http://[::1]:8080/health\n",
        id="urls-without-passwords",
    ),
    pytest.param(
        '{"forgot_password": "Forgot password?", "password": "Password",\n'
        ' "invalid_token": "The token has expired", "password_hint": "8+ characters"}',
        id="ui-strings",
    ),
    pytest.param(
        '"password": {"type": "string", "minLength": 8},\n'
        '"password": true,\n'
        "token_type: bearer\n"
        "PASSWORD_MIN_LENGTH = 12\n"
        "private_key_path = '/etc/ssl/private/server.key'\n"
        "api_key_env = 'OPENAI_API_KEY'\n"
        'password = "DB_PASSWORD"\n'
        'token = "512"\n',
        id="config-non-secrets",
    ),
    pytest.param(
        f"-----BEGIN PUBLIC KEY-----\n{chars(64, BASE64)}\n-----END PUBLIC KEY-----\n"
        f"-----BEGIN CERTIFICATE-----\n{chars(64, BASE64)}\n-----END CERTIFICATE-----\n",
        id="public-key-and-certificate",
    ),
    pytest.param(
        "Reset your password: click the link we sent.\n"
        "Never share your API key or token with anyone.\n"
        "The risk-assessment-framework-for-production-systems-v2 is ready.\n"
        f"disk-{chars(40, HEX)} task-proj-{chars(40, BASE64URL)}\n"
        "x = 1//0\n",
        id="prose-and-lookalikes",
    ),
    pytest.param(
        'bypass = "yes-please-1"\ncompass = "north-by-northwest"\npasswords = ["a1b2c3d4"]\n'
        'keyboard_layout = "dvorak-intl"\ntokens_per_second = "1234.5"\n',
        id="credential-words-inside-other-words",
    ),
    pytest.param(
        "eyJustAnIdentifierName.method.call()\n" + "eyJ" + chars(30) + "." + chars(30) + ".x\n",
        id="jwt-lookalikes",
    ),
    pytest.param(
        f"pk_live_{chars(24)}\nAKIA{chars(16, UPPER_ALNUM)}XYZ\naki{chars(17, UPPER_ALNUM)}\n",
        id="publishable-and-partial-keys",
    ),
]


@pytest.mark.parametrize("text", TRUE_NEGATIVES)
def test_no_secret_in_plain_code(analyzer: AnalyzerEngine, text: str) -> None:
    results = analyze(analyzer, text)

    assert [text[r.start : r.end] for r in results] == []


ADVERSARIAL_INPUTS = [
    pytest.param("a://b:" * 20_000, id="url-without-at"),
    pytest.param("x://y:" + "a@" * 50_000, id="url-many-at-signs"),
    pytest.param(("-----BEGIN " + "PRIVATE KEY-----\n" + "A" * 64 + "\n") * 1_000, id="pem-no-end"),
    pytest.param("password=" * 20_000, id="repeated-names"),
    pytest.param('token = "' * 20_000, id="unclosed-quotes"),
    pytest.param("curl " * 30_000, id="repeated-commands"),
    pytest.param(("eyJ" + "a" * 10 + ".") * 10_000, id="jwt-prefixes"),
]


@pytest.mark.parametrize("text", ADVERSARIAL_INPUTS)
def test_adversarial_input_completes(analyzer: AnalyzerEngine, text: str) -> None:
    # The suite's timeout catches a regex whose time grows faster than the input.
    results = analyze(analyzer, text)

    assert all(result.entity_type == SECRET for result in results)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        pytest.param("The password for the staging admin is oZsmDpRvBz#GKB now.", "oZsmDpRvBz#GKB", id="is"),
        pytest.param("api key " + "b8f7" * 8 + " for the weather service", "b8f7" * 8, id="hex-after-name"),
        pytest.param("Your api key: sk_abcDEF12345678.", "sk_abcDEF12345678", id="colon-sentence-end"),
    ],
)
def test_prose_credential_found(analyzer: AnalyzerEngine, text: str, expected: str) -> None:
    spans = found_spans(analyze(analyzer, text))
    assert [text[start:end] for start, end in sorted(spans)] == [expected]


@pytest.mark.parametrize(
    "text",
    [
        pytest.param("the token is expired", id="word"),
        pytest.param("the password is required.", id="required"),
        pytest.param("the password: correct horse battery staple", id="passphrase-words"),
        pytest.param("token count is 12345678", id="digits-only"),
        pytest.param("Secret access key\nAKIA is the prefix", id="next-line"),
    ],
)
def test_prose_without_credential(analyzer: AnalyzerEngine, text: str) -> None:
    assert found_spans(analyze(analyzer, text)) == set()
