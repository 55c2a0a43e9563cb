"""Durable, atomic file writes: a reader sees the old file or the new one, never half of one."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

TEMP_SUFFIX = ".part"  # atomic_write_bytes writes <dir>/.<name>.<random>.part, then renames it to <name>
TEMP_NAME_EXTRA_BYTES = len("..") + 8 + len(TEMP_SUFFIX)  # a temporary name is this much longer (8 random chars)


def fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def fsync_file(path: Path) -> None:
    with open(path, "rb") as handle:
        os.fsync(handle.fileno())


def atomic_write_bytes(path: Path, data: bytes, durable: bool = True) -> None:
    """Write to a temporary file beside `path`, fsync, then os.replace it into place. Not `durable`: no
    fsync, for a copy checked against its checksum before every use (a crash can only cost a download)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=TEMP_SUFFIX, dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            if durable:
                os.fsync(handle.fileno())
        os.replace(tmp_name, path)
    except BaseException:
        Path(tmp_name).unlink(missing_ok=True)
        raise
    if durable:
        fsync_dir(path.parent)


def atomic_write_text(path: Path, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


def leftover_temp_files(folder: Path, name_pattern: str = "*") -> list[Path]:
    """Temporary files of atomic writes under `folder` (recursively) that a killed process never
    renamed into place, for files whose names match `name_pattern`."""
    return sorted(Path(folder).rglob(f".{name_pattern}.*{TEMP_SUFFIX}"))
