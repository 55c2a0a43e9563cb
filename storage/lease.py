"""One writer at a time on object storage, where there is no flock: a lease object.

The lease is one small JSON object (.writer.lease in the store) that says who holds it, with a random
token, until when. A writer takes it with a conditional PUT: If-None-Match when there is none,
If-Match on the version it read when the one there has expired (its holder died or hung), so of two
writers that try at once exactly one succeeds. The holder renews it from a background thread every
quarter of its length; a renewal is conditional on the version it wrote last, so a writer whose
lease lapsed and was taken over learns it at its next renewal and never writes the pointer again.
A dead writer blocks others for at most the lease's length (lease_seconds()).

The live-release pointer is moved only through `replace_pointer`: the holder checks that its lease is
still its own and not about to lapse, then replaces LATEST conditionally on the version it last saw
(If-Match), so even a writer paused past its lease (a stopped VM) cannot overwrite a newer release.

Expiry times come from the holder's clock: machines that share a store must keep their clocks within
a few seconds (NTP), as with any lease.
"""

from __future__ import annotations

import json
import os
import secrets
import socket
import threading
import time
from datetime import datetime, timezone

from botocore.exceptions import BotoCoreError  # s3fs's client raises these for an unreachable endpoint

from storage.errors import UserError
from storage.home import LATEST

LEASE_KEY = ".writer.lease"
LEASE_ENV = "FASHION_SIM_LEASE_SECONDS"
DEFAULT_LEASE_SECONDS = 60.0
SAFETY_SECONDS = 5.0  # the pointer is not moved when the lease has less than this left (or a quarter of it)
POLL_SECONDS = 1.0


def lease_seconds() -> float:
    """How long a lease lasts unless renewed: FASHION_SIM_LEASE_SECONDS, else 60 s."""
    return float(os.environ.get(LEASE_ENV) or DEFAULT_LEASE_SECONDS)


class LeaseLostError(UserError, RuntimeError):
    """This writer's lease lapsed or was taken over: it must not publish."""


class Lease:
    """The writer lease of the store `store` (storage/objects.py), held by `holder` once `acquire` returns."""

    def __init__(self, store, holder: str, seconds: float | None = None):
        self.store = store
        self.holder = holder or "a writer"
        self.seconds = seconds or lease_seconds()
        self.token = secrets.token_hex(16)
        self.version: str | None = None  # of the lease object as this writer last wrote it
        self.expires_at = 0.0
        self.lost: str | None = None  # why this writer may no longer write, once it is so
        self.pointer_version: str | None = None  # of LATEST as this writer last saw or wrote it
        self._stop = threading.Event()
        self._renewer: threading.Thread | None = None

    def _body(self, expires_at: float) -> bytes:
        since = datetime.now(timezone.utc).isoformat(timespec="seconds")
        return json.dumps({"holder": self.holder, "pid": os.getpid(), "host": socket.gethostname(),
                           "since": since, "token": self.token, "expires_at": expires_at}).encode()

    def try_acquire(self) -> dict | None:
        """Take the lease if it is free or expired; None when taken, else the current holder's record."""
        data, version = self.store.read_versioned(LEASE_KEY)
        current = _parse(data)
        if current is not None and current.get("expires_at", 0) > time.time():
            return current
        expires_at = time.time() + self.seconds
        if not self.store.write_if(LEASE_KEY, self._body(expires_at), version if data is not None else None):
            return _parse(self.store.read_versioned(LEASE_KEY)[0]) or {"holder": "another writer"}
        if not self._confirm():
            return {"holder": "another writer"}
        self.expires_at = expires_at
        return None

    def _confirm(self) -> bool:
        """Read the lease back: it is ours when it holds our token (and remember its version)."""
        data, version = self.store.read_versioned(LEASE_KEY)
        if (_parse(data) or {}).get("token") != self.token:
            return False
        self.version = version
        return True

    def acquire(self, timeout_s: float) -> None:
        """Wait up to `timeout_s` for the lease; LeaseBusy when it stays taken."""
        deadline = time.monotonic() + timeout_s
        while True:
            holder = self.try_acquire()
            if holder is None:
                break
            if time.monotonic() >= deadline:
                raise LeaseBusy(holder)
            time.sleep(min(POLL_SECONDS, max(0.0, deadline - time.monotonic())))
        self.pointer_version = self.store.read_versioned(LATEST)[1]
        self._renewer = threading.Thread(target=self._renew_loop, name="writer-lease", daemon=True)
        self._renewer.start()

    def _renew_loop(self) -> None:
        while not self._stop.wait(self.seconds / 4):
            self.renew()

    def renew(self) -> None:
        """Push the expiry forward, conditionally on the lease being as this writer wrote it."""
        if self.lost:
            return
        expires_at = time.time() + self.seconds
        try:
            written = self.store.write_if(LEASE_KEY, self._body(expires_at), self.version)
        except (OSError, BotoCoreError) as error:  # the store is unreachable: keep the old expiry, try again
            if time.time() > self.expires_at:
                self.lost = f"it could not be renewed ({error})"
            return
        if not written or not self._confirm():
            self.lost = "another writer took it over"
            return
        self.expires_at = expires_at

    def check(self) -> None:
        """LeaseLostError unless this writer still holds the lease with time to spare."""
        if self.lost is None and time.time() > self.expires_at - min(SAFETY_SECONDS, self.seconds / 4):
            self.lost = "it lapsed"
        if self.lost:
            raise LeaseLostError(
                f"This run's writer lease on {self.store.uri} was lost ({self.lost}); it stopped before moving "
                "the live release. Nothing it did is visible; run it again.")

    def replace_pointer(self, data: bytes) -> None:
        """Move LATEST, as the lease holder and only from the version this writer last saw."""
        self.check()
        if not self.store.write_if(LATEST, data, self.pointer_version):
            raise LeaseLostError(
                f"The live release of {self.store.uri} was moved by another writer while this run held the lease; "
                "not overwriting it. Run again to build on the newer release.")
        self.pointer_version = self.store.read_versioned(LATEST)[1]

    def release(self) -> None:
        """Stop renewing and let the next writer in at once (the lease is marked expired, if still ours)."""
        self._stop.set()
        if self._renewer is not None:
            self._renewer.join()
        if not self.lost and self.version is not None:
            try:
                self.store.write_if(LEASE_KEY, self._body(0.0), self.version)
            except (OSError, BotoCoreError):
                pass  # it expires by itself


class LeaseBusy(Exception):
    """The lease is held by someone else (`holder`: their record)."""

    def __init__(self, holder: dict):
        super().__init__(describe_holder(holder))
        self.holder = holder


def describe_holder(record: dict) -> str:
    left = record.get("expires_at", 0) - time.time()
    return (f"{record.get('holder', 'a writer')} pid={record.get('pid', '?')} host={record.get('host', '?')} "
            f"since={record.get('since', '?')} (lease expires in {max(left, 0):.0f} s)")


def _parse(data: bytes | None) -> dict | None:
    if data is None:
        return None
    try:
        record = json.loads(data)
    except (json.JSONDecodeError, UnicodeDecodeError):
        return {"holder": "an unreadable lease", "expires_at": 0}
    return record if isinstance(record, dict) else {"holder": "an unreadable lease", "expires_at": 0}
