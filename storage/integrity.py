"""Integrity: a checksum of every file a release owns, recorded when it is written, checked when it is read.

The checksum is xxh3_64 (xxhash): fast (about 9 GB/s from the page cache here, so checking what a
release reads when it opens costs a few per cent of opening it: benchmarks/integrity.py) and made to
detect damage (a flipped bit, a truncated or swapped file), not tampering: whoever can write a file
can write its checksum too. What is recorded where:

- a release manifest: `checksums` (store key -> checksum) for every file of its `files` (model.keras,
  embedder.tflite, metrics.json, the graphs), and `manifest_checksum`, the checksum of the manifest's
  canonical JSON without that field (a manifest cannot hold the checksum of its own bytes);
- a segment record: `checksums` (path inside the segment's Lance dataset -> checksum) for every file of
  its version (Lance's tracked_files: the version manifest, data, deletion, index and transaction
  files: all immutable), and `graph_checksum` for its HNSW graph. Files Lance rewrites
  (_versions/latest_version_hint.json, _latest.manifest) are not listed: they are the engine's.

A release is opened only after the files it reads are checked (storage/releases.py load_release);
`python -m flows.verify` checks every file (tasks/verify.py). Manifests written before checksums
existed have none of these fields: they still open, unchecked.
"""

from __future__ import annotations

import json
import mmap
import os
import stat
from pathlib import Path
from typing import Any

import xxhash

from storage.errors import UserError
from storage.files import NotRegularFileError, file_kind

SEAL = "manifest_checksum"  # the manifest's own checksum, of its canonical JSON without this field
CHECKSUMS = "checksums"  # in a manifest: store key -> checksum; in a segment record: path in its dataset -> checksum
GRAPH_CHECKSUM = "graph_checksum"  # in a segment record
# the files of a Lance version that a scan (to_table) opens, and those that any open reads whole; its
# indices (read in pieces by a vector search) and its transaction file (read by a concurrent commit) are
# checked by flows.verify only
READ_WHOLE = ("_versions/", "data/", "_deletions/")
READ_AT_OPEN = ("_versions/", "_deletions/")
STREAM_CHUNK = 8 << 20  # bytes hashed per read of an object-store download
MISMATCH = "does not match the checksum recorded when it was written"
# files this process hashed for an open, by identity (device, inode, size, modification and change
# times): reopening one unchanged costs a stat, not a read (a service following LATEST reopens the
# segments and model a re-index shares; the S3 cache's copies). Any write changes the change time, which
# nothing can set back; flows.verify never uses it
_HASHED_FOR_OPEN: dict[tuple[int, ...], str] = {}
MISSING = "is missing (or is not a regular file)"


class DamagedFileError(UserError, RuntimeError):
    """A file of the store does not match the checksum recorded when it was written."""

    def __init__(self, key: str, reason: str = MISMATCH):
        self.key, self.reason = key, reason
        super().__init__(f"{key} {reason}")

    @classmethod
    def found(cls, key: str, checksum: str | None) -> "DamagedFileError":
        """The error for the object at `key` whose checksum is `checksum` (None: it is absent)."""
        return cls(key, MISSING if checksum is None else MISMATCH)


def checksum_bytes(data: bytes | memoryview) -> str:
    return xxhash.xxh3_64_hexdigest(data)


def checksum_file(path: Path, for_open: bool = False) -> str:
    """The checksum of a local regular file, hashed through a memory map (no copy of the page cache's
    bytes); opened without blocking, so a FIFO put in its place raises NotRegularFileError. `for_open`:
    the checksum this process already computed for the same unchanged file, if any (_HASHED_FOR_OPEN)."""
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
    try:
        status = os.fstat(fd)
        if not stat.S_ISREG(status.st_mode):
            raise NotRegularFileError(file_kind(status.st_mode))
        identity = (status.st_dev, status.st_ino, status.st_size, status.st_mtime_ns, status.st_ctime_ns)
        if for_open and identity in _HASHED_FOR_OPEN:
            return _HASHED_FOR_OPEN[identity]
        if not status.st_size:
            return checksum_bytes(b"")
        with mmap.mmap(fd, 0, access=mmap.ACCESS_READ) as mapped:
            checksum = checksum_bytes(mapped)
        if for_open:
            _HASHED_FOR_OPEN[identity] = checksum
        return checksum
    finally:
        os.close(fd)


