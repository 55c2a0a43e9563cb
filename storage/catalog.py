"""The item catalogue: one row per indexed item, with its pixels (the network's input), its display
copy (photos) and its metadata, so any flow can re-index or retrain on the whole catalogue without
going back to the original files. It is a Lance dataset (catalog.lance in the data home): the same
code on a local folder and on s3://, each write one atomic commit of append-only fragments.

Rows are written under the writer lock *before* the release that contains them is published, tagged
with that release's id. `forget_unpublished` (run by every writer at start) deletes rows whose
release never got published, so a crash between the two leaves nothing behind; a write killed before
its commit leaves only data files no version refers to.

Item ids are never reused: the next free id is the larger of the highest catalogued id + 1 and a
floor that every writer raises, at the start of its session, to the live release's `next_item_id`
(so a catalogue rebuilt from the live release continues above every id any release ever gave out).

Removed items (python -m flows.remove) keep their rows; their marks (storage/removals.py, beside the
catalogue) keep them out of every load, so no later run indexes or trains on them.

A catalogue made by earlier versions (catalog.sqlite) is not read: the first writer rebuilds
catalog.lance from the live release, which holds every item of every published release.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Iterable

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from storage.dataset import DatasetDescription
from storage.errors import UserError, is_out_of_space
from storage.images import content_hash, input_from_display
from storage.location import lance_storage_options, open_lance
from storage.removals import RemovalMarks

SCHEMA = pa.schema([
    ("item_id", pa.int64()),
    ("content_hash", pa.string()),
    ("label", pa.int16()),  # -1 = unlabelled
    ("source", pa.string()),  # DATASET_SOURCE | FOLDER_SOURCE | HELD_OUT_SOURCE | DROP_SOURCE
    ("path", pa.string()),  # image file (relative to the data home) or dataset reference
    ("pixels", pa.large_binary()),  # the dataset's pixel_shape, uint8, normalised (storage.dataset)
    ("release_id", pa.string()),  # the release that first indexed it
    ("added_at", pa.string()),
    ("display", pa.large_binary()),  # JPEG display copy (photos); empty: the pixels are shown
    ("metadata", pa.string()),  # JSON object (sku, title, url...), or empty
])
DATASET_SOURCE = "fashion-mnist-train"  # catalogue source of the built-in dataset's training images
FOLDER_SOURCE = "folder"  # catalogue source of a labelled folder's images (trained on, evaluation's index)
HELD_OUT_SOURCE = "folder-held-out"  # a folder's held-out images: indexed, never trained on (the queries)
DROP_SOURCE = "drop"  # catalogue source of items added through the drop folder
# appends leave one fragment each (a re-index costs what its new items cost); past this many the
# catalogue is compacted into few files, and versions older than CLEANUP_AFTER are then deleted
COMPACT_FRAGMENTS = 32
CLEANUP_AFTER = timedelta(hours=1)


@dataclass
class CatalogItems:
    """A column-wise batch of catalogue items (what a release segment holds too)."""

    item_ids: np.ndarray  # int64 (n,)
    labels: np.ndarray  # int16 (n,)
    images: np.ndarray  # uint8 (n, *pixel_shape)
    paths: np.ndarray  # str (n,)
    sources: np.ndarray  # str (n,)
    displays: np.ndarray | None = None  # object (n,) of bytes: display copies (JPEG), b"" where the pixels are shown
    metadata: np.ndarray | None = None  # str (n,): a JSON object per item, "" for none

    COLUMNS = ("item_ids", "labels", "images", "paths", "sources", "displays", "metadata")

    def __post_init__(self) -> None:
        if self.displays is None:
            self.displays = object_array([b""] * len(self.item_ids))
        if self.metadata is None:
            self.metadata = np.full(len(self.item_ids), "", dtype="<U1")

    def __len__(self) -> int:
        return len(self.item_ids)

    def subset(self, rows: np.ndarray) -> "CatalogItems":
        """The items at `rows` (indices or a boolean mask)."""
        return CatalogItems(*(getattr(self, column)[rows] for column in self.COLUMNS))

    @classmethod
    def concatenate(cls, parts: list["CatalogItems"]) -> "CatalogItems":
        return cls(*(np.concatenate([getattr(part, column) for part in parts]) for column in cls.COLUMNS))

    @property
    def trainable(self) -> np.ndarray:
        """Mask of the items training may use: labelled, and not a folder's held-out evaluation query."""
        return (self.labels >= 0) & (self.sources != HELD_OUT_SOURCE)

    @property
    def evaluation_index(self) -> np.ndarray:
        """Mask of the items an evaluation searches: all but the held-out queries themselves."""
        return self.sources != HELD_OUT_SOURCE

    def item_metadata(self, row: int) -> dict:
        """The metadata of the item at `row` (sku, title, url... as the dataset gave them)."""
        text = str(self.metadata[row])
        return json.loads(text) if text else {}


