"""Change detection for policy files by polling, and the task that reloads on change.

A Kubernetes ConfigMap volume never rewrites a file in place. It writes a new
timestamped directory, points the `..data` symlink at it, and each visible
file is a symlink through `..data`. So a file's state here is its resolved
path, device, inode, modification time and size: any update, in place or by
symlink swap, changes at least one of them. Polling needs no dependency and
works on every file system, network volumes included.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from sidecar.logs import describe_exception, get_logger

log = get_logger("sidecar.policy")

POLICY_SUFFIXES = (".yaml", ".yml")


@dataclass(frozen=True)
class FileState:
    """The stat data that polling compares for one file; `None` fields mean it is missing."""

    path: str
    realpath: str | None
    device: int | None = None
    inode: int | None = None
    mtime_ns: int | None = None
    size: int | None = None


def file_state(path: Path) -> FileState:
    try:
        stat = path.stat()
    except OSError:
        return FileState(str(path), None)
    return FileState(
        str(path), os.path.realpath(path), stat.st_dev, stat.st_ino, stat.st_mtime_ns, stat.st_size
    )


def policy_files(directory: Path) -> list[Path]:
    """Return the policy files of `directory`, sorted by name.

    Hidden entries are skipped, which leaves out a ConfigMap's `..data` and
    timestamped directories while the visible symlinks through them are kept.
    """
    return sorted(
        entry
        for entry in directory.iterdir()
        if not entry.name.startswith(".") and entry.suffix in POLICY_SUFFIXES and entry.is_file()
    )


def fingerprint(paths: Iterable[Path]) -> tuple[FileState, ...]:
    """Return the state of every file in `paths`, in order."""
    return tuple(file_state(path) for path in paths)


class Reloadable(Protocol):
    def reload_if_changed(self) -> bool: ...


async def watch(store: Reloadable, interval: float) -> None:
    """Call `store.reload_if_changed` every `interval` seconds until the task is cancelled.

    Reloading runs in a worker thread, because it reads files and compiles
    regular expressions. An unexpected error is logged and polling goes on.
    """
    log.info("policy_watch_started", interval_seconds=interval)
    while True:
        await asyncio.sleep(interval)
        try:
            await asyncio.to_thread(store.reload_if_changed)
        except Exception as exc:
            log.error("policy_watch_failed", **describe_exception(exc))
