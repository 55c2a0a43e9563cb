"""One writer at a time, and who holds the right to write when a run must wait.

A local home keeps an OS file lock (flock on .writer.lock): the kernel drops it when its holder dies
(even by SIGKILL), so a crashed run never leaves a stale lock behind, and it costs nothing. The holder
writes who it is and since when to .writer.holder, so a run that gives up waiting can say who it
waited for. An s3 home, shared by machines that have no lock in common, uses a lease object in the
store instead (storage/lease.py), and the live-release pointer moves only through `replace_pointer`,
which on s3 is conditional on the lease and on the pointer's version. Readers never take either.
"""

from __future__ import annotations

import os
import socket
from contextlib import contextmanager
from datetime import datetime, timezone
from typing import Iterator

from filelock import FileLock, Timeout

from storage.errors import UserError
from storage.home import LATEST, DataHome
from storage.lease import Lease, LeaseBusy

_LEASES: dict[str, Lease] = {}  # s3 homes whose writer lease this process holds, by URI

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
    """The right to write `home` until the block ends; StoreBusyError when another run keeps it past `timeout_s`."""
    timeout = DEFAULT_LOCK_TIMEOUT_S if timeout_s is None else timeout_s
    if home.is_remote:
        with writer_lease(home, timeout, holder):
            yield
        return
    home.root.mkdir(parents=True, exist_ok=True)
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


@contextmanager
def writer_lease(home: DataHome, timeout: float, holder: str) -> Iterator[None]:
    lease = Lease(home.store, holder)
    try:
        lease.acquire(timeout)
    except LeaseBusy as busy:
        raise StoreBusyError(
            f"Another pipeline run is writing to {home.uri}: {busy} and did not finish within {timeout:.0f} s. "
            "Wait for it to end and run again, or raise FASHION_SIM_LOCK_TIMEOUT. Nothing was changed by this run."
        ) from None
    _LEASES[home.uri] = lease
    try:
        yield
    finally:
        _LEASES.pop(home.uri, None)
        lease.release()


def replace_pointer(home: DataHome, data: bytes) -> None:
    """Write the live-release pointer: on s3, as the lease holder only, from the version it last saw
    (storage.lease.LeaseLostError otherwise); on a local home, atomically under the flock."""
    if not home.is_remote:
        home.store.write_bytes(LATEST, data)
        return
    lease = _LEASES.get(home.uri)
    if lease is None:
        raise RuntimeError(f"moving LATEST of {home.uri} needs the writer lease (storage.lock.writer_lock)")
    lease.replace_pointer(data)


def _say_who_holds(home: DataHome, holder: str) -> None:
    """Best effort (it only informs; a full disk must not stop the run here): a reader may see it half-written."""
    since = datetime.now(timezone.utc).isoformat(timespec="seconds")
    try:
        (home.root / HOLDER_FILE).write_text(
            f"{holder or 'a writer'} pid={os.getpid()} host={socket.gethostname()} since={since}\n")
    except OSError:
        pass
