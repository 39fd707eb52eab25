"""Several worker processes on one port: a supervising parent and SO_REUSEPORT workers.

`pii-sidecar serve --workers N` with N > 1 starts N worker processes. Each
loads its own policy and spaCy model and listens on the same host and port
with SO_REUSEPORT, so the Linux kernel spreads new connections over the
workers. A keep-alive connection stays with the worker that accepted it.
Detection is CPU-bound and holds the GIL, so workers are what use more than
one core. The parent serves no request. It:

- forwards SIGTERM and SIGINT to every worker as SIGTERM, so each drains as a
  single-process sidecar does, and kills a worker still running
  `grace_period` + `KILL_AFTER_GRACE` seconds later;
- restarts a worker that exits while the sidecar is not stopping, at most
  `MAX_RESTARTS` times in `RESTART_WINDOW` seconds, then stops every worker
  and exits with status 1;
- stops every worker and exits with status 2 when a worker exits with
  status 2, which means an invalid configuration or policy.

Workers run in their own process group, so a Ctrl-C in a terminal reaches
only the parent, and a worker stops by itself when its parent is gone.

Limits: each worker has its own findings cache and its own `/metrics`
counters, so a scrape through the shared port sees one worker. With
`--audit-file`, worker I writes its own hash-chained file, `NAME.workerI.EXT`,
because the audit file takes an exclusive lock.
"""

from __future__ import annotations

import asyncio
import multiprocessing
import os
import signal
import sys
import time
from collections import deque
from dataclasses import replace
from multiprocessing.connection import wait
from multiprocessing.process import BaseProcess
from pathlib import Path
from types import FrameType

import structlog

from sidecar.config import Settings
from sidecar.errors import SidecarError
from sidecar.logs import configure_logging, describe_exception, get_logger
from sidecar.serve import limit_malloc_arenas, serve

log = get_logger("sidecar.workers")

CONFIG_ERROR_STATUS = 2
MAX_RESTARTS = 5
RESTART_WINDOW = 60.0
KILL_AFTER_GRACE = 10.0
# Seconds between a worker's checks that its parent still runs.
ORPHAN_CHECK_INTERVAL = 1.0
_POLL_INTERVAL = 0.5


def run_workers(settings: Settings) -> int:
    """Run `settings.workers` worker processes until SIGTERM or SIGINT; return the exit status."""
    return Supervisor(settings).run()


def worker_settings(settings: Settings, index: int) -> Settings:
    """Return the settings of worker `index`: its own audit file, if one is set."""
    if settings.audit_file is None:
        return settings
    path = Path(settings.audit_file)
    return replace(
        settings, audit_file=str(path.with_name(f"{path.stem}.worker{index}{path.suffix}"))
    )


class Supervisor:
    """Starts, restarts and stops the worker processes of one sidecar."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._context = multiprocessing.get_context("spawn")
        self._workers: dict[int, BaseProcess] = {}
        self._restarts: deque[float] = deque()
        self._stopping = False
        self._stop_deadline = 0.0
        self._killed = False
        self._status = 0

    def run(self) -> int:
        signal.signal(signal.SIGTERM, self._on_signal)
        signal.signal(signal.SIGINT, self._on_signal)
        log.info("workers_starting", workers=self.settings.workers, port=self.settings.port)
        for index in range(1, self.settings.workers + 1):
            self._start(index)
        while self._workers:
            self._wait_once()
        log.info("workers_stopped", status=self._status)
        return self._status

    def _start(self, index: int) -> None:
        process = self._context.Process(
            target=worker_main,
            args=(worker_settings(self.settings, index), index, os.getpid()),
            name=f"pii-sidecar-worker-{index}",
        )
        process.start()
        self._workers[index] = process
        log.info("worker_started", worker=index, pid=process.pid)

    def _wait_once(self) -> None:
        by_sentinel = {process.sentinel: index for index, process in self._workers.items()}
        for sentinel in wait(list(by_sentinel), timeout=_POLL_INTERVAL):
            self._reap(by_sentinel[sentinel])  # type: ignore[index]
        if self._stopping and not self._killed and time.monotonic() > self._stop_deadline:
            for index, process in self._workers.items():
                log.warning("worker_killed", worker=index, pid=process.pid)
                process.kill()
            self._killed = True

    def _reap(self, index: int) -> None:
        process = self._workers.pop(index)
        process.join()
        status = process.exitcode
        if self._stopping:
            log.info("worker_stopped", worker=index, pid=process.pid, status=status)
        elif status == CONFIG_ERROR_STATUS:
            log.error("worker_config_invalid", worker=index, pid=process.pid)
            self._stop(CONFIG_ERROR_STATUS)
        elif self._may_restart():
            log.error(
                "worker_exited", worker=index, pid=process.pid, status=status, restarting=True
            )
            self._start(index)
        else:
            log.error(
                "worker_exited",
                worker=index,
                pid=process.pid,
                status=status,
                restarting=False,
                restarts=len(self._restarts),
                window_seconds=RESTART_WINDOW,
            )
            self._stop(1)

    def _may_restart(self) -> bool:
        now = time.monotonic()
        while self._restarts and now - self._restarts[0] > RESTART_WINDOW:
            self._restarts.popleft()
        if len(self._restarts) >= MAX_RESTARTS:
            return False
        self._restarts.append(now)
        return True

    def _on_signal(self, signum: int, frame: FrameType | None) -> None:
        log.info("workers_stopping", signal=signal.Signals(signum).name)
        self._stop(self._status)

    def _stop(self, status: int) -> None:
        self._status = status
        if not self._stopping:
            self._stopping = True
            self._stop_deadline = time.monotonic() + self.settings.grace_period + KILL_AFTER_GRACE
        for process in self._workers.values():
            if process.pid is not None and process.is_alive():
                os.kill(process.pid, signal.SIGTERM)


def worker_main(settings: Settings, index: int, parent_pid: int) -> None:
    """Serve in a worker process until SIGTERM or until the parent is gone; exit with the status."""
    os.setpgrp()
    limit_malloc_arenas()
    configure_logging(settings.log_format, settings.log_level)
    structlog.contextvars.bind_contextvars(worker=index)
    try:
        status = asyncio.run(_serve_until_orphaned(settings, parent_pid))
    except SidecarError as exc:
        print(f"pii-sidecar: {exc}", file=sys.stderr)
        status = CONFIG_ERROR_STATUS
    except Exception as exc:
        log.error("worker_failed", **describe_exception(exc))
        status = 1
    sys.exit(status)


async def _serve_until_orphaned(settings: Settings, parent_pid: int) -> int:
    watchdog = asyncio.create_task(_stop_when_orphaned(parent_pid))
    try:
        return await serve(settings)
    finally:
        watchdog.cancel()


async def _stop_when_orphaned(parent_pid: int) -> None:
    while os.getppid() == parent_pid:
        await asyncio.sleep(ORPHAN_CHECK_INTERVAL)
    log.warning("worker_orphaned", parent_pid=parent_pid)
    os.kill(os.getpid(), signal.SIGTERM)
