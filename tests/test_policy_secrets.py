"""The secrets pack as a policy switch, on realistic texts, through the real detector and planner.

Every fake key is assembled at run time from a prefix and seeded random
characters, so no file in the repository contains a whole key.
"""

from __future__ import annotations

import random
import string
import textwrap
from pathlib import Path

import pytest

from sidecar.detect.engine import Detector
from sidecar.policy.load import load_policy, parse_policy
from sidecar.policy.model import Policy
from sidecar.redact.plan import build_plan

REPO = Path(__file__).resolve().parent.parent
_RANDOM = random.Random(880)
ALNUM = string.ascii_letters + string.digits


def chars(length: int, alphabet: str = ALNUM) -> str:
    return "".join(_RANDOM.choice(alphabet) for _ in range(length))


OPENAI = "sk-" + "proj-" + chars(56)
GITHUB = "gh" + "p_" + chars(36)
AWS_ID = "AK" + "IA" + chars(16, string.ascii_uppercase + string.digits)
AWS_SECRET = chars(40, ALNUM + "/+")
SLACK = "xo" + "xb-" + chars(12, string.digits) + "-" + chars(12, string.digits) + "-" + chars(24)
DB_PASSWORD = "Vq7" + chars(13)
PEM_BODY = "\n".join(chars(64, ALNUM + "+/") for _ in range(4))
PEM = "-----BEGIN " + "PRIVATE KEY-----\n" + PEM_BODY + "\n-----END " + "PRIVATE KEY-----"

REALISTIC = [
    pytest.param(f"OPENAI_API_KEY={OPENAI}\nDEBUG=false\n", [OPENAI], id="env-file"),
    pytest.param(
        textwrap.dedent(
            f"""\
            {{
              "github": {{"token": "{GITHUB}"}},
              "retries": 3
            }}"""
        ),
        [GITHUB],
        id="json-config",
    ),
    pytest.param(
        f"[default]\naws_access_key_id = {AWS_ID}\naws_secret_access_key = {AWS_SECRET}\n",
        [AWS_ID, AWS_SECRET],
        id="aws-credentials-file",
    ),
    pytest.param(
        f"curl -H 'Authorization: Bearer {SLACK}' https://slack.com/api/chat.postMessage",
        [SLACK],
        id="curl-header",
    ),
    pytest.param(
        f"DATABASE_URL=postgres://app:{DB_PASSWORD}@db.internal:5432/orders",
        [DB_PASSWORD],
        id="connection-url",
    ),
    pytest.param(f"Why does this key fail to parse?\n{PEM}\n", [PEM], id="pem-block"),
]

NOT_SECRETS = [
    pytest.param("password = get_password(user)", id="function-call"),
    pytest.param("export OPENAI_API_KEY=${OPENAI_API_KEY}", id="shell-variable"),
    pytest.param('api_key: "YOUR_API_KEY"', id="placeholder-text"),
]


@pytest.fixture(scope="module")
def default_policy() -> Policy:
    return load_policy(REPO / "policies" / "default.yaml")


def secret_values(detector: Detector, policy: Policy, text: str) -> list[str]:
    findings = detector.analyze([text], policy)[0]
    return [text[f.start : f.end] for f in findings if f.entity_type == "SECRET"]


@pytest.mark.parametrize(("text", "secrets"), REALISTIC)
def test_secret_found_in_realistic_text(
    detector: Detector, default_policy: Policy, text: str, secrets: list[str]
) -> None:
    found = secret_values(detector, default_policy, text)

    for secret in secrets:
        assert any(secret in value for value in found), (secret[:6], found)


@pytest.mark.parametrize(("text", "secrets"), REALISTIC)
def test_secret_never_reaches_upstream(
    detector: Detector, default_policy: Policy, text: str, secrets: list[str]
) -> None:
    findings = detector.analyze([text], default_policy)

    plan = build_plan(default_policy, [text], findings)

    for secret in secrets:
        assert secret not in plan.texts[0]
    assert "<SECRET_1>" in plan.texts[0]


@pytest.mark.parametrize("text", NOT_SECRETS)
def test_code_without_secret_is_left(detector: Detector, default_policy: Policy, text: str) -> None:
    assert secret_values(detector, default_policy, text) == []


def test_secrets_switch_off(detector: Detector) -> None:
    policy = parse_policy(b"version: 1\nname: no-secrets\nsecrets: false\n", "test.yaml")

    assert secret_values(detector, policy, f"OPENAI_API_KEY={OPENAI}") == []


@pytest.mark.parametrize("name", ["default", "strict", "code-assistant", "audit-only"])
def test_shipped_policies_enable_secrets(name: str) -> None:
    assert load_policy(REPO / "policies" / f"{name}.yaml").secrets is True


def test_strict_policy_redacts_secret(detector: Detector) -> None:
    policy = load_policy(REPO / "policies" / "strict.yaml")
    text = f"OPENAI_API_KEY={OPENAI}"

    plan = build_plan(policy, [text], detector.analyze([text], policy))

    assert plan.texts == ["OPENAI_API_KEY=[SECRET]"]
