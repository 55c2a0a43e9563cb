"""ingest: scan the drop folder (incoming/), validate and deduplicate what users put there, and move
every file it settles to processed/ or rejected/.

Drop-folder policy (the re-index flow and its tests follow exactly this):

- incoming/<class>/<file>.png|.jpg|.jpeg (extension case-insensitive) is a labelled item; <class> is
  read by the live release's dataset (DatasetDescription.class_index: the class's index, its name as a
  slug such as "ankle-boot" or "t-shirt", or an alias). An unknown <class> is rejected with the list
  of names, unless new classes are allowed (`--allow-new-classes`, or `allow_new_classes` in the
  home's dataset.json): then the folder's name becomes a new class, indexed at once and trained on
  by the next retrain. incoming/<file>.png|.jpg|.jpeg is an unlabelled item (label -1).
- Validation and normalisation go only through storage.images.normalise_image with the live
  release's dataset, the function search uses, so an item is stored exactly as a query of the same
  file is searched. A file is opened
  without blocking and without following links, its type checked on the open descriptor (a FIFO
  swapped in after the scan is rejected, never waited on), and at most MAX_FILE_BYTES + 1 bytes read.
- One file never stops the run: whatever goes wrong while reading or normalising it (or listing a
  folder) becomes that file's rejection or leaves it waiting; only a full disk stops the run, before
  anything of the user's is lost.
- Names are recorded (catalogue paths, reasons, reports, results) in storage.files.escape_name's
  form, so a name that is not valid UTF-8 is stored as text; files are moved by their real names.
- Left waiting, untouched (counted as "waiting"; a later run looks again): hidden files and folders
  (name starts with "."; a hidden folder counts as one entry), names ending in .part, .tmp,
  .crdownload or .partial, files modified less than `settle_seconds` ago, and files whose size or
  modification time changed while they were being read (two lstat calls around the read).
- Rejected: moved to rejected/<run id>/<path relative to incoming/> with a sibling
  "<name>.reason.txt" holding a one-line reason; nothing there is ever overwritten (a numeric
  suffix is added on collision). A name too long to take the suffix gets a reason file with a short
  derived name (its first 100 bytes, "-", a hash of the name), listed in the run's report.
  Reasons: normalise_image's own (not an image, damaged, too large, flat colour...); FIFOs and
  other files that are not regular files; symbolic links ("symbolic links are not followed"; the
  link itself is moved, its target is untouched); files in a sub-folder that is not a class name
  (the reason names the folder and the accepted names); anything nested deeper than
  incoming/<class>/<file>; other extensions ("use PNG or JPEG"); duplicates, i.e. the same
  normalised content (content_hash) as a catalogue item or as an earlier file (in sorted path
  order) of the same run ("duplicate of catalogue item N"), or of an item taken down by
  `python -m flows.remove` ("removed item N (on DATE: REASON)") until `--undo N` lifts its mark.
- Accepted files are moved to processed/<release id>/<path relative to incoming/> only after their
  release is published (LATEST moved). A run that stops before its release is complete leaves them in
  incoming/ and the next run redoes them; one that stops after (killed, or a full disk as LATEST
  moves) leaves them for the next writer's session to move into processed/ (storage.session).
- Counts are conserved: seen == indexed + rejected + waiting.
- Empty sub-folders are left alone.
"""

from __future__ import annotations

import hashlib
import os
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from prefect import task
from prefect.cache_policies import NO_CACHE

from storage.atomic import TEMP_NAME_EXTRA_BYTES, atomic_write_text
from storage.catalog import DROP_SOURCE, Catalog, CatalogItems, object_array
from storage.dataset import UNLABELLED, DatasetDescription, slug
from storage.files import (NAME_MAX_BYTES, escape_name, file_kind, name_bytes, read_regular_file,
                           shorten_name)
from storage.home import REASON_SUFFIX
from storage.images import MAX_FILE_BYTES, ImageRejected, NormalisedImage, normalise_image
from storage.removals import Removal
from storage.errors import is_out_of_space
from tasks.logs import step_logger

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg")


def unsupported_type_reason(name: str) -> str:
    """Why a file of another type than IMAGE_EXTENSIONS is not taken (the drop folder and the images folder)."""
    return f"unsupported file type {Path(name).suffix or '(none)'}: use PNG or JPEG (.png, .jpg, .jpeg)"
