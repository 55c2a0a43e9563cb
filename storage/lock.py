"""One writer at a time: an OS file lock on the data home.

The lock is flock-based, so the kernel drops it when its holder dies (even by SIGKILL): a crashed
run never leaves a stale lock behind. Readers never take it.
"""

from __future__ import annotations

import os
from contextlib import contextmanager
from typing import Iterator

from filelock import FileLock, Timeout

from storage.home import DataHome

DEFAULT_LOCK_TIMEOUT_S = float(os.environ.get("FASHION_SIM_LOCK_TIMEOUT", "600"))


class StoreBusyError(RuntimeError):
    """Another run holds the writer lock for longer than we were willing to wait."""


@contextmanager
def writer_lock(home: DataHome, timeout_s: float | None = None, holder: str = "") -> Iterator[None]:
    home.root.mkdir(parents=True, exist_ok=True)
    timeout = DEFAULT_LOCK_TIMEOUT_S if timeout_s is None else timeout_s
    lock = FileLock(str(home.writer_lock), timeout=timeout)
    try:
        lock.acquire()
    except Timeout:
        raise StoreBusyError(
            f"Another pipeline run is writing to {home.root} (lock {home.writer_lock}) and did not "
            f"finish within {timeout:.0f} s. Wait for it to end and run again, or raise "
            "FASHION_SIM_LOCK_TIMEOUT. Nothing was changed by this run."
        ) from None
    try:
        if holder:
            (home.root / ".writer.holder").write_text(f"{holder} pid={os.getpid()}\n")
        yield
    finally:
        lock.release()
