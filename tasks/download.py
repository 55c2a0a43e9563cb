"""download: the four canonical Fashion-MNIST files, md5-verified, written atomically.

Sources, in order: FASHION_MNIST_MIRROR (a local directory or a base URL) when set, else the public
mirrors. A file already on disk with the right md5 is not fetched again.
"""

from __future__ import annotations

import hashlib
import http.client
import os
import tempfile
import time
import urllib.request
from pathlib import Path

from prefect import task
from prefect.cache_policies import NO_CACHE

from storage.errors import UserError
from tasks.logs import step_logger

FILES_MD5 = {
    "train-images-idx3-ubyte.gz": "8d4fb7e6c68d591d4c3dfef9ec88bf0d",
    "train-labels-idx1-ubyte.gz": "25c81989df183df01b3e8a0aad5dffbe",
    "t10k-images-idx3-ubyte.gz": "bef4ecab320f06d8554ea6380940ec79",
    "t10k-labels-idx1-ubyte.gz": "bb300cfdad3c16e7a12a480ee83cd310",
}
PUBLIC_MIRRORS = (
    "https://fashion-mnist.s3-website.eu-central-1.amazonaws.com/",
    "https://storage.googleapis.com/tensorflow/tf-keras-datasets/",
)
MIRROR_ENV = "FASHION_MNIST_MIRROR"
CHECKSUMS_ENV = "FASHION_MNIST_MD5SUMS"  # an MD5SUMS file that replaces FILES_MD5 (custom or test data)
CHUNK = 1 << 16


class DownloadError(UserError, RuntimeError):
    """No source gave a file with the expected checksum."""


def expected_checksums() -> dict[str, str]:
    """md5 per file name: the canonical ones, or those of the MD5SUMS file named by $FASHION_MNIST_MD5SUMS."""
    override = os.environ.get(CHECKSUMS_ENV)
    if not override:
        return dict(FILES_MD5)
    sums = {}
    for line in Path(override).read_text().splitlines():
        if line.strip():
            digest, name = line.split()
            sums[name.lstrip("*")] = digest
    missing = set(FILES_MD5) - set(sums)
    if missing:
        raise DownloadError(f"{override} lacks checksums for {sorted(missing)}")
    return sums


def md5_of(path: Path) -> str:
    digest = hashlib.md5()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(CHUNK), b""):
            digest.update(block)
    return digest.hexdigest()


def sources(mirror: str | None) -> list[str]:
    mirror = mirror if mirror is not None else os.environ.get(MIRROR_ENV)
    return [mirror] if mirror else list(PUBLIC_MIRRORS)


def _open_source(source: str, name: str, timeout_s: float):
    """(readable stream, total bytes or None) for `name` at a directory or URL source."""
    if "://" not in source:
        path = Path(source).expanduser() / name
        return open(path, "rb"), path.stat().st_size
    url = source.rstrip("/") + "/" + name
    if url.startswith("file://"):
        path = Path(urllib.request.url2pathname(url[len("file://"):]))
        return open(path, "rb"), path.stat().st_size
    response = urllib.request.urlopen(url, timeout=timeout_s)
    length = response.headers.get("Content-Length")
    return response, int(length) if length else None


def fetch_one(source: str, name: str, md5: str, target: Path, timeout_s: float = 30.0) -> None:
    """Copy `name` from `source` to `target` through a temporary file; rename only if the md5 matches."""
    log = step_logger()
    fd, tmp_name = tempfile.mkstemp(prefix=f".{name}.", suffix=".part", dir=target.parent)
    tmp = Path(tmp_name)
    try:
        stream, total = _open_source(source, name, timeout_s)
        digest, done, next_report = hashlib.md5(), 0, 0.25
        with stream, os.fdopen(fd, "wb") as out:
            for block in iter(lambda: stream.read(CHUNK), b""):
                out.write(block)
                digest.update(block)
                done += len(block)
                if total and done / total >= next_report:
                    log.info("download %s: %d / %d bytes (%.0f%%)", name, done, total, 100 * done / total)
                    next_report += 0.25
            if total is not None and done != total:
                raise DownloadError(f"{name} from {source}: got {done} of {total} bytes (connection cut)")
            out.flush()
            os.fsync(out.fileno())
        if digest.hexdigest() != md5:
            raise DownloadError(f"{name} from {source}: md5 {digest.hexdigest()} != expected {md5}")
        os.replace(tmp, target)
    finally:
        tmp.unlink(missing_ok=True)


def download_dataset(raw_dir: Path, mirror: str | None = None, attempts: int = 3,
                     backoff_s: float = 1.0) -> dict[str, Path]:
    """Make raw_dir hold the four files with the expected md5; fetch only those missing or corrupt."""
    log = step_logger()
    raw_dir = Path(raw_dir)
    raw_dir.mkdir(parents=True, exist_ok=True)
    for stale in raw_dir.glob(".*.part"):  # left by a run that was killed mid-download
        stale.unlink(missing_ok=True)
    checksums = expected_checksums()
    chosen = sources(mirror)
    paths = {}
    for name, md5 in checksums.items():
        target = raw_dir / name
        paths[name] = target
        if target.exists() and md5_of(target) == md5:
            log.info("download %s: already present, md5 verified", name)
            continue
        errors = []
        for attempt in range(1, attempts + 1):
            for source in chosen:
                try:
                    fetch_one(source, name, md5, target)
                    log.info("download %s: done from %s (attempt %d)", name, source, attempt)
                    break
                except (OSError, http.client.HTTPException, DownloadError, ValueError) as error:
                    errors.append(f"attempt {attempt}, {source}: {error}")
                    log.warning("download %s failed: %s", name, errors[-1])
            else:
                if attempt < attempts:
                    time.sleep(backoff_s * 2 ** (attempt - 1))
                continue
            break
        else:
            hint = (f"Set {MIRROR_ENV} to a directory holding the four .gz files (for example "
                    f"../shared/data/fashion-mnist) or to a base URL that serves them.")
            raise DownloadError(f"Could not get {name} with md5 {md5} from {', '.join(chosen)}. "
                                + hint + " Errors: " + " | ".join(errors[-len(chosen):]))
    return paths


@task(name="download", retries=1, retry_delay_seconds=5, cache_policy=NO_CACHE)
def download_task(raw_dir: Path, mirror: str | None = None) -> dict[str, Path]:
    return download_dataset(raw_dir, mirror)


