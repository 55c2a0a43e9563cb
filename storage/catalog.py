"""The item catalogue (SQLite): one row per indexed item, with its pixels, so any flow can re-index
or retrain on the whole catalogue without going back to the original files.

Rows are written under the writer lock *before* the release that contains them is published, tagged
with that release's id. `forget_unpublished` (run by every writer at start) deletes rows whose
release never made it into releases/, so a crash between the two leaves nothing behind.
"""

from __future__ import annotations

import sqlite3
from contextlib import closing
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Iterable

import numpy as np

from storage.images import IMAGE_SIDE

SCHEMA = """
CREATE TABLE IF NOT EXISTS items (
    item_id      INTEGER PRIMARY KEY,
    content_hash TEXT    NOT NULL,
    label        INTEGER NOT NULL,          -- -1 = unlabelled
    source       TEXT    NOT NULL,          -- fashion-mnist-train | drop
    path         TEXT    NOT NULL,          -- image file (relative to the data home) or dataset reference
    pixels       BLOB    NOT NULL,          -- 28*28 uint8, normalised
    release_id   TEXT    NOT NULL,          -- the release that first indexed it
    added_at     TEXT    NOT NULL
);
CREATE INDEX IF NOT EXISTS items_hash ON items(content_hash);
CREATE INDEX IF NOT EXISTS items_release ON items(release_id);
"""


@dataclass
class CatalogItems:
    """A column-wise batch of catalogue items (what a release segment holds too)."""

    item_ids: np.ndarray  # int64 (n,)
    labels: np.ndarray  # int16 (n,)
    images: np.ndarray  # uint8 (n, 28, 28)
    paths: np.ndarray  # str (n,)
    sources: np.ndarray  # str (n,)

    def __len__(self) -> int:
        return len(self.item_ids)


def _connect(path: Path) -> sqlite3.Connection:
    connection = sqlite3.connect(path, timeout=60)
    connection.execute("PRAGMA journal_mode=WAL")
    connection.execute("PRAGMA synchronous=FULL")
    connection.executescript(SCHEMA)
    return connection


class Catalog:
    def __init__(self, path: Path):
        self.path = Path(path)

    def count(self) -> int:
        with closing(_connect(self.path)) as db:
            return db.execute("SELECT COUNT(*) FROM items").fetchone()[0]

    def count_source(self, source: str) -> int:
        with closing(_connect(self.path)) as db:
            return db.execute("SELECT COUNT(*) FROM items WHERE source = ?", (source,)).fetchone()[0]

    def next_item_id(self) -> int:
        with closing(_connect(self.path)) as db:
            return (db.execute("SELECT MAX(item_id) FROM items").fetchone()[0] or -1) + 1

    def find_hashes(self, hashes: Iterable[str]) -> dict[str, int]:
        """content hash -> item id, for those hashes already catalogued."""
        wanted = list(set(hashes))
        found: dict[str, int] = {}
        with closing(_connect(self.path)) as db:
            for start in range(0, len(wanted), 500):
                chunk = wanted[start: start + 500]
                marks = ",".join("?" * len(chunk))
                for item_id, digest in db.execute(
                    f"SELECT item_id, content_hash FROM items WHERE content_hash IN ({marks})", chunk
                ):
                    found.setdefault(digest, item_id)
        return found

    def add(self, rows: list[dict], release_id: str) -> None:
        """Insert rows (item_id, content_hash, label, source, path, pixels) in one transaction."""
        now = datetime.now(timezone.utc).isoformat(timespec="seconds")
        with closing(_connect(self.path)) as db, db:
            db.executemany(
                "INSERT INTO items (item_id, content_hash, label, source, path, pixels, release_id, added_at)"
                " VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                [
                    (int(r["item_id"]), r["content_hash"], int(r["label"]), r["source"], r["path"],
                     np.ascontiguousarray(r["pixels"], dtype=np.uint8).tobytes(), release_id, now)
                    for r in rows
                ],
            )

    def load(self, where: str = "", params: tuple = ()) -> CatalogItems:
        with closing(_connect(self.path)) as db:
            rows = db.execute(
                f"SELECT item_id, label, pixels, path, source FROM items {where} ORDER BY item_id", params
            ).fetchall()
        return CatalogItems(
            item_ids=np.array([r[0] for r in rows], dtype=np.int64),
            labels=np.array([r[1] for r in rows], dtype=np.int16),
            images=np.frombuffer(b"".join(r[2] for r in rows), dtype=np.uint8).reshape(
                len(rows), IMAGE_SIDE, IMAGE_SIDE
            ),
            paths=np.array([r[3] for r in rows], dtype=str),
            sources=np.array([r[4] for r in rows], dtype=str),
        )

    def load_labelled_after(self, item_id: int) -> CatalogItems:
        """Labelled items with ids above `item_id`: what a model trained up to that id has not seen."""
        return self.load("WHERE label >= 0 AND item_id > ?", (int(item_id),))

    def forget_unpublished(self, published_release_ids: set[str]) -> int:
        """Delete rows written for releases that never got published (a crashed run). Returns count."""
        with closing(_connect(self.path)) as db, db:
            release_ids = [r[0] for r in db.execute("SELECT DISTINCT release_id FROM items")]
            orphans = [rid for rid in release_ids if rid not in published_release_ids]
            deleted = 0
            for rid in orphans:
                deleted += db.execute("DELETE FROM items WHERE release_id = ?", (rid,)).rowcount
        return deleted
