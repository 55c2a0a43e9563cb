"""The item catalogue (SQLite): one row per indexed item, with its pixels (the network's input), its
display copy (photos) and its metadata, so any flow can re-index or retrain on the whole catalogue
without going back to the original files.

Rows are written under the writer lock *before* the release that contains them is published, tagged
with that release's id. `forget_unpublished` (run by every writer at start) deletes rows whose
release never made it into releases/, so a crash between the two leaves nothing behind.

Item ids are never reused: the next free id is the larger of the highest catalogued id + 1 and a
floor kept in the `meta` table, which a writer raises to the live release's `next_item_id` (so a
catalogue rebuilt from the live release continues above every id any release ever gave out).
"""

from __future__ import annotations

import json
import sqlite3
from contextlib import closing, contextmanager
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Iterable, Iterator

import numpy as np

from storage.dataset import DatasetDescription
from storage.errors import UserError
from storage.images import content_hash, input_from_display
from storage.lock import processes_holding

SCHEMA = """
CREATE TABLE IF NOT EXISTS items (
    item_id      INTEGER PRIMARY KEY,
    content_hash TEXT    NOT NULL,
    label        INTEGER NOT NULL,          -- -1 = unlabelled
    source       TEXT    NOT NULL,          -- DATASET_SOURCE | DROP_SOURCE
    path         TEXT    NOT NULL,          -- image file (relative to the data home) or dataset reference
    pixels       BLOB    NOT NULL,          -- the dataset's pixel_shape, uint8, normalised (storage.dataset)
    release_id   TEXT    NOT NULL,          -- the release that first indexed it
    added_at     TEXT    NOT NULL,
    display      BLOB    NOT NULL DEFAULT x'',  -- JPEG display copy (photos); empty: the pixels are shown
    metadata     TEXT    NOT NULL DEFAULT ''    -- JSON object (sku, title, url...), or empty
);
CREATE INDEX IF NOT EXISTS items_hash ON items(content_hash);
CREATE INDEX IF NOT EXISTS items_release ON items(release_id);
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value INTEGER NOT NULL);
"""
NEXT_ITEM_ID = "next_item_id"
DATASET_SOURCE = "fashion-mnist-train"  # catalogue source of the built-in dataset's training images
FOLDER_SOURCE = "folder"  # catalogue source of a labelled folder's images (trained on, evaluation's index)
HELD_OUT_SOURCE = "folder-held-out"  # a folder's held-out images: indexed, never trained on (the queries)
DROP_SOURCE = "drop"  # catalogue source of items added through the drop folder
ADDED_COLUMNS = {"display": "BLOB NOT NULL DEFAULT x''", "metadata": "TEXT NOT NULL DEFAULT ''"}  # since "own images"
DEFAULT_BUSY_TIMEOUT_S = 60.0


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


def _connect(path: Path, timeout_s: float) -> sqlite3.Connection:
    connection = sqlite3.connect(path, timeout=timeout_s)
    try:
        connection.execute("PRAGMA journal_mode=WAL")
        connection.execute("PRAGMA synchronous=FULL")
        connection.executescript(SCHEMA)
        present = {row[1] for row in connection.execute("PRAGMA table_info(items)")}
        for column, definition in ADDED_COLUMNS.items():  # a catalogue made before these columns existed
            if column not in present:
                connection.execute(f"ALTER TABLE items ADD COLUMN {column} {definition}")
    except BaseException:
        connection.close()  # e.g. a full disk: no open file left behind on it
        raise
    return connection


