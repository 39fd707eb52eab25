"""The load generator of the benchmark in its own process: `python -m bench.loadgen`.

It reads one JSON phase per line on stdin and writes one JSON result per line
on stdout. A phase sends `requests` POST requests to `url` from `concurrency`
clients, each waiting for its response before sending the next (a closed
loop). With `interval` set, each client sends at most one request per
`interval` seconds instead, a paced load below saturation. `bodies` are used
in turn. A phase stops early after `max_seconds`.

Every request records its latency (request sent to last byte read), and for
streams the time to the first event whose delta has content and the number
of events. Only URLs on 127.0.0.1 are accepted.
"""

from __future__ import annotations

import asyncio
import json
import sys
import time
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

import aiohttp

HEADERS = {"Content-Type": "application/json", "Authorization": "Bearer sk-bench"}
MAX_CONNECTIONS = 100


@dataclass
class Phase:
    """One measurement: the requests to send and how."""

    url: str
    bodies: list[bytes]
    requests: int
    concurrency: int = 1
    stream: bool = False
    interval: float = 0.0
    max_seconds: float = 120.0
    timeout: float = 120.0
    return_content: bool = False
    headers: dict[str, str] = field(default_factory=dict)


@dataclass
class Outcome:
    """The figures of one phase; times are in seconds."""

    latencies: list[float] = field(default_factory=list)
    first_tokens: list[float] = field(default_factory=list)
    events: list[int] = field(default_factory=list)
    statuses: dict[str, int] = field(default_factory=dict)
    contents: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    elapsed: float = 0.0


def parse_phase(line: str) -> Phase:
    raw = json.loads(line)
    host = urlsplit(raw["url"]).hostname
    if host != "127.0.0.1":
        raise ValueError(f"load generator URL {raw['url']!r} is not on 127.0.0.1")
    raw["bodies"] = [body.encode() for body in raw["bodies"]]
    return Phase(**raw)


async def run_phase(session: aiohttp.ClientSession, phase: Phase) -> Outcome:
    outcome = Outcome()
    counter = iter(range(phase.requests))
    started = time.perf_counter()
    deadline = started + phase.max_seconds

    async def client(number: int) -> None:
        next_at = started + phase.interval * number / max(phase.concurrency, 1)
        for index in counter:
            if time.perf_counter() > deadline:
                return
            if phase.interval:
                await asyncio.sleep(max(0.0, next_at - time.perf_counter()))
                next_at += phase.interval
            await _send(session, phase, phase.bodies[index % len(phase.bodies)], outcome)

    await asyncio.gather(*(client(number) for number in range(phase.concurrency)))
    outcome.elapsed = time.perf_counter() - started
    return outcome


async def _send(
    session: aiohttp.ClientSession, phase: Phase, body: bytes, outcome: Outcome
) -> None:
    timeout = aiohttp.ClientTimeout(total=phase.timeout)
    started = time.perf_counter()
    try:
        headers = {**HEADERS, **phase.headers}
        async with session.post(phase.url, data=body, headers=headers, timeout=timeout) as response:
            if phase.stream:
                first, events = await _read_stream(response, started)
                outcome.first_tokens.append(first)
                outcome.events.append(events)
                content = ""
            else:
                content = _content(await response.read())
            status = str(response.status)
    except (aiohttp.ClientError, TimeoutError) as exc:
        outcome.errors.append(type(exc).__name__)
        return
    outcome.latencies.append(time.perf_counter() - started)
    outcome.statuses[status] = outcome.statuses.get(status, 0) + 1
    if phase.return_content:
        outcome.contents.append(content)


async def _read_stream(response: aiohttp.ClientResponse, started: float) -> tuple[float, int]:
    """Read an event stream; return the time to the first content delta and the event count."""
    first = -1.0
    events = 0
    buffer = b""
    async for chunk in response.content.iter_any():
        buffer += chunk
        *complete, buffer = buffer.split(b"\n\n")
        events += len(complete)
        if first < 0 and any(_has_content(event) for event in complete):
            first = time.perf_counter() - started
    return first, events


def _has_content(event: bytes) -> bool:
    for line in event.split(b"\n"):
        if line.startswith(b"data: ") and line != b"data: [DONE]":
            choices = json.loads(line[6:]).get("choices") or [{}]
            if (choices[0].get("delta") or {}).get("content"):
                return True
    return False


def _content(raw: bytes) -> str:
    try:
        document: Any = json.loads(raw)
        return str(document["choices"][0]["message"]["content"] or "")
    except (ValueError, KeyError, IndexError, TypeError):
        return ""


async def main() -> None:
    connector = aiohttp.TCPConnector(limit=MAX_CONNECTIONS)
    async with aiohttp.ClientSession(connector=connector) as session:
        loop = asyncio.get_running_loop()
        while True:
            line = await loop.run_in_executor(None, sys.stdin.readline)
            if not line:
                return
            outcome = await run_phase(session, parse_phase(line))
            sys.stdout.write(json.dumps(outcome.__dict__) + "\n")
            sys.stdout.flush()


if __name__ == "__main__":
    asyncio.run(main())
