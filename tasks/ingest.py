"""ingest: scan the drop folder (incoming/), validate and deduplicate what users put there, and move
every file it settles to processed/ or rejected/.

Drop-folder policy (the re-index flow and its tests follow exactly this):

- incoming/<class>/<file>.png|.jpg|.jpeg (extension case-insensitive) is a labelled item; <class> is
  read by storage.labels.parse_class_folder (index 0-9, slug such as "ankle-boot", or an alias).
  incoming/<file>.png|.jpg|.jpeg is an unlabelled item (label -1).
- Validation and normalisation go only through storage.images.normalise_image, the function search
  uses, so an item is stored exactly as a query of the same file is searched. A file's size is taken
  with lstat first and at most MAX_FILE_BYTES + 1 bytes of it are read (O_NOFOLLOW).
- Left waiting, untouched (counted as "waiting"; a later run looks again): hidden files and folders
  (name starts with "."; a hidden folder counts as one entry), names ending in .part, .tmp,
  .crdownload or .partial, files modified less than `settle_seconds` ago, and files whose size or
  modification time changed while they were being read (two lstat calls around the read).
- Rejected: moved to rejected/<run id>/<path relative to incoming/> with a sibling
  "<name>.reason.txt" holding a one-line reason; nothing there is ever overwritten (a numeric
  suffix is added on collision). Reasons: normalise_image's own (not an image, damaged, too large,
  flat colour...); symbolic links ("symbolic links are not followed"; the link itself is moved, its
  target is untouched); files in a sub-folder that is not a class name (the reason names the folder
  and the accepted names); anything nested deeper than incoming/<class>/<file>; other extensions
  ("use PNG or JPEG"); duplicates, i.e. the same normalised content (content_hash) as a catalogue
  item or as an earlier file (in sorted path order) of the same run ("duplicate of catalogue item N").
- Accepted files are moved to processed/<release id>/<path relative to incoming/> only after their
  release is published (LATEST moved). A run that dies before leaves them in incoming/, and the next
  run redoes them (a file already catalogued by a published release is then a duplicate).
- Counts are conserved: seen == indexed + rejected + waiting.
- Empty sub-folders are left alone.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from prefect import task
from prefect.cache_policies import NO_CACHE

from storage.atomic import atomic_write_text
from storage.catalog import Catalog, CatalogItems
from storage.home import REASON_SUFFIX
from storage.images import MAX_FILE_BYTES, ImageRejected, normalise_image
from storage.labels import CLASS_SLUGS, UNLABELLED, parse_class_folder
from tasks.logs import step_logger

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg")
PARTIAL_SUFFIXES = (".part", ".tmp", ".crdownload", ".partial")
DROP_SOURCE = "drop"
DEFAULT_SETTLE_SECONDS = 2.0
SYMLINK_REASON = "symbolic links are not followed"


@dataclass(frozen=True)
class AcceptedFile:
    relative: str  # posix path relative to incoming/
    item_id: int
    label: int
    pixels: np.ndarray
    content_hash: str


@dataclass(frozen=True)
class RejectedFile:
    relative: str
    reason: str


@dataclass
class DropScan:
    """What one pass over incoming/ found; nothing has been moved yet."""

    accepted: list[AcceptedFile] = field(default_factory=list)
    rejected: list[RejectedFile] = field(default_factory=list)
    waiting: list[str] = field(default_factory=list)

    def counts(self) -> dict[str, int]:
        indexed, rejected, waiting = len(self.accepted), len(self.rejected), len(self.waiting)
        labelled = sum(1 for item in self.accepted if item.label != UNLABELLED)
        return {"seen": indexed + rejected + waiting, "indexed": indexed, "rejected": rejected,
                "waiting": waiting, "labelled": labelled, "unlabelled": indexed - labelled}

    def catalogue_rows(self, processed: str) -> list[dict]:
        """Catalog.add rows for the accepted files, with the paths they get under `processed`
        (processed/<release id>, relative to the data home)."""
        return [{"item_id": a.item_id, "content_hash": a.content_hash, "label": a.label, "source": DROP_SOURCE,
                 "path": f"{processed}/{a.relative}", "pixels": a.pixels} for a in self.accepted]


def rows_to_items(rows: list[dict]) -> CatalogItems:
    return CatalogItems(
        item_ids=np.array([r["item_id"] for r in rows], dtype=np.int64),
        labels=np.array([r["label"] for r in rows], dtype=np.int16),
        images=np.array([r["pixels"] for r in rows], dtype=np.uint8).reshape(-1, 28, 28),
        paths=np.array([r["path"] for r in rows], dtype=str),
        sources=np.array([r["source"] for r in rows], dtype=str),
    )


def class_folder_reason(folder: str) -> str:
    return (f"folder {folder!r} is not a class name; use incoming/<class>/ with <class> one of "
            f"{', '.join(CLASS_SLUGS)} or its index 0-9 (or put unlabelled images directly in incoming/)")


def _waiting_reason(entry: os.DirEntry, now: float, settle_seconds: float) -> str | None:
    """Why an entry must be left for a later run, or None when it can be handled now."""
    if entry.name.startswith("."):
        return "hidden"
    if entry.name.lower().endswith(PARTIAL_SUFFIXES):
        return "partial download"
    if not entry.is_dir(follow_symlinks=False) and now - entry.stat(follow_symlinks=False).st_mtime < settle_seconds:
        return "modified too recently"
    return None


def _read_settled(path: Path) -> bytes | None:
    """The file's first MAX_FILE_BYTES + 1 bytes, or None if it changed while being read."""
    before = os.lstat(path)
    fd = os.open(path, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0))
    with os.fdopen(fd, "rb") as handle:
        data = handle.read(min(before.st_size, MAX_FILE_BYTES) + 1)
    after = os.lstat(path)
    if (before.st_size, before.st_mtime_ns) != (after.st_size, after.st_mtime_ns):
        return None
    return data