class Catalog:
    """The catalogue at `path`. Loading items needs `dataset` (the one the flow works with): it says
    their pixel shape, and how to re-derive an item's input from its display copy when the catalogue
    holds it at another side (the run that changes --image-size stores the new inputs once it publishes)."""

    def __init__(self, path: Path, dataset: DatasetDescription | None = None,
                 busy_timeout_s: float = DEFAULT_BUSY_TIMEOUT_S):
        self.path = Path(path)
        self.dataset = dataset
        self.busy_timeout_s = busy_timeout_s

    @contextmanager
    def _open(self) -> Iterator[sqlite3.Connection]:
        """A connection; "locked" and "not a database" become one line that says who and what to do."""
        try:
            with closing(_connect(self.path, self.busy_timeout_s)) as db:
                yield db
        except sqlite3.OperationalError as error:
            if "locked" not in str(error) and "busy" not in str(error):
                raise  # e.g. "database or disk is full": the writer session says what to do
            holders = "; ".join(processes_holding(self.path)) or "no process of this machine (another machine?)"
            raise CatalogError(
                f"The catalogue {self.path} stayed locked for {self.busy_timeout_s:g} s; it is open in: "
                f"{holders}. End the process that holds a transaction on it (for example an open sqlite3 shell) "
                "and run again. Nothing was changed by this run."
            ) from None
        except sqlite3.DatabaseError as error:
            raise CatalogError(
                f"The catalogue {self.path} is damaged ({error}). Move it aside (mv {self.path} "
                f"{self.path}.damaged) and run again: the next run rebuilds it from the live release."
            ) from None

    def count(self) -> int:
        with self._open() as db:
            return db.execute("SELECT COUNT(*) FROM items").fetchone()[0]

    def count_source(self, source: str) -> int:
        with self._open() as db:
            return db.execute("SELECT COUNT(*) FROM items WHERE source = ?", (source,)).fetchone()[0]

    def next_item_id(self) -> int:
        """The first id never given out (see the module docstring)."""
        with self._open() as db:
            highest = db.execute("SELECT MAX(item_id) FROM items").fetchone()[0]
            floor = db.execute("SELECT value FROM meta WHERE key = ?", (NEXT_ITEM_ID,)).fetchone()
        next_free = 0 if highest is None else highest + 1
        return next_free if floor is None else max(next_free, floor[0])

    def keep_ids_from(self, next_item_id: int) -> None:
        """Never give out an id below `next_item_id` (the live release's), whatever rows are lost."""
        with self._open() as db, db:
            db.execute("INSERT INTO meta (key, value) VALUES (?, ?) ON CONFLICT(key) DO UPDATE "
                       "SET value = MAX(value, excluded.value)", (NEXT_ITEM_ID, int(next_item_id)))

    def paths_and_hashes(self, release_id: str, path_prefix: str) -> list[tuple[str, str]]:
        """(path, content hash) of the items `release_id` catalogued whose path starts with `path_prefix`."""
        with self._open() as db:
            rows = db.execute("SELECT path, content_hash FROM items WHERE release_id = ?", (release_id,))
            return [(path, digest) for path, digest in rows if path.startswith(path_prefix)]

    def item_ids(self) -> np.ndarray:
        with self._open() as db:
            return np.array([r[0] for r in db.execute("SELECT item_id FROM items")], dtype=np.int64)

    def find_hashes(self, hashes: Iterable[str]) -> dict[str, int]:
        """content hash -> item id, for those hashes already catalogued."""
        wanted = list(set(hashes))
        found: dict[str, int] = {}
        with self._open() as db:
            for start in range(0, len(wanted), 500):
                chunk = wanted[start: start + 500]
                marks = ",".join("?" * len(chunk))
                for item_id, digest in db.execute(
                    f"SELECT item_id, content_hash FROM items WHERE content_hash IN ({marks})", chunk
                ):
                    found.setdefault(digest, item_id)
        return found

    def add(self, items: CatalogItems, release_id: str) -> None:
        """Insert `items` in one transaction, tagged with the release that indexes them; each row's
        content hash is the one normalised pixels get everywhere (storage.images.content_hash)."""
        now = datetime.now(timezone.utc).isoformat(timespec="seconds")
        with self._open() as db, db:
            db.executemany(
                "INSERT INTO items (item_id, content_hash, label, source, path, pixels, release_id, added_at,"
                " display, metadata) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                [(int(item_id), content_hash(pixels, bytes(display)), int(label), str(source), str(path),
                  np.ascontiguousarray(pixels, dtype=np.uint8).tobytes(), release_id, now, bytes(display),
                  str(metadata))
                 for item_id, label, pixels, path, source, display, metadata in zip(
                     items.item_ids, items.labels, items.images, items.paths, items.sources, items.displays,
                     items.metadata)],
            )

    def store_inputs(self, items: CatalogItems) -> int:
        """Keep `items`' network inputs where the catalogue holds them at another size (a run at another
        image side, once its release is published). Returns how many rows changed."""
        size = int(np.prod(items.images.shape[1:]))
        with self._open() as db, db:
            return sum(db.execute("UPDATE items SET pixels = ? WHERE item_id = ? AND length(pixels) != ?",
                                  (np.ascontiguousarray(pixels, dtype=np.uint8).tobytes(), int(item_id), size)).rowcount
                       for item_id, pixels in zip(items.item_ids, items.images))

    def load(self) -> CatalogItems:
        """Every catalogued item, by id."""
        return self._select("", ())

    def _select(self, where: str, params: tuple) -> CatalogItems:
        """Items as stored, with inputs of another size re-derived from their display copies."""
        if self.dataset is None:
            raise ValueError("Catalog needs the dataset to load items")
        shape = self.dataset.pixel_shape
        size = int(np.prod(shape))
        with self._open() as db:
            rows = db.execute(
                f"SELECT item_id, label, pixels, path, source, display, metadata FROM items {where} ORDER BY item_id",
                params).fetchall()

        def pixels(stored: bytes, display: bytes) -> bytes:
            if len(stored) == size or not display:
                return stored
            return input_from_display(display, self.dataset).tobytes()

        return CatalogItems(
            item_ids=np.array([r[0] for r in rows], dtype=np.int64),
            labels=np.array([r[1] for r in rows], dtype=np.int16),
            images=np.frombuffer(b"".join(pixels(r[2], r[5]) for r in rows), dtype=np.uint8).reshape(len(rows), *shape),
            paths=np.array([r[3] for r in rows], dtype=str),
            sources=np.array([r[4] for r in rows], dtype=str),
            displays=object_array([bytes(r[5]) for r in rows]),
            metadata=np.array([r[6] for r in rows], dtype=str),
        )

    def load_labelled_after(self, item_id: int) -> CatalogItems:
        """Items training may use (CatalogItems.trainable) with ids above `item_id`: what a model trained up
        to that id has not seen."""
        return self._select("WHERE label >= 0 AND source != ? AND item_id > ?", (HELD_OUT_SOURCE, int(item_id)))

    def forget_unpublished(self, published_release_ids: set[str]) -> int:
        """Delete rows written for releases that never got published (a crashed run). Returns count."""
        with self._open() as db, db:
            release_ids = [r[0] for r in db.execute("SELECT DISTINCT release_id FROM items")]
            orphans = [rid for rid in release_ids if rid not in published_release_ids]
            deleted = 0
            for rid in orphans:
                deleted += db.execute("DELETE FROM items WHERE release_id = ?", (rid,)).rowcount
        return deleted
