"""The store's one file-system seam: the few operations releases, manifests, graphs, models, the
gallery and the live-release pointer need, on a local folder or an object store (s3://).

Keys are '/'-separated paths relative to the store's root. Both implementations keep the same
promises, so the code above them has one path:

- `write_bytes` is atomic: a reader sees the old object or the new one, never half of one
  (local: temporary file, fsync, rename; S3: one PUT).
- `write_if` is the compare-and-swap the single-writer rules need: it writes only when the object
  is still at the version the caller read (`read_versioned`), or absent when that version is None
  (local: the caller holds the flock, so checking then writing is enough; S3: If-Match /
  If-None-Match, so a writer whose lease lapsed cannot overwrite what another wrote meanwhile).
- `publish_folder` makes a folder built locally visible under a key as a whole: local, by one rename
  (the folder is built on the same filesystem); S3, by uploading every file and `last` (the manifest)
  after all the others, so a reader that finds the manifest finds everything it lists.
- `local_file` gives a local path to read (hnswlib, Keras, LiteRT and Lance open files by name): the
  file itself, or a download into a local cache that is checked against the object's size; given the
  checksum recorded when the file was written (storage/integrity.py), the path is returned only once
  the bytes match it (a download is checked once, and hashed again at each open, like a local file).
"""

from __future__ import annotations

import hashlib
import os
import shutil
from pathlib import Path

from storage.atomic import atomic_write_bytes, fsync_dir, fsync_file
from storage.files import NotRegularFileError, read_regular_file
from storage.integrity import DamagedFileError, check_bytes, checksum_file, checksum_stream
from storage.location import is_remote, join

PRECONDITION_FAILED = "pre-conditions you specified did not hold"  # S3's 412 text, as s3fs passes it on
MAX_OBJECT_BYTES = 1 << 34  # reads are bounded; no object of the store comes near it
# local_file fetches an object in parts of this size at once: a 66 MB segment file from SeaweedFS on this
# machine in 0.12-0.22 s, against 0.17-0.28 s in one GET
DOWNLOAD_PART = 8 << 20


class OutsideStoreError(PermissionError):
    """A key that resolves outside the store (a symlink planted in a local store): never followed."""


