"""Fixtures and helpers shared by the protocol, routing and body tests.

Test modules import the fixture functions (`*_fixture`), which pytest finds by
their `name`, next to those of tests/conftest.py (`detector`, `fake_upstream`,
`start_sidecar`, `sidecar`).
"""

from __future__ import annotations

import itertools
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import pytest

from sidecar.protocols.base import Adapter
from sidecar.redact.restore import Restorer
from sidecar.redact.vault import Vault
from sidecar.sse import Event, SSEDecoder, encode
from sidecar.testing.fake_anthropic import FakeAnthropic
from tests.conftest import RunningSidecar, SidecarFactory, start_site

NAME = "Zebulon Quartermaine"
EMAIL = "zebulon.q@example.com"
PHONE = "+1 415 555 0134"
CARD = "4111 1111 1111 1111"
PII = (NAME, EMAIL, PHONE, CARD)
PROMPT = f"I am {NAME}, mail {EMAIL}, phone {PHONE}, card {CARD}."

# The values of `restorer()`: a name with a quote checks JSON escaping.
VAULT_NAME = 'Ana "Q"'
VAULT_EMAIL = "ana@example.com"


def restorer() -> Restorer:
    """Return a restorer for <PERSON_1> = VAULT_NAME and <EMAIL_ADDRESS_1> = VAULT_EMAIL."""
    vault = Vault()
    vault.placeholder_for("PERSON", VAULT_NAME)
    vault.placeholder_for("EMAIL_ADDRESS", VAULT_EMAIL)
    return Restorer(vault)


def sse_bytes(events: list[tuple[str | None, Any]]) -> bytes:
    """Encode (event name, payload) pairs as an event stream; a str payload is sent as it is."""
    out = ""
    for name, payload in events:
        data = payload if isinstance(payload, str) else json.dumps(payload)
        out += (f"event: {name}\n" if name else "") + f"data: {data}\n\n"
    return out.encode()


def run_stream(adapter: Adapter, raw: bytes, cuts: list[int] | None = None) -> list[Event]:
    """Feed `raw` through the adapter's stream transformer, cut at `cuts`; decode the output."""
    decoder = SSEDecoder()
    transformer = adapter.stream_transformer(restorer())
    out = b""
    points = [0, *(cuts or []), len(raw)]
    for start, stop in itertools.pairwise(points):
        for event in decoder.feed(raw[start:stop]):
            out += b"".join(encode(e) for e in transformer.feed(event))
    for event in decoder.flush():
        out += b"".join(encode(e) for e in transformer.feed(event))
    out += b"".join(encode(e) for e in transformer.end())
    output = SSEDecoder()
    return output.feed(out) + output.flush()


def payloads(events: list[Event]) -> list[Any]:
    return [event.data if event.data == "[DONE]" else json.loads(event.data) for event in events]


def assert_no_pii(bodies: list[bytes]) -> None:
    for body in bodies:
        text = body.decode()
        for value in PII:
            assert value not in text


@dataclass
class RunningAnthropic:
    fake: FakeAnthropic
    url: str


@pytest.fixture(name="fake_anthropic")
async def fake_anthropic_fixture() -> AsyncIterator[RunningAnthropic]:
    fake = FakeAnthropic()
    runner, url = await start_site(fake.app())
    yield RunningAnthropic(fake, url)
    await runner.cleanup()


@pytest.fixture(name="anthropic_sidecar")
async def anthropic_sidecar_fixture(
    start_sidecar: SidecarFactory, fake_anthropic: RunningAnthropic
) -> RunningSidecar:
    """A sidecar with the default policy in front of `fake_anthropic`."""
    return await start_sidecar(upstream=fake_anthropic.url)
