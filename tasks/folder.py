"""folder: a labelled folder of a shop's own photos as the dataset (`python -m flows.pipeline --images DIR`).

Layout: DIR/<class>/<image>, or DIR/train/<class>/<image> with an optional query split of the same
classes in DIR/test/, DIR/validation/ or DIR/val/ (the first that exists). Class names are the folder
names (at least two). JPEG and PNG of any size and mode; nothing in DIR is moved or modified.

- With a query split, its images are the evaluation's queries and nothing else (not indexed).
- Without one, HOLD_OUT_SHARE of each class (seeded, stratified) is held out: the evaluation measures
  them against the rest, and the release then indexes them too (a shop wants every product
  searchable); they are catalogued as HELD_OUT_SOURCE, so no training ever sees them.
- A file that cannot be used (not an image, damaged, too small, another type, a nested folder) is
  skipped with its reason in the run's report, like the drop folder's rejections; duplicates (same
  display copy) are skipped after the first, in sorted path order.
- A class with fewer than MIN_CLASS_IMAGES usable training images stops the run, naming it.
- items.csv in DIR (optional): a header row with `path` (relative to DIR, as written in the layout)
  and any of sku, title, url (other columns are kept too); each row's fields are the item's metadata.
"""

from __future__ import annotations

import csv
import io
import json
import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from prefect import task
from prefect.cache_policies import NO_CACHE

from storage.catalog import FOLDER_SOURCE, HELD_OUT_SOURCE, Catalog, CatalogItems, object_array
from storage.dataset import DatasetDescription
from storage.errors import UserError
from storage.files import escape_name
from storage.images import ImageRejected, NormalisedImage, normalise_file
from storage.runtime import usable_cpus
from tasks.ingest import IMAGE_EXTENSIONS, RejectedFile, rejection_lines, unsupported_type_reason
from tasks.logs import step_logger

QUERY_SPLITS = ("test", "validation", "val")
TRAIN_SPLIT = "train"
METADATA_FILE = "items.csv"
# 10% of each class held out when DIR has no query split: clothing-small's own validation split is that
# share, it would leave 12 queries for its smallest class (skirt, 124 photos), and training keeps 90%
HOLD_OUT_SHARE = 0.10
MIN_CLASS_IMAGES = 2  # multi-similarity needs two images of a class in a batch to have a positive pair


class FolderError(UserError, ValueError):
    """The images folder cannot be used as a dataset; the message says why and what to do."""


@dataclass(frozen=True)
class FolderImage:
    relative: str  # the file's path relative to DIR, in storage.files.escape_name's form
    label: int
    image: NormalisedImage


@dataclass
class FolderDataset:
    """What one read of DIR found."""

    dataset: DatasetDescription
    train: list[FolderImage]  # catalogued and trained on
    queries: list[FolderImage]  # the evaluation's queries
    queries_indexed: bool  # True: held out of the training images, indexed once evaluated
    metadata: dict[str, dict[str, str]] = field(default_factory=dict)  # relative path -> items.csv fields
    rejected: list[RejectedFile] = field(default_factory=list)

    def query_arrays(self) -> tuple[np.ndarray, np.ndarray]:
        return (np.stack([q.image.pixels for q in self.queries]).astype(np.uint8),
                np.array([q.label for q in self.queries], dtype=np.uint8 if self.dataset.num_classes < 256 else np.int32))

    def counts(self) -> dict[str, int]:
        return {"training_images": len(self.train), "query_images": len(self.queries), "skipped": len(self.rejected)}


def _class_folders(root: Path) -> list[str]:
    return sorted(entry.name for entry in os.scandir(root) if entry.is_dir() and not entry.name.startswith("."))