class LocalStore:
    """A store on a local folder."""

    def __init__(self, root: Path):
        self.root = Path(root)
        self.uri = str(self.root)

    def __repr__(self) -> str:
        return f"LocalStore({self.uri})"

    def path(self, key: str) -> Path:
        return self.root / key

    def _inside(self, key: str) -> Path:
        """`key`'s path, refused when links make it resolve outside the store."""
        path = self.path(key)
        if self.root.resolve() not in path.resolve().parents:
            raise OutsideStoreError(f"{key} resolves outside {self.root}")
        return path

    def url(self, key: str) -> str:
        """Where an engine (Lance) finds `key`."""
        return str(self.path(key))

    def read_bytes(self, key: str, max_bytes: int = MAX_OBJECT_BYTES) -> bytes:
        """The object's bytes (at most `max_bytes`); never blocks on a FIFO planted in its place
        (storage.files.NotRegularFileError)."""
        return read_regular_file(self._inside(key), max_bytes)[0]

    def write_bytes(self, key: str, data: bytes) -> None:
        atomic_write_bytes(self.path(key), data)

    def read_versioned(self, key: str, max_bytes: int = MAX_OBJECT_BYTES) -> tuple[bytes | None, str | None]:
        """The object's bytes and a version token (None, None when absent)."""
        try:
            data = self.read_bytes(key, max_bytes)
        except FileNotFoundError:
            return None, None
        return data, hashlib.sha256(data).hexdigest()

    def write_if(self, key: str, data: bytes, version: str | None) -> bool:
        """Write when the object is still at `version` (absent for None); False when it is not."""
        if self.read_versioned(key)[1] != version:
            return False
        self.write_bytes(key, data)
        return True

    def size(self, key: str) -> int | None:
        """The size of the regular file at `key`; None when it is absent, not a file, or outside."""
        try:
            path = self._inside(key)
            return path.stat().st_size if path.is_file() else None
        except (FileNotFoundError, OutsideStoreError):
            return None

    def exists(self, key: str) -> bool:
        return self.path(key).exists()

    def list(self, key: str) -> list[str]:
        """Names directly under `key`, sorted; empty when there is nothing."""
        folder = self.path(key)
        return sorted(entry.name for entry in folder.iterdir()) if folder.is_dir() else []

    def delete(self, key: str) -> None:
        """Remove the object or everything under `key`; nothing when absent."""
        path = self.path(key)
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path)
        else:
            path.unlink(missing_ok=True)

    def used_bytes(self, key: str) -> int:
        """Bytes of the object or of everything under `key`; 0 when absent."""
        path = self.path(key)
        if path.is_file():
            return path.stat().st_size
        return sum(file.stat().st_size for file in path.rglob("*") if file.is_file() and not file.is_symlink())

    def put_file(self, local: Path, key: str) -> None:
        """Move a finished local file (on the store's filesystem) to `key`, durably."""
        target = self.path(key)
        target.parent.mkdir(parents=True, exist_ok=True)
        fsync_file(local)
        os.replace(local, target)
        fsync_dir(target.parent)

    def publish_folder(self, local: Path, key: str, last: str) -> None:
        """Make the finished folder `local` appear as `key` in one step (see the module docstring)."""
        for file in sorted(p for p in local.rglob("*") if p.is_file()):
            fsync_file(file)
        for folder in [*(p for p in local.rglob("*") if p.is_dir()), local]:
            fsync_dir(folder)
        target = self.path(key)
        target.parent.mkdir(parents=True, exist_ok=True)
        os.rename(local, target)
        fsync_dir(target.parent)

    def local_file(self, key: str, size: int | None = None, checksum: str | None = None) -> Path:
        found = checksum if checksum is None else self.checksum(key, for_open=True)
        if found != checksum:
            raise DamagedFileError.found(key, found)
        return self.path(key)

    def checksum(self, key: str, for_open: bool = False) -> str | None:
        """The checksum of the object at `key` (storage/integrity.py; `for_open` as checksum_file says);
        None when it is absent."""
        try:
            return checksum_file(self._inside(key), for_open)
        except (FileNotFoundError, NotADirectoryError, NotRegularFileError, OutsideStoreError):
            return None