PARTIAL_SUFFIXES = (".part", ".tmp", ".crdownload", ".partial")
DEFAULT_SETTLE_SECONDS = 2.0
SYMLINK_REASON = "symbolic links are not followed"


@dataclass(frozen=True)
class AcceptedFile:
    relative: str  # posix path relative to incoming/
    item_id: int
    label: int
    image: NormalisedImage


@dataclass(frozen=True)
class RejectedFile:
    relative: str  # the real name, as os functions take it
    reason: str

    @property
    def name(self) -> str:
        """The relative path as recorded (storage.files.escape_name)."""
        return escape_name(self.relative)


@dataclass
class DropScan:
    """What one pass over incoming/ found; nothing has been moved yet."""

    dataset: DatasetDescription | None = None  # the live one, with any new class the drops brought
    accepted: list[AcceptedFile] = field(default_factory=list)
    rejected: list[RejectedFile] = field(default_factory=list)
    waiting: list[str] = field(default_factory=list)

    def counts(self) -> dict[str, int]:
        indexed, rejected, waiting = len(self.accepted), len(self.rejected), len(self.waiting)
        labelled = sum(1 for item in self.accepted if item.label != UNLABELLED)
        return {"seen": indexed + rejected + waiting, "indexed": indexed, "rejected": rejected,
                "waiting": waiting, "labelled": labelled, "unlabelled": indexed - labelled}

    def catalogue_items(self, processed: str) -> CatalogItems:
        """The accepted files as catalogue items, with the paths they get under `processed`
        (processed/<release id>, relative to the data home)."""
        accepted = self.accepted
        return CatalogItems(item_ids=np.array([a.item_id for a in accepted], dtype=np.int64),
                            labels=np.array([a.label for a in accepted], dtype=np.int16),
                            images=np.stack([a.image.pixels for a in accepted]).astype(np.uint8),
                            paths=np.array([f"{processed}/{escape_name(a.relative)}" for a in accepted], dtype=str),
                            sources=np.full(len(accepted), DROP_SOURCE),
                            displays=object_array([a.image.display for a in accepted]))


class DropClasses:
    """Reads a class folder's name as a label of `dataset`; adds it as a new class when allowed."""

    def __init__(self, dataset: DatasetDescription, allow_new: bool):
        self.dataset, self.allow_new = dataset, allow_new

    def label(self, folder: str) -> int | None:
        found = self.dataset.class_index(folder)
        if found is None and self.allow_new and slug(folder) and not folder.strip().isdigit():
            self.dataset = self.dataset.with_classes([folder.strip()])
            found = self.dataset.num_classes - 1
        return found

    def reason(self, folder: str) -> str:
        return (f"folder '{escape_name(folder)}' is not a class name; use incoming/<class>/ with <class> one of "
                f"{', '.join(self.dataset.class_slugs)} or its index 0-{self.dataset.num_classes - 1} (or put "
                "unlabelled images directly in incoming/; --allow-new-classes adds new ones)")


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
    """The file's first MAX_FILE_BYTES + 1 bytes, or None if it changed (or was replaced) while being read."""
    data, read = read_regular_file(path, MAX_FILE_BYTES + 1, follow_symlinks=False)
    now = os.lstat(path)
    if (read.st_ino, read.st_size, read.st_mtime_ns) != (now.st_ino, now.st_size, now.st_mtime_ns):
        return None
    return data


def _kind(entry: os.DirEntry) -> str:
    try:
        return file_kind(entry.stat(follow_symlinks=False).st_mode)
    except OSError:
        return "something else"