def object_array(values: list) -> np.ndarray:
    """A 1-D object array of `values` as they are (np.array would unpack bytes-like buffers)."""
    array = np.empty(len(values), dtype=object)
    for row, value in enumerate(values):
        array[row] = value
    return array


class CatalogError(UserError, RuntimeError):
    """The catalogue cannot be used right now; the message says why and what to do."""


def sql_text(value: str) -> str:
    """`value` as a quoted SQL string literal for a Lance filter."""
    return "'" + str(value).replace("'", "''") + "'"


def binary_rows(column: pa.ChunkedArray | pa.Array) -> list[bytes]:
    """The values of a binary column as bytes."""
    return [value or b"" for value in column.to_pylist()]


def fixed_size_rows(column: pa.ChunkedArray, size: int) -> np.ndarray | None:
    """A binary column whose values all have `size` bytes as one (n, size) uint8 array without a copy
    per row; None when some value has another size."""
    column = column.combine_chunks() if isinstance(column, pa.ChunkedArray) else column
    offsets = np.frombuffer(column.buffers()[1], dtype=np.int64)[column.offset: column.offset + len(column) + 1]
    if len(column) and not np.all(np.diff(offsets) == size):
        return None
    data = np.frombuffer(column.buffers()[2], dtype=np.uint8) if len(column) else np.zeros(0, np.uint8)
    return data[offsets[0]: offsets[0] + size * len(column)].reshape(len(column), size)