def _listing(root: Path, classes: list[str], rejected: list[RejectedFile], prefix: str) -> list[tuple[str, int]]:
    """(path relative to DIR, label) of every candidate image under root/<class>/, sorted; what is not
    one goes to `rejected` with its reason."""
    found = []
    for label, name in enumerate(classes):
        folder = root / name
        if not folder.is_dir():
            continue
        for entry in sorted(os.scandir(folder), key=lambda e: e.name):
            relative = f"{prefix}{name}/{entry.name}"
            if entry.name.startswith("."):
                continue
            if entry.is_dir():
                rejected.append(RejectedFile(relative, "a folder inside a class folder: put images directly in "
                                                       "<class>/"))
            elif not entry.name.lower().endswith(IMAGE_EXTENSIONS):
                rejected.append(RejectedFile(relative, unsupported_type_reason(entry.name)))
            else:
                found.append((relative, label))
    return found


def _normalise(folder: Path, relative: str, dataset: DatasetDescription) -> NormalisedImage | str:
    """The normalised image, or the reason it cannot be used."""
    try:
        return normalise_file(folder / relative, dataset, with_display=True)
    except ImageRejected as error:
        return str(error)


def _read_metadata(folder: Path) -> dict[str, dict[str, str]]:
    path = folder / METADATA_FILE
    if not path.exists():
        return {}
    try:
        rows = list(csv.DictReader(io.StringIO(path.read_text(encoding="utf-8-sig"))))
    except (UnicodeDecodeError, csv.Error) as error:
        raise FolderError(f"{path} cannot be read as CSV ({error}); fix it or move it out of the folder") from None
    if rows and "path" not in rows[0]:
        raise FolderError(f"{path} has no `path` column; its header must name `path` and any of sku, title, url")
    return {row["path"].strip().lstrip("./"): {key: value.strip() for key, value in row.items()
                                               if key and key != "path" and value and value.strip()}
            for row in rows if row.get("path")}


def read_image_folder(folder: Path, dataset: DatasetDescription, seed: int) -> FolderDataset:
    """Read DIR as `dataset` (whose class names, side and source the pipeline has settled): normalise
    every image, split off the queries and check each class can be trained on."""
    folder = Path(folder)
    splits = [name for name in QUERY_SPLITS if (folder / name).is_dir()]
    train_root = folder / TRAIN_SPLIT if (folder / TRAIN_SPLIT).is_dir() else folder
    prefix = f"{TRAIN_SPLIT}/" if train_root != folder else ""
    classes = list(dataset.class_names)
    rejected: list[RejectedFile] = []
    listed = _listing(train_root, classes, rejected, prefix)
    query_listed = _listing(folder / splits[0], classes, rejected, f"{splits[0]}/") if splits else []
    seen: dict[str, str] = {}
    train = _usable(folder, listed, dataset, rejected, seen)
    queries = _usable(folder, query_listed, dataset, rejected, seen)
    if not splits:
        train, queries = _hold_out(train, seed)
    _check_classes(train, queries, [name if (train_root / name).is_dir() else "" for name in classes], folder)
    return FolderDataset(dataset, train, queries, not splits, _read_metadata(folder), rejected)


def _usable(folder: Path, listed: list[tuple[str, int]], dataset: DatasetDescription,
            rejected: list[RejectedFile], seen: dict[str, str]) -> list[FolderImage]:
    """The listed files normalised (in parallel: PIL decodes without the GIL); those that cannot be
    used, and repeats of a content already `seen`, go to `rejected`."""
    with ThreadPoolExecutor(usable_cpus()) as pool:
        images = list(pool.map(lambda entry: _normalise(folder, entry[0], dataset), listed))
    usable = []
    for (relative, label), image in zip(listed, images):
        if isinstance(image, str):
            rejected.append(RejectedFile(relative, image))
        elif image.content_hash in seen:
            rejected.append(RejectedFile(relative, f"duplicate of {escape_name(seen[image.content_hash])}"))
        else:
            seen[image.content_hash] = relative
            usable.append(FolderImage(escape_name(relative), label, image))
    return usable


def _hold_out(images: list[FolderImage], seed: int) -> tuple[list[FolderImage], list[FolderImage]]:
    """HOLD_OUT_SHARE of each class (at least one image where the class keeps MIN_CLASS_IMAGES), seeded."""
    rng = np.random.default_rng(seed)
    labels = np.array([image.label for image in images])
    held = set()
    for label in np.unique(labels):
        members = np.flatnonzero(labels == label)
        count = min(max(1, round(HOLD_OUT_SHARE * len(members))), len(members) - MIN_CLASS_IMAGES)
        held.update(rng.permutation(members)[:max(count, 0)].tolist())
    return ([image for row, image in enumerate(images) if row not in held],
            [image for row, image in enumerate(images) if row in held])