def _walk(incoming: Path, now: float, settle_seconds: float, classes: DropClasses):
    """Yield (relative path, label, rejection reason, waiting reason) per entry, in sorted order:
    exactly one of label (a candidate image) / rejection reason / waiting reason is set."""
    def visit(folder: Path, prefix: str, depth: int, label: int | None, folder_reason: str | None):
        try:
            with os.scandir(folder) as found:
                listed = sorted(found, key=lambda e: e.name)
        except (FileNotFoundError, NotADirectoryError):  # moved away by the user since it was listed
            return
        except PermissionError:  # left for a run that may list it; counted, never a failed run
            yield prefix.rstrip("/") or ".", None, None, "folder cannot be listed (permission denied)"
            return
        for entry in listed:
            relative = f"{prefix}{entry.name}"
            try:
                waiting = _waiting_reason(entry, now, settle_seconds)
            except FileNotFoundError:  # removed by the user since the folder was listed
                continue
            if waiting:
                yield relative, None, None, waiting
            elif entry.is_symlink():
                yield relative, None, SYMLINK_REASON, None
            elif entry.is_dir(follow_symlinks=False):
                reason = folder_reason
                child_label = None
                if depth == 0:
                    child_label = classes.label(entry.name)
                    if child_label is None:
                        reason = classes.reason(entry.name)
                elif reason is None:
                    reason = (f"nested too deep ({escape_name(relative)}/...): put images in incoming/<class>/ "
                              "or directly in incoming/")
                yield from visit(Path(entry.path), relative + "/", depth + 1, child_label, reason)
            elif folder_reason:
                yield relative, None, folder_reason, None
            elif not entry.is_file(follow_symlinks=False):
                yield relative, None, f"{_kind(entry)}, not a regular file: drop image files only", None
            elif not entry.name.lower().endswith(IMAGE_EXTENSIONS):
                yield relative, None, unsupported_type_reason(entry.name), None
            else:
                yield relative, UNLABELLED if label is None else label, None, None

    yield from visit(incoming, "", 0, None, None)


def scan_drop_folder(incoming: Path, catalog: Catalog, first_item_id: int, dataset: DatasetDescription,
                     settle_seconds: float = DEFAULT_SETTLE_SECONDS, allow_new_classes: bool = False) -> DropScan:
    """Classify every entry of incoming/ (see the module docstring) as items of `dataset`; assign item
    ids from first_item_id."""
    incoming = Path(incoming)
    scan = DropScan(dataset)
    if not incoming.is_dir():
        return scan
    candidates = []
    classes = DropClasses(dataset, allow_new_classes or dataset.allow_new_classes)
    for relative, label, reason, waiting in _walk(incoming, time.time(), settle_seconds, classes):
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
        except OSError as error:  # a FIFO or device swapped in, no permission...: this file's rejection
            scan.rejected.append(RejectedFile(relative, f"cannot be read ({error.strerror or error})"))
            continue
        if data is None:
            scan.waiting.append(relative)
            continue
        try:
            candidates.append((relative, label, normalise_image(data, dataset, with_display=True)))
        except ImageRejected as error:
            scan.rejected.append(RejectedFile(relative, str(error)))
    known = catalog.find_hashes(image.content_hash for _, _, image in candidates)
    removed = catalog.removals.load() if known else {}
    next_id = first_item_id
    for relative, label, image in candidates:
        if image.content_hash in known:
            scan.rejected.append(RejectedFile(relative, duplicate_reason(known[image.content_hash], removed)))
            continue
        known[image.content_hash] = next_id
        scan.accepted.append(AcceptedFile(relative, next_id, label, image))
        next_id += 1
    scan.dataset = classes.dataset
    return scan


def duplicate_reason(item_id: int, removed: dict[int, Removal]) -> str:
    """Why a drop whose content the catalogue holds as `item_id` is rejected: a duplicate, or an item
    taken down (storage/removals.py), which stays down until its mark is lifted."""
    if item_id in removed:
        return f"{removed[item_id].describe()}; `python -m flows.remove --undo {item_id}` brings it back"
    return f"duplicate of catalogue item {item_id}"


def _numbered(target: Path, number: int) -> Path:
    """`target` with -number before its extension, cut to fit NAME_MAX when the name is long."""
    name = f"{target.stem}-{number}{target.suffix}"
    if name_bytes(name) <= NAME_MAX_BYTES:
        return target.with_name(name)
    tail = f"-{number}"
    return target.with_name(shorten_name(target.name, NAME_MAX_BYTES - len(tail)) + tail)


def _free_destination(target: Path) -> Path:
    """`target`, or `target` numbered -1, -2..., whichever (and its reason file) is free."""
    candidate, number = target, 0
    while candidate.exists() or candidate.is_symlink() or reason_path(candidate).exists():
        number += 1
        candidate = _numbered(target, number)
    return candidate


def reason_path(file: Path) -> Path:
    """<name>.reason.txt beside `file`, or a short derived name when that (or the temporary name it is
    written under) would pass NAME_MAX."""
    name = file.name + REASON_SUFFIX
    if name_bytes(name) + TEMP_NAME_EXTRA_BYTES > NAME_MAX_BYTES:
        digest = hashlib.sha256(os.fsencode(file.name)).hexdigest()[:12]
        name = f"{shorten_name(file.name, 100)}-{digest}{REASON_SUFFIX}"
    return file.with_name(name)