def _walk(incoming: Path, now: float, settle_seconds: float):
    """Yield (relative path, label, rejection reason, waiting reason) per entry, in sorted order:
    exactly one of label (a candidate image) / rejection reason / waiting reason is set."""
    def entries(folder: Path):
        with os.scandir(folder) as found:
            return sorted(found, key=lambda e: e.name)

    def visit(folder: Path, prefix: str, depth: int, label: int | None, folder_reason: str | None):
        for entry in entries(folder):
            relative = f"{prefix}{entry.name}"
            waiting = _waiting_reason(entry, now, settle_seconds)
            if waiting:
                yield relative, None, None, waiting
            elif entry.is_symlink():
                yield relative, None, SYMLINK_REASON, None
            elif entry.is_dir(follow_symlinks=False):
                reason = folder_reason
                child_label = None
                if depth == 0:
                    child_label = parse_class_folder(entry.name)
                    if child_label is None:
                        reason = class_folder_reason(entry.name)
                elif reason is None:
                    reason = (f"nested too deep ({relative}/...): put images in incoming/<class>/ "
                              "or directly in incoming/")
                yield from visit(Path(entry.path), relative + "/", depth + 1, child_label, reason)
            elif folder_reason:
                yield relative, None, folder_reason, None
            elif not entry.is_file(follow_symlinks=False):
                yield relative, None, "not a regular file", None
            elif not entry.name.lower().endswith(IMAGE_EXTENSIONS):
                suffix = Path(entry.name).suffix or "(none)"
                yield relative, None, f"unsupported file type {suffix}: use PNG or JPEG (.png, .jpg, .jpeg)", None
            else:
                yield relative, UNLABELLED if label is None else label, None, None

    yield from visit(incoming, "", 0, None, None)


