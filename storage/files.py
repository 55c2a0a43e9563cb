"""Reading files a user controls, and recording their names, without letting one odd file stop a run.

- `read_regular_file` opens without blocking (O_NONBLOCK: a FIFO swapped in for a photo would block a
  plain open forever while the writer lock is held), checks the type of what it opened (fstat, so a
  swap between a scan and the read is caught too) and reads at most a bounded number of bytes.
- `escape_name` is the one text form of a file name wherever a name is recorded (catalogue, reason
  files, reports, JSON). Linux names are bytes; Python hands the bytes that are not UTF-8 over as
  lone surrogates ("surrogateescape"), which SQLite, JSON and UTF-8 files refuse. The escaped form
  writes each such byte as a backslash escape (\\xff) and doubles real backslashes, so it is plain
  UTF-8 text and `unescape_name` turns it back into the exact name. The files themselves are
  always moved by their real names, so they keep their exact bytes.
"""

from __future__ import annotations

import os
import re
import stat

NAME_MAX_BYTES = 255  # the longest file name (one path component) Linux filesystems accept
_SURROGATE_OR_BACKSLASH = re.compile(r"[\\\udc80-\udcff]")
_ESCAPE = re.compile(r"\\\\|\\x([0-9a-f]{2})")


class NotRegularFileError(OSError):
    """The path is a FIFO, socket, device or directory: not a file whose bytes can be read."""

    def __init__(self, kind: str):
        super().__init__(f"{kind}, not a regular file")
        self.kind = kind


def file_kind(mode: int) -> str:
    for test, kind in ((stat.S_ISDIR, "a directory"), (stat.S_ISFIFO, "a FIFO (named pipe)"),
                       (stat.S_ISSOCK, "a socket"), (stat.S_ISCHR, "a character device"),
                       (stat.S_ISBLK, "a block device"), (stat.S_ISLNK, "a symbolic link")):
        if test(mode):
            return kind
    return "a regular file" if stat.S_ISREG(mode) else "not a regular file"


def read_regular_file(path: str | os.PathLike, max_bytes: int,
                      follow_symlinks: bool = True) -> tuple[bytes, os.stat_result]:
    """At most `max_bytes` bytes of a regular file and its stat taken through the open descriptor.

    Never blocks on open; raises NotRegularFileError for anything but a regular file, OSError as the
    system reports it otherwise (FileNotFoundError, PermissionError, ELOOP for a refused link...)."""
    flags = os.O_RDONLY | os.O_NONBLOCK | (0 if follow_symlinks else os.O_NOFOLLOW)
    fd = os.open(path, flags)
    try:
        status = os.fstat(fd)
        if not stat.S_ISREG(status.st_mode):
            raise NotRegularFileError(file_kind(status.st_mode))
        chunks, left = [], max_bytes
        while left > 0:
            chunk = os.read(fd, min(left, 1 << 20))
            if not chunk:
                break
            chunks.append(chunk)
            left -= len(chunk)
        return b"".join(chunks), status
    finally:
        os.close(fd)


def escape_name(name: str) -> str:
    """The recorded text form of a file name or relative path (see the module docstring)."""
    def escaped(match: re.Match) -> str:
        char = match.group(0)
        return "\\\\" if char == "\\" else f"\\x{ord(char) - 0xDC00:02x}"

    return _SURROGATE_OR_BACKSLASH.sub(escaped, name)


def unescape_name(text: str) -> str:
    """The exact name (as os functions take it) that `escape_name` rendered as `text`."""
    return _ESCAPE.sub(lambda m: "\\" if m.group(1) is None else chr(0xDC00 + int(m.group(1), 16)), text)


def name_bytes(name: str) -> int:
    """Length of a name on disk, in bytes (what NAME_MAX limits)."""
    return len(os.fsencode(name))


def shorten_name(name: str, max_bytes: int) -> str:
    """`name` cut at a character boundary so that it takes at most `max_bytes` bytes on disk."""
    while name and name_bytes(name) > max_bytes:
        name = name[:-1]
    return name