def forget_hashed_files() -> None:
    """Hash every file again at its next open (benchmarks/integrity.py measures an open's full cost)."""
    _HASHED_FOR_OPEN.clear()


def checksum_stream(stream) -> str:
    """The checksum of a file object read to its end (an object-store download, never held whole)."""
    hasher = xxhash.xxh3_64()
    while chunk := stream.read(STREAM_CHUNK):
        hasher.update(chunk)
    return hasher.hexdigest()


def check_bytes(data: bytes, key: str, expected: str | None) -> bytes:
    """`data` (the object at `key`) when it matches `expected` (None: nothing recorded); else DamagedFileError."""
    if expected is not None and checksum_bytes(data) != expected:
        raise DamagedFileError(key)
    return data


# ----------------------------------------------------------------------------------------- manifests


def canonical_checksum(manifest: dict[str, Any]) -> str:
    """The checksum of a manifest's content, whatever its layout on disk (keys sorted, no spaces)."""
    content = {key: value for key, value in manifest.items() if key != SEAL}
    return checksum_bytes(json.dumps(content, sort_keys=True, separators=(",", ":")).encode())


def seal(manifest: dict[str, Any]) -> dict[str, Any]:
    """`manifest` with its own checksum added (write it as JSON; `is_damaged_manifest` checks it)."""
    return {**manifest, SEAL: canonical_checksum(manifest)}


def has_checksums(manifest: dict[str, Any]) -> bool:
    """True for a manifest written with checksums. Either field marks it, so one flipped byte in the
    name of one of them cannot pass a manifest off as an older one without checksums."""
    return SEAL in manifest or CHECKSUMS in manifest


def is_damaged_manifest(manifest: dict[str, Any]) -> bool:
    """True when a manifest written with checksums no longer matches its own."""
    return has_checksums(manifest) and manifest.get(SEAL) != canonical_checksum(manifest)


# ------------------------------------------------------------------------------------------ segments


def dataset_checksums(store, key: str, version: int) -> dict[str, str]:
    """The checksum of every file of version `version` of the Lance dataset at `key` (call right after
    writing it: what it holds then is what later reads must find; on an object store that reads back
    what Lance uploaded, once)."""
    import lance

    from storage.location import lance_storage_options

    dataset = lance.dataset(store.url(key), version=version, storage_options=lance_storage_options(store.uri))
    files = dataset.tracked_files(min_version=version).read_all().to_pylist()
    return {entry["path"]: store.checksum(f"{key}/{entry['path']}")
            for entry in sorted(files, key=lambda entry: entry["path"]) if entry["version"] == version}


def verified_dataset_url(store, key: str, checksums: dict[str, str], whole: bool = True) -> str:
    """Where to open the Lance dataset at `key` once the files its open reads match `checksums`
    (DamagedFileError names the first that does not). To be read `whole` (a scan): every file of the
    scan, and on an object store their local copy is where to open it (downloaded once, checked while
    downloading, hashed again at each open like a local file), so an open downloads no more than Lance
    would read. Read on demand: only the files read whole (READ_AT_OPEN), the dataset staying where it is
    (its data and index files are read in pieces when a query asks; flows.verify checks them)."""
    folder = None
    for path, checksum in sorted(checksums.items()):
        if path.startswith(READ_WHOLE if whole else READ_AT_OPEN):
            local = store.local_file(f"{key}/{path}", None, checksum)
            folder = Path(local).parents[path.count("/")]
    return str(folder) if whole and folder is not None else store.url(key)
