"""A run lock so cron jobs that overlap do not pile up, and per-node locks so two runs never change one node at
once (flock: released by the kernel if we die). Their files live beside the state database."""

from __future__ import annotations

import fcntl
import hashlib
import os
import time
from collections.abc import Iterable
from pathlib import Path
from typing import IO

from jueying_cli.errors import LockBusy


class RunLock:
    def __init__(self, path: Path) -> None:
        self.path = path
        self._fh: IO[str] | None = None

    def acquire(self, wait_s: float = 0.0) -> RunLock:
        self.path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        fh = open(self.path, "a+")  # noqa: SIM115 - held open for the lock's lifetime
        deadline = time.monotonic() + wait_s
        while True:
            try:
                fcntl.flock(fh.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    fh.seek(0)
                    holder = fh.read().strip() or "unknown process"
                    fh.close()
                    raise LockBusy(f"another run holds {self.path} ({holder})") from None
                time.sleep(0.2)
        fh.seek(0)
        fh.truncate()
        fh.write(f"pid {os.getpid()} since {time.strftime('%Y-%m-%dT%H:%M:%SZ', time.gmtime())}\n")
        fh.flush()
        self._fh = fh
        return self

    def release(self) -> None:
        if self._fh is not None:
            fcntl.flock(self._fh.fileno(), fcntl.LOCK_UN)
            self._fh.close()
            self._fh = None

    def __enter__(self) -> RunLock:
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()


class NodeLocks:
    """One lock per node for the runs that change nodes (drain, resume, settling what a dead run left): a
    run holds a node's lock from re-reading its state, through the change, to the audit entry's settlement,
    so two runs never act on one node at once. flock on `<directory>/<hash of the name>.lock`: the kernel
    frees a dead run's locks, and independent opens conflict even within one process."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self._held: dict[str, IO[str]] = {}

    def _path(self, node: str) -> Path:
        return self.directory / (hashlib.sha256(node.encode()).hexdigest()[:24] + ".lock")

    def try_lock(self, node: str) -> bool:
        """Take `node`'s lock if it is free (or already ours); never waits."""
        if node in self._held:
            return True
        self.directory.mkdir(parents=True, exist_ok=True, mode=0o700)
        fh = open(self._path(node), "a+")  # noqa: SIM115 - held open for the lock's lifetime
        try:
            fcntl.flock(fh.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            fh.close()
            return False
        fh.seek(0)
        fh.truncate()
        fh.write(f"pid {os.getpid()} since {time.strftime('%Y-%m-%dT%H:%M:%SZ', time.gmtime())}\n")
        fh.flush()
        self._held[node] = fh
        return True

    def holder(self, node: str) -> str:
        """Who holds `node`'s lock, as its holder wrote it (for messages)."""
        try:
            return self._path(node).read_text().strip() or "another run"
        except OSError:
            return "another run"

    def release(self, nodes: Iterable[str]) -> None:
        for node in nodes:
            fh = self._held.pop(node, None)
            if fh is not None:
                fcntl.flock(fh.fileno(), fcntl.LOCK_UN)
                fh.close()

    def release_all(self) -> None:
        self.release(list(self._held))