def _check_classes(train: list[FolderImage], queries: list[FolderImage], classes: list[str], folder: Path) -> None:
    """Every class folder of DIR can be trained on (`classes`: "" for a known class whose folder is gone:
    its catalogued images are still trained on)."""
    counts = np.bincount([image.label for image in train], minlength=len(classes))
    small = [f"{name} ({count})" for name, count in zip(classes, counts) if name and count < MIN_CLASS_IMAGES]
    if small:
        raise FolderError(f"class {', '.join(small)} in {folder} has fewer than {MIN_CLASS_IMAGES} usable training "
                          "images; add images to it or remove its folder, then run again. Nothing was changed.")
    if not queries:
        raise FolderError(f"{folder} gave no query images to evaluate with; add images (or a validation/ split)")


def folder_classes(folder: Path) -> list[str]:
    """The class names DIR defines: its (train/) sub-folders. Raises FolderError when it is no dataset."""
    folder = Path(folder)
    if not folder.is_dir():
        raise FolderError(f"{folder} is not a folder; --images takes a folder of <class>/<image> files")
    root = folder / TRAIN_SPLIT if (folder / TRAIN_SPLIT).is_dir() else folder
    classes = [name for name in _class_folders(root) if root != folder or name not in QUERY_SPLITS]
    if len(classes) < 2:
        raise FolderError(f"{root} has {len(classes)} class folder(s); a dataset needs at least two "
                          "(<class>/<image>, or train/<class>/<image>)")
    return classes


def catalogue_folder(catalog: Catalog, found: FolderDataset, release_id: str) -> int:
    """Add the folder's images the catalogue does not hold yet (by content), training images and, when
    held out, the queries. Returns how many rows were added."""
    chosen = found.train + (found.queries if found.queries_indexed else [])
    known = catalog.find_hashes(image.image.content_hash for image in chosen)
    new = [image for image in chosen if image.image.content_hash not in known]
    if not new:
        return 0
    held_out = {id(image) for image in found.queries}
    start = catalog.next_item_id()
    root = found.dataset.source
    catalog.add(CatalogItems(
        item_ids=np.arange(start, start + len(new), dtype=np.int64),
        labels=np.array([image.label for image in new], dtype=np.int16),
        images=np.stack([image.image.pixels for image in new]).astype(np.uint8),
        paths=np.array([f"{root}/{image.relative}" for image in new], dtype=str),
        sources=np.array([HELD_OUT_SOURCE if id(image) in held_out else FOLDER_SOURCE for image in new], dtype=str),
        displays=object_array([image.image.display for image in new]),
        metadata=np.array([json.dumps(found.metadata[image.relative]) if image.relative in found.metadata else ""
                           for image in new], dtype=str)), release_id)
    return len(new)


def folder_report(found: FolderDataset) -> str:
    """The markdown the pipeline records when it reads a folder: counts, then each skipped file's reason."""
    lines = [f"# Images folder {found.dataset.source}", "", "| | count |", "|---|---|"]
    lines += [f"| {key.replace('_', ' ')} | {value} |" for key, value in found.counts().items()]
    lines += ["", "Classes: " + ", ".join(found.dataset.class_names),
              "", "Queries: " + ("held out of each class (indexed once evaluated)" if found.queries_indexed
                                 else "the folder's query split (not indexed)")]
    if found.rejected:
        lines += ["", "## Skipped", "", *rejection_lines(found.rejected)]
    return "\n".join(lines)


@task(name="read-images-folder", cache_policy=NO_CACHE)
def read_folder_task(folder: Path, dataset: DatasetDescription, seed: int) -> FolderDataset:
    found = read_image_folder(folder, dataset, seed)
    step_logger().info("folder: %s", found.counts())
    return found
