"""`serve --workers N`: per-worker settings, the restart budget, and real worker processes."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import sys
from pathlib import Path

import aiohttp
import pytest

from sidecar.config import Settings
from sidecar.workers import MAX_RESTARTS, Supervisor, worker_settings
from tests.conftest import DEFAULT_POLICY, RunningUpstream

CLI = Path(sys.executable).parent / "pii-sidecar"


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def test_worker_settings_audit_file_per_worker(tmp_path: Path) -> None:
    settings = Settings(audit_file=str(tmp_path / "audit.jsonl"), workers=2)

    assert worker_settings(settings, 2).audit_file == str(tmp_path / "audit.worker2.jsonl")


def test_worker_settings_without_audit_file_unchanged() -> None:
    settings = Settings(workers=2)

    assert worker_settings(settings, 1) == settings


def test_restart_budget_exhausted() -> None:
    supervisor = Supervisor(Settings(workers=2))

    allowed = [supervisor._may_restart() for _ in range(MAX_RESTARTS + 1)]

    assert allowed == [True] * MAX_RESTARTS + [False]


async def wait_ready(url: str, process: subprocess.Popen[bytes], timeout: float = 90.0) -> None:
    """Wait for 8 ready responses in a row, each on a new connection, so every worker is ready.

    The kernel picks the worker per connection, so one ready response can come
    from a worker while the other still loads its model.
    """
    deadline = asyncio.get_running_loop().time() + timeout
    in_a_row = 0
    connector = aiohttp.TCPConnector(force_close=True)
    async with aiohttp.ClientSession(connector=connector) as session:
        while in_a_row < 8:
            assert asyncio.get_running_loop().time() < deadline, (
                f"{url} not ready after {timeout} s"
            )
            assert process.poll() is None, "the sidecar exited before it was ready"
            try:
                async with session.get(url + "/readyz") as response:
                    in_a_row = in_a_row + 1 if response.status == 200 else 0
            except aiohttp.ClientConnectionError:
                in_a_row = 0
            if in_a_row == 0:
                await asyncio.sleep(0.2)


def worker_pids(parent: int) -> list[int]:
    pids = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            command = (entry / "cmdline").read_bytes()
        except OSError:
            continue
        if int(stat[1]) == parent and b"spawn_main" in command:
            pids.append(int(entry.name))
    return pids


@pytest.mark.slow
async def test_two_workers_serve_then_stop_on_sigterm(fake_upstream: RunningUpstream) -> None:
    port = free_port()
    command = [
        str(CLI), "serve", "--workers", "2", "--port", str(port), "--upstream", fake_upstream.url,
        "--policy", str(DEFAULT_POLICY), "--log-level", "warning",
    ]  # fmt: skip
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    try:
        await wait_ready(url, process)
        workers = worker_pids(process.pid)
        body = {
            "model": "gpt-fake",
            "messages": [{"role": "user", "content": "Mail ada@example.org"}],
        }
        async with (
            aiohttp.ClientSession() as session,
            session.post(url + "/v1/chat/completions", json=body) as response,
        ):
            status, reply = response.status, await response.json()

        process.send_signal(signal.SIGTERM)
        exit_status = await asyncio.to_thread(process.wait, 60)
    finally:
        if process.poll() is None:
            process.kill()

    assert len(workers) == 2
    assert status == 200
    assert reply["choices"][0]["message"]["content"] == "You said: Mail ada@example.org"
    assert (
        fake_upstream.fake.requests[-1].json()["messages"][0]["content"] == "Mail <EMAIL_ADDRESS_1>"
    )
    assert exit_status == 0
    assert not [pid for pid in workers if Path(f"/proc/{pid}").exists()]


@pytest.mark.slow
def test_invalid_policy_stops_workers_with_status_2(tmp_path: Path) -> None:
    policy = tmp_path / "broken.yaml"
    policy.write_text("version: 1\nname: broken\nmin_score: 7\n", encoding="utf-8")
    command = [
        str(CLI), "serve", "--workers", "2", "--port", str(free_port()),
        "--upstream", "http://127.0.0.1:9", "--policy", str(policy),
    ]  # fmt: skip

    finished = subprocess.run(command, capture_output=True, timeout=120, env={**os.environ})

    assert finished.returncode == 2
    assert b"min_score" in finished.stderr