class S3Store:
    """A store under s3://bucket/prefix, through s3fs (endpoint and credentials: storage.location)."""

    def __init__(self, uri: str, cache: Path):
        from storage.location import s3_filesystem

        self.uri = uri.rstrip("/")
        self.fs = s3_filesystem(self.uri)
        self.cache = Path(cache)

    def __repr__(self) -> str:
        return f"S3Store({self.uri})"

    def url(self, key: str) -> str:
        return join(self.uri, key)

    def _object(self, key: str) -> str:
        return join(self.uri, key).removeprefix("s3://")

    def read_bytes(self, key: str, max_bytes: int = MAX_OBJECT_BYTES) -> bytes:
        return self.fs.cat_file(self._object(key), start=0, end=max_bytes)

    def write_bytes(self, key: str, data: bytes) -> None:
        self.fs.pipe_file(self._object(key), data)

    def read_versioned(self, key: str, max_bytes: int = MAX_OBJECT_BYTES) -> tuple[bytes | None, str | None]:
        try:
            info = self.fs.info(self._object(key), refresh=True)
            data = self.read_bytes(key, max_bytes)
        except FileNotFoundError:
            return None, None
        # the bytes and the ETag come from two requests: a change between them makes the ETag newer
        # than the bytes, so a write_if on it can only fail, never overwrite unseen data wrongly
        return data, info["ETag"]

    def write_if(self, key: str, data: bytes, version: str | None) -> bool:
        condition = {"IfNoneMatch": "*"} if version is None else {"IfMatch": version}
        try:
            self.fs.pipe_file(self._object(key), data, **condition)
        except OSError as error:
            if PRECONDITION_FAILED in str(error) or "PreconditionFailed" in str(error):
                return False
            raise
        finally:
            self.fs.invalidate_cache(self._object(key))
        return True

    def size(self, key: str) -> int | None:
        try:
            info = self.fs.info(self._object(key), refresh=True)
        except FileNotFoundError:
            return None
        return None if info.get("type") == "directory" else int(info["size"])

    def exists(self, key: str) -> bool:
        self.fs.invalidate_cache(self._object(key))
        return self.fs.exists(self._object(key))

    def list(self, key: str) -> list[str]:
        try:
            entries = self.fs.ls(self._object(key), detail=False, refresh=True)
        except FileNotFoundError:
            return []
        return sorted(entry.rstrip("/").rsplit("/", 1)[-1] for entry in entries)

    def delete(self, key: str) -> None:
        """Remove the object or everything under `key` (batched deletes); nothing when absent."""
        target = self._object(key)
        self.fs.invalidate_cache(target)
        found = self.fs.find(target, withdirs=True, detail=True)  # every object under the prefix, or the object
        files = [path for path, info in found.items() if info["type"] != "directory"]
        if files:
            self.fs.rm(files)
        # servers that keep folders (SeaweedFS) keep each one as an object "<folder>/" once its files are
        # gone, and list it as if it were still there: delete those too, innermost first
        for folder in sorted((path for path, info in found.items() if info["type"] == "directory"), key=len,
                             reverse=True):
            bucket, prefix, _ = self.fs.split_path(folder)
            self.fs.call_s3("delete_object", Bucket=bucket, Key=prefix.rstrip("/") + "/")
        self.fs.invalidate_cache(target)

    def used_bytes(self, key: str) -> int:
        """Bytes of the object or of everything under `key`; 0 when absent."""
        self.fs.invalidate_cache(self._object(key))
        return int(self.fs.du(self._object(key), total=True))

    def put_file(self, local: Path, key: str) -> None:
        self.fs.put_file(str(local), self._object(key))
        Path(local).unlink()

    def publish_folder(self, local: Path, key: str, last: str) -> None:
        files = sorted(p for p in local.rglob("*") if p.is_file() and p.relative_to(local).as_posix() != last)
        for file in [*files, local / last]:
            self.fs.put_file(str(file), self._object(f"{key}/{file.relative_to(local).as_posix()}"))
        shutil.rmtree(local)
        self.fs.invalidate_cache(self._object(key))

    def local_file(self, key: str, size: int | None = None, checksum: str | None = None) -> Path:
        """A cached download of an immutable object (a release's or a segment's file). With a checksum
        a cached copy that does not match it is downloaded again, and a download that does not match
        it is refused (DamagedFileError): the object in the store is damaged."""
        cached = self.cache / key
        if (cached.is_file() and (size is None or cached.stat().st_size == size)
                and (checksum is None or checksum_file(cached, for_open=True) == checksum)):
            return cached
        try:
            atomic_write_bytes(cached, check_bytes(self._read_parts(key, size), key, checksum), durable=checksum is None)
        except FileNotFoundError:
            if checksum is None:
                raise
            raise DamagedFileError.found(key, None) from None
        return cached

    def _read_parts(self, key: str, size: int | None) -> bytes:
        """The whole object, its DOWNLOAD_PART parts fetched at once (`size`: its size, when known)."""
        path = self._object(key)
        size = int(self.fs.info(path, refresh=True)["size"]) if size is None else size
        starts = list(range(0, size, DOWNLOAD_PART)) or [0]
        ends = [min(start + DOWNLOAD_PART, size) for start in starts]
        return b"".join(self.fs.cat_ranges([path] * len(starts), starts, ends, on_error="raise"))

    def checksum(self, key: str) -> str | None:
        """The checksum of the object at `key`, streamed (never held whole); None when it is absent."""
        try:
            with self.fs.open(self._object(key), "rb", block_size=1 << 23) as stream:
                return checksum_stream(stream)
        except FileNotFoundError:
            return None


def open_store(uri: str, cache: Path) -> LocalStore | S3Store:
    """The store at `uri`: a local folder, or an object-store prefix with its downloads cached in `cache`."""
    return S3Store(uri, cache) if is_remote(uri) else LocalStore(Path(uri))
