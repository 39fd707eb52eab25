"""Starting, watching and stopping the benchmark's processes, all on 127.0.0.1."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

REPO = Path(__file__).resolve().parent.parent
PYTHON = Path(sys.executable)
CLI = PYTHON.parent / "pii-sidecar"
HOST = "127.0.0.1"
READY_TIMEOUT = 120.0
READY_IN_A_ROW = 8
STOP_TIMEOUT = 30.0


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind((HOST, 0))
        return int(probe.getsockname()[1])


def stop(process: subprocess.Popen[Any]) -> None:
    """Send SIGTERM, wait up to `STOP_TIMEOUT` seconds, then SIGKILL."""
    if process.poll() is not None:
        return
    process.send_signal(signal.SIGTERM)
    try:
        process.wait(STOP_TIMEOUT)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


@dataclass
class Upstream:
    """The fake provider process."""

    process: subprocess.Popen[str]
    url: str

    @classmethod
    def start(cls) -> Upstream:
        process = subprocess.Popen(
            [str(PYTHON), "-m", "bench.upstream"], cwd=REPO, stdout=subprocess.PIPE, text=True
        )
        assert process.stdout is not None
        line = process.stdout.readline().split()
        if line[:1] != ["ready"]:
            stop(process)
            raise RuntimeError(
                "the fake upstream did not start; run python -m bench.upstream to see why"
            )
        return cls(process, f"http://{HOST}:{line[1]}")


@dataclass
class Sidecar:
    """A sidecar started through the real command line, with its logs in a file."""

    process: subprocess.Popen[bytes]
    url: str
    name: str
    log_path: Path

    @classmethod
    def start(cls, name: str, upstream: str, policy: Path, log_dir: Path, *options: str) -> Sidecar:
        port = free_port()
        log_path = log_dir / f"sidecar-{name}.log"
        command = [
            str(CLI), "serve", "--host", HOST, "--port", str(port), "--upstream", upstream,
            "--policy", str(policy), "--log-level", "warning", *options,
        ]  # fmt: skip
        with log_path.open("wb") as log_file:
            process = subprocess.Popen(
                command, cwd=REPO, stdout=subprocess.DEVNULL, stderr=log_file
            )
        sidecar = cls(process, f"http://{HOST}:{port}", name, log_path)
        sidecar.wait_ready()
        return sidecar

    def wait_ready(self) -> None:
        """Wait until every worker has answered ready, each time on a new connection.

        A worker listens only once its model is loaded, and the kernel picks
        one listening worker per connection, so the ready answers must come
        from as many distinct pids as there are workers.
        """
        deadline = time.monotonic() + READY_TIMEOUT
        in_a_row = 0
        ready_pids: set[int] = set()
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"sidecar {self.name} exited; see {self.log_path}")
            try:
                with urllib.request.urlopen(self.url + "/readyz", timeout=2) as response:
                    ready_pids.add(json.loads(response.read())["pid"])
                    in_a_row += 1
            except OSError:
                in_a_row = 0
            if in_a_row >= READY_IN_A_ROW and len(ready_pids) >= len(self.worker_pids()):
                return
            if in_a_row == 0:
                time.sleep(0.2)
        raise RuntimeError(
            f"sidecar {self.name} not ready after {READY_TIMEOUT:g} s; see {self.log_path}"
        )

    def worker_pids(self) -> list[int]:
        """Return the pids of the processes that serve: the workers, or the process itself."""
        children = [pid for pid in child_pids(self.process.pid) if _is_worker(pid)]
        return children or [self.process.pid]

    def resident_mb(self) -> list[float]:
        return [resident_mb(pid) for pid in self.worker_pids()]

    def stop(self) -> None:
        stop(self.process)


def child_pids(parent: int) -> list[int]:
    children = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == parent:
            children.append(int(entry.name))
    return sorted(children)


def _is_worker(pid: int) -> bool:
    """Tell a worker from the resource tracker process that multiprocessing also starts."""
    try:
        command = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return False
    return b"resource_tracker" not in command


def cpu_seconds(pid: int) -> float:
    """Return the user and system CPU time `pid` has used, in seconds, from /proc/PID/stat."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def resident_mb(pid: int) -> float:
    """Return the resident set size of `pid` in MiB, from /proc/PID/status."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


@dataclass
class LoadGenerator:
    """The load generator process, driven one phase at a time over its stdin and stdout."""

    process: subprocess.Popen[str]
    phases: int = field(default=0)

    @classmethod
    def start(cls) -> LoadGenerator:
        process = subprocess.Popen(
            [str(PYTHON), "-m", "bench.loadgen"],
            cwd=REPO,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        return cls(process)

    def run(self, url: str, bodies: list[str], requests: int, **options: Any) -> dict[str, Any]:
        """Run one phase against `url` and return its outcome (see `bench.loadgen.Outcome`)."""
        stdin, stdout = self._pipes()
        phase = {"url": url, "bodies": bodies, "requests": requests, **options}
        stdin.write(json.dumps(phase) + "\n")
        stdin.flush()
        line = stdout.readline()
        if not line:
            raise RuntimeError("the load generator exited; run python -m bench.loadgen to see why")
        self.phases += 1
        outcome: dict[str, Any] = json.loads(line)
        return outcome

    def _pipes(self) -> tuple[IO[str], IO[str]]:
        assert self.process.stdin is not None and self.process.stdout is not None
        return self.process.stdin, self.process.stdout

    def stop(self) -> None:
        if self.process.stdin is not None:
            self.process.stdin.close()
        stop(self.process)


def load_average() -> list[float]:
    return [round(value, 2) for value in os.getloadavg()]