class Catalog:
    """The catalogue at `uri` (a local path or s3://...). Loading items needs `dataset` (the one the flow
    works with): it says their pixel shape, and how to re-derive an item's input from its display copy
    when the catalogue holds it at another side (the run that changes --image-size stores the new
    inputs once it publishes)."""

    def __init__(self, uri: str | Path, dataset: DatasetDescription | None = None):
        self.uri = str(uri)
        self.dataset = dataset
        self.storage_options = lance_storage_options(self.uri)
        self.removals = RemovalMarks.beside(self.uri)  # items taken down: never loaded (storage/removals.py)
        self._floor = 0  # see keep_ids_from

    def _open(self):
        """The Lance dataset, or None when nothing was catalogued yet; damage becomes one line."""
        try:
            return open_lance(self.uri)
        except (ValueError, OSError) as error:
            if is_out_of_space(error):
                raise  # the writer session says what to do
            raise CatalogError(
                f"The catalogue {self.uri} is damaged ({str(error).splitlines()[0][:200]}). Move it aside "
                f"(mv {self.uri} {self.uri}.damaged) and run again: the next run rebuilds it from the live release."
            ) from None

    def _column(self, name: str, where: str | None = None) -> pa.ChunkedArray:
        dataset = self._open()
        if dataset is None:
            return pa.chunked_array([], SCHEMA.field(name).type)
        return dataset.to_table(columns=[name], filter=where).column(name)

    def count(self) -> int:
        dataset = self._open()
        return 0 if dataset is None else dataset.count_rows()

    def count_source(self, source: str) -> int:
        dataset = self._open()
        return 0 if dataset is None else dataset.count_rows(filter=f"source = {sql_text(source)}")

    def next_item_id(self) -> int:
        """The first id never given out (see the module docstring)."""
        ids = self.item_ids()
        return max(int(ids.max()) + 1 if len(ids) else 0, self._floor)

    def keep_ids_from(self, next_item_id: int) -> None:
        """Never give out an id below `next_item_id` (the live release's), whatever rows are lost."""
        self._floor = max(self._floor, int(next_item_id))

    def paths_and_hashes(self, release_id: str, path_prefix: str) -> list[tuple[str, str]]:
        """(path, content hash) of the items `release_id` catalogued whose path starts with `path_prefix`."""
        dataset = self._open()
        if dataset is None:
            return []
        table = dataset.to_table(columns=["path", "content_hash"], filter=f"release_id = {sql_text(release_id)}")
        return [(path, digest) for path, digest in zip(table.column("path").to_pylist(),
                                                       table.column("content_hash").to_pylist())
                if path.startswith(path_prefix)]

    def item_ids(self) -> np.ndarray:
        return self._column("item_id").to_numpy().astype(np.int64)

    def identities(self) -> dict[int, tuple[str, str]]:
        """item id -> (path, content hash) of every row, removed ones too (what names an item)."""
        dataset = self._open()
        if dataset is None:
            return {}
        table = dataset.to_table(columns=["item_id", "path", "content_hash"])
        return {int(item_id): (path, digest) for item_id, path, digest in zip(
            table.column("item_id").to_pylist(), table.column("path").to_pylist(),
            table.column("content_hash").to_pylist())}

    def find_hashes(self, hashes: Iterable[str]) -> dict[str, int]:
        """content hash -> item id (the lowest), for those hashes already catalogued or removed (a
        removal mark keeps its item's hash, whatever happens to the row)."""
        wanted = set(hashes)
        dataset = self._open()
        if not wanted or dataset is None:
            return {}
        table = dataset.to_table(columns=["item_id", "content_hash"])
        marks = [(removal.item_id, removal.content_hash) for removal in self.removals.load().values()]
        found: dict[str, int] = {}
        for item_id, digest in sorted([*zip(table.column("item_id").to_pylist(), table.column("content_hash").to_pylist()),
                                       *marks]):
            if digest in wanted:
                found.setdefault(digest, item_id)
        return found

    def add(self, items: CatalogItems, release_id: str) -> None:
        """Append `items` in one commit, tagged with the release that indexes them; each row's content
        hash is the one normalised pixels get everywhere (storage.images.content_hash)."""
        if not len(items):
            return
        now = datetime.now(timezone.utc).isoformat(timespec="seconds")
        pixels = [np.ascontiguousarray(image, dtype=np.uint8).tobytes() for image in items.images]
        displays = [bytes(display) for display in items.displays]
        table = pa.table({
            "item_id": pa.array(items.item_ids, pa.int64()),
            "content_hash": [content_hash(image, display) for image, display in zip(items.images, displays)],
            "label": pa.array(items.labels, pa.int16()),
            "source": [str(source) for source in items.sources],
            "path": [str(path) for path in items.paths],
            "pixels": pa.array(pixels, pa.large_binary()),
            "release_id": [release_id] * len(items),
            "added_at": [now] * len(items),
            "display": pa.array(displays, pa.large_binary()),
            "metadata": [str(text) for text in items.metadata],
        }, schema=SCHEMA)
        self._write(table)

    def _write(self, table: pa.Table) -> None:
        import lance

        exists = self._open() is not None
        dataset = lance.write_dataset(table, self.uri, schema=SCHEMA, mode="append" if exists else "create",
                                      storage_options=self.storage_options)
        if len(dataset.get_fragments()) > COMPACT_FRAGMENTS:
            dataset.optimize.compact_files()
            dataset.cleanup_old_versions(older_than=CLEANUP_AFTER)

    def cleanup_old_versions(self, older_than: timedelta) -> None:
        """Delete the catalogue's and the removal marks' Lance versions older than `older_than`, and data
        files no version refers to (a killed write's: call it under the writer lock, no write runs)."""
        dataset = self._open()
        if dataset is not None:
            dataset.cleanup_old_versions(older_than=older_than, delete_unverified=True)
        self.removals.cleanup_old_versions(older_than)

    def store_inputs(self, items: CatalogItems) -> int:
        """Keep `items`' network inputs where the catalogue holds them at another size (a run at another
        image side, once its release is published), in one commit. Returns how many rows changed."""
        dataset = self._open()
        if dataset is None or not len(items):
            return 0
        size = int(np.prod(items.images.shape[1:]))
        table = dataset.to_table()
        stored = binary_rows(table.column("pixels"))
        new = dict(zip(items.item_ids.tolist(), items.images))
        changed = [row for row, (item_id, pixels) in enumerate(zip(table.column("item_id").to_pylist(), stored))
                   if item_id in new and len(pixels) != size]
        if not changed:
            return 0
        rows = table.take(changed)
        pixels = [np.ascontiguousarray(new[item_id], np.uint8).tobytes() for item_id in rows.column("item_id").to_pylist()]
        rows = rows.set_column(SCHEMA.get_field_index("pixels"), SCHEMA.field("pixels"), pa.array(pixels, pa.large_binary()))
        dataset.merge_insert("item_id").when_matched_update_all().execute(rows)
        return len(changed)

    def load(self) -> CatalogItems:
        """Every catalogued item but the removed ones, by id."""
        return self._select(None)

    def _select(self, where: str | None) -> CatalogItems:
        """Items as stored, by id, with inputs of another size re-derived from their display copies."""
        if self.dataset is None:
            raise ValueError("Catalog needs the dataset to load items")
        shape = self.dataset.pixel_shape
        size = int(np.prod(shape))
        dataset = self._open()
        columns = ["item_id", "label", "pixels", "path", "source", "display", "metadata"]
        table = (SCHEMA.empty_table().select(columns) if dataset is None else
                 dataset.to_table(columns=columns, filter=where).sort_by("item_id"))
        removed = self.removals.item_ids()
        if len(removed):
            table = table.filter(pc.invert(pc.is_in(table.column("item_id"), value_set=pa.array(removed, pa.int64()))))
        displays = binary_rows(table.column("display"))
        images = fixed_size_rows(table.column("pixels"), size)
        if images is None:
            images = np.frombuffer(b"".join(
                stored if len(stored) == size or not display else input_from_display(display, self.dataset).tobytes()
                for stored, display in zip(binary_rows(table.column("pixels")), displays)), dtype=np.uint8)
        return CatalogItems(
            item_ids=table.column("item_id").to_numpy().astype(np.int64),
            labels=table.column("label").to_numpy().astype(np.int16),
            images=np.asarray(images).reshape(len(table), *shape),
            paths=np.array(table.column("path").to_pylist(), dtype=str),
            sources=np.array(table.column("source").to_pylist(), dtype=str),
            displays=object_array(displays),
            metadata=np.array(table.column("metadata").to_pylist(), dtype=str),
        )

    def load_labelled_after(self, item_id: int) -> CatalogItems:
        """Items training may use (CatalogItems.trainable) with ids above `item_id`: what a model trained up
        to that id has not seen."""
        return self._select(f"label >= 0 AND source != {sql_text(HELD_OUT_SOURCE)} AND item_id > {int(item_id)}")

    def forget_unpublished(self, published_release_ids: set[str], retired_through: str = "") -> int:
        """Delete rows written for releases that never got published (a crashed run), in one commit;
        rows of releases up to `retired_through` were published, then deleted by a clean-up: kept.
        Returns how many."""
        dataset = self._open()
        if dataset is None:
            return 0
        release_ids = dataset.to_table(columns=["release_id"]).column("release_id").to_numpy(zero_copy_only=False)
        orphans = sorted(rid for rid in set(release_ids.tolist()) - set(published_release_ids) if rid > retired_through)
        if not orphans:
            return 0
        dataset.delete(f"release_id IN ({', '.join(sql_text(rid) for rid in orphans)})")
        return int(np.isin(release_ids, orphans).sum())