def scan_drop_folder(incoming: Path, catalog: Catalog, first_item_id: int,
                     settle_seconds: float = DEFAULT_SETTLE_SECONDS) -> DropScan:
    """Classify every entry of incoming/ (see the module docstring); assign item ids from first_item_id."""
    incoming = Path(incoming)
    scan = DropScan()
    if not incoming.is_dir():
        return scan
    candidates = []
    for relative, label, reason, waiting in _walk(incoming, time.time(), settle_seconds):
        if waiting:
            scan.waiting.append(relative)
            continue
        if reason:
            scan.rejected.append(RejectedFile(relative, reason))
            continue
        try:
            data = _read_settled(incoming / relative)
        except FileNotFoundError:  # removed by the user since the walk: no longer ours to count
            continue
        except OSError as error:
            scan.rejected.append(RejectedFile(relative, f"cannot be read ({error.strerror or error})"))
            continue
        if data is None:
            scan.waiting.append(relative)
            continue
        try:
            candidates.append((relative, label, normalise_image(data)))
        except ImageRejected as error:
            scan.rejected.append(RejectedFile(relative, str(error)))
    known = catalog.find_hashes(image.content_hash for _, _, image in candidates)
    next_id = first_item_id
    for relative, label, image in candidates:
        if image.content_hash in known:
            scan.rejected.append(RejectedFile(relative, f"duplicate of catalogue item {known[image.content_hash]}"))
            continue
        known[image.content_hash] = next_id
        scan.accepted.append(AcceptedFile(relative, next_id, label, image.pixels, image.content_hash))
        next_id += 1
    return scan


def _free_destination(target: Path) -> Path:
    """`target`, or `target` with -1, -2... before the extension, whichever (and its reason file) is free."""
    candidate, number = target, 0
    while candidate.exists() or candidate.is_symlink() or reason_path(candidate).exists():
        number += 1
        candidate = target.with_name(f"{target.stem}-{number}{target.suffix}")
    return candidate


def reason_path(file: Path) -> Path:
    return file.with_name(file.name + REASON_SUFFIX)


def move_rejected(incoming: Path, rejected_dir: Path, run_id: str, rejected: list[RejectedFile]) -> None:
    """Move each rejected file (a symlink itself, never its target) beside a reason file."""
    for item in rejected:
        target = _free_destination(Path(rejected_dir) / run_id / item.relative)
        target.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_text(reason_path(target), item.reason.replace("\n", " ") + "\n")
        try:
            os.rename(Path(incoming) / item.relative, target)
        except FileNotFoundError:  # the user took it back meanwhile
            reason_path(target).unlink()


def move_processed(incoming: Path, processed_dir: Path, release_id: str, accepted: list[AcceptedFile]) -> None:
    """Move ingested originals under processed/<release id>/ (call only once the release is live)."""
    for item in accepted:
        target = Path(processed_dir) / release_id / item.relative
        target.parent.mkdir(parents=True, exist_ok=True)
        try:
            os.rename(Path(incoming) / item.relative, target)
        except FileNotFoundError:  # the user took it back meanwhile; its item is indexed all the same
            continue


def has_pending_files(incoming: Path) -> bool:
    """True when incoming/ holds anything but empty folders (a cheap check that needs no lock)."""
    def pending(folder: Path) -> bool:
        with os.scandir(folder) as found:
            return any(entry.is_symlink() or not entry.is_dir() or pending(Path(entry.path)) for entry in found)

    return Path(incoming).is_dir() and pending(Path(incoming))


def rejection_lines(scan: DropScan, limit: int = 50) -> list[str]:
    lines = [f"- `{r.relative}`: {r.reason}" for r in scan.rejected[:limit]]
    if len(scan.rejected) > limit:
        lines.append(f"- ... and {len(scan.rejected) - limit} more (see rejected/)")
    return lines


@task(name="scan-drop-folder", cache_policy=NO_CACHE)
def scan_task(incoming: Path, catalog: Catalog, first_item_id: int, settle_seconds: float) -> DropScan:
    scan = scan_drop_folder(incoming, catalog, first_item_id, settle_seconds)
    step_logger().info("ingest: %s", scan.counts())
    return scan