def _remove_empty_parents(folder: Path, stop: Path) -> None:
    """Remove `folder` and its parents up to (not including) `stop` while they are empty."""
    while folder != stop and stop in folder.parents:
        try:
            folder.rmdir()
        except OSError:
            return
        folder = folder.parent


def move_rejected(incoming: Path, rejected_dir: Path, run_id: str, rejected: list[RejectedFile]) -> list[str]:
    """Move each rejected file (a symlink itself, never its target) beside a reason file.

    Returns report lines for what a reader of rejected/ must be told: reason files with a derived name,
    and files that could not be moved (left in incoming/, the next run tries again). A full disk stops
    the moves (StoreFullError upstream); the file being moved stays in incoming/ and no litter is left."""
    notes = []
    run_folder = Path(rejected_dir) / run_id
    for item in rejected:
        target = _free_destination(run_folder / item.relative)
        reason_file = reason_path(target)
        try:
            target.parent.mkdir(parents=True, exist_ok=True)
            atomic_write_text(reason_file, item.reason.replace("\n", " ") + "\n")
            try:
                os.rename(Path(incoming) / item.relative, target)
            except BaseException:
                reason_file.unlink(missing_ok=True)
                raise
        except FileNotFoundError:  # the user took it back meanwhile
            _remove_empty_parents(target.parent, Path(rejected_dir))
            continue
        except OSError as error:
            _remove_empty_parents(target.parent, Path(rejected_dir))
            if is_out_of_space(error):
                raise
            notes.append(f"- `{item.name}` left in incoming/: it could not be moved ({error.strerror or error})")
            continue
        if reason_file.name != target.name + REASON_SUFFIX:
            notes.append(f"- `{item.name}`: its name is too long for a reason file beside it; the reason is in "
                         f"`{escape_name(reason_file.name)}`")
    return notes


def move_processed(incoming: Path, processed_dir: Path, release_id: str, accepted: list[AcceptedFile]) -> None:
    """Move ingested originals under processed/<release id>/ (call only once the release is live)."""
    for item in accepted:
        target = Path(processed_dir) / release_id / item.relative
        try:
            target.parent.mkdir(parents=True, exist_ok=True)
            os.rename(Path(incoming) / item.relative, target)
        except FileNotFoundError:  # the user took it back meanwhile; its item is indexed all the same
            continue


def has_pending_files(incoming: Path) -> bool:
    """True when incoming/ holds anything but empty folders (a cheap check that needs no lock)."""
    def pending(folder: Path) -> bool:
        try:
            with os.scandir(folder) as found:
                return any(entry.is_symlink() or not entry.is_dir() or pending(Path(entry.path)) for entry in found)
        except (FileNotFoundError, NotADirectoryError):  # taken away by the user meanwhile
            return False
        except PermissionError:  # a folder we cannot list: the run rejects or waits on it, never crashes here
            return True

    return Path(incoming).is_dir() and pending(Path(incoming))


def rejection_lines(rejected: list[RejectedFile], limit: int = 50) -> list[str]:
    lines = [f"- `{r.name}`: {r.reason}" for r in rejected[:limit]]
    if len(rejected) > limit:
        lines.append(f"- ... and {len(rejected) - limit} more")
    return lines


def reindex_report(scan: DropScan, release_id: str | None, reason: str, move_notes: list[str]) -> str:
    """The markdown a re-index run records as its artifact: counts, rejections and their reasons, notes."""
    lines = ["# Drop-folder re-index", "", reason, "", "| files | count |", "|---|---|"]
    lines += [f"| {key} | {value} |" for key, value in scan.counts().items()]
    if scan.rejected:
        lines += ["", "## Rejected", "", *rejection_lines(scan.rejected)]
    if move_notes:
        lines += ["", "## Notes on rejected/", "", *move_notes]
    if release_id:
        lines += ["", f"Release: `{release_id}`"]
    return "\n".join(lines)


@task(name="scan-drop-folder", cache_policy=NO_CACHE)
def scan_task(incoming: Path, catalog: Catalog, first_item_id: int, dataset: DatasetDescription,
              settle_seconds: float, allow_new_classes: bool = False) -> DropScan:
    scan = scan_drop_folder(incoming, catalog, first_item_id, dataset, settle_seconds, allow_new_classes)
    step_logger().info("ingest: %s", scan.counts())
    return scan
