"""One writer at a time: an OS file lock on the data home, and who holds it when a run must wait.

The lock is flock-based, so the kernel drops it when its holder dies (even by SIGKILL): a crashed
run never leaves a stale lock behind. Readers never take it. The holder writes who it is and since
when to .writer.holder, so a run that gives up waiting can say who it waited for.
"""

from __future__ import annotations

import os
import socket
from contextlib import contextmanager
from datetime import datetime, timezone
from typing import Iterator

from filelock import FileLock, Timeout

from storage.errors import UserError
from storage.home import DataHome

DEFAULT_LOCK_TIMEOUT_S = float(os.environ.get("FASHION_SIM_LOCK_TIMEOUT", "600"))
HOLDER_FILE = ".writer.holder"  # "<flow> pid=<pid> host=<host> since=<ISO time>", written by the holder


class StoreBusyError(UserError, RuntimeError):
    """Another run holds the writer lock for longer than we were willing to wait."""


def _holder_description(home: DataHome) -> str:
    try:
        return (home.root / HOLDER_FILE).read_text().strip() or "an unnamed run"
    except OSError:
        return "a run that did not say who it is"


@contextmanager
def writer_lock(home: DataHome, timeout_s: float | None = None, holder: str = "") -> Iterator[None]:
    home.root.mkdir(parents=True, exist_ok=True)
    timeout = DEFAULT_LOCK_TIMEOUT_S if timeout_s is None else timeout_s
    lock = FileLock(str(home.writer_lock), timeout=timeout)
    try:
        lock.acquire()
    except Timeout:
        raise StoreBusyError(
            f"Another pipeline run is writing to {home.root}: {_holder_description(home)} holds the lock "
            f"{home.writer_lock} and did not finish within {timeout:.0f} s. Wait for it to end and run again, "
            "or raise FASHION_SIM_LOCK_TIMEOUT. Nothing was changed by this run."
        ) from None
    try:
        _say_who_holds(home, holder)
        yield
    finally:
        lock.release()


def _say_who_holds(home: DataHome, holder: str) -> None:
    """Best effort (it only informs; a full disk must not stop the run here): a reader may see it half-written."""
    since = datetime.now(timezone.utc).isoformat(timespec="seconds")
    try:
        (home.root / HOLDER_FILE).write_text(
            f"{holder or 'a writer'} pid={os.getpid()} host={socket.gethostname()} since={since}\n")
    except OSError:
        pass
