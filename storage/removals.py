"""Removal marks: which catalogue items were taken down, when and why (python -m flows.remove).

A removed item's catalogue row stays (so `--undo` can bring it back without its original file); its
mark, a row of removals.lance beside catalog.lance, keeps it out of every later release, retrain and
pipeline run (Catalog loads only unmarked items) and makes a re-drop of the same content a rejection
("removed item N"). The marks are a Lance dataset of their own rather than a new column of the
catalogue: existing catalogues keep their schema (no migration), a mark is one tiny append and an
undo one delete, each one atomic commit on a local folder and on s3:// alike, and the marks carry
the item's content hash, so they still hold if the catalogue is rebuilt from the live release.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import pyarrow as pa

from storage.location import lance_storage_options, open_lance

REMOVALS = "removals.lance"  # beside catalog.lance in the data home
SCHEMA = pa.schema([
    ("item_id", pa.int64()),
    ("content_hash", pa.string()),  # storage.images.content_hash, as the catalogue holds it
    ("removed_at", pa.string()),  # ISO time, UTC
    ("reason", pa.string()),  # what the person who removed it said ("" for nothing)
])


@dataclass(frozen=True)
class Removal:
    item_id: int
    content_hash: str
    removed_at: str
    reason: str = ""

    def describe(self) -> str:
        """'removed item N (on DATE: REASON)', as rejections and messages say it."""
        why = f": {self.reason}" if self.reason else ""
        return f"removed item {self.item_id} (on {self.removed_at}{why})"


def now_text() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


class RemovalMarks:
    """The marks at `uri` (a local path or s3://...)."""

    def __init__(self, uri: str | Path):
        self.uri = str(uri)
        self.storage_options = lance_storage_options(self.uri)

    @classmethod
    def beside(cls, catalog_uri: str | Path) -> "RemovalMarks":
        """The marks of the catalogue at `catalog_uri` (its sibling removals.lance)."""
        text = str(catalog_uri).rstrip("/")
        return cls(text.rsplit("/", 1)[0] + "/" + REMOVALS if "/" in text else REMOVALS)

    def _open(self):
        return open_lance(self.uri)

    def load(self) -> dict[int, Removal]:
        """item id -> its mark."""
        dataset = self._open()
        if dataset is None:
            return {}
        rows = dataset.to_table().to_pylist()
        return {int(row["item_id"]): Removal(int(row["item_id"]), row["content_hash"], row["removed_at"], row["reason"])
                for row in rows}

    def item_ids(self) -> np.ndarray:
        return np.array(sorted(self.load()), dtype=np.int64)

    def mark(self, removals: list[Removal]) -> None:
        """Add marks in one commit (items already marked keep their first mark)."""
        import lance

        known = self.load()
        new = [removal for removal in removals if removal.item_id not in known]
        if not new:
            return
        table = pa.table({"item_id": pa.array([r.item_id for r in new], pa.int64()),
                          "content_hash": [r.content_hash for r in new],
                          "removed_at": [r.removed_at for r in new],
                          "reason": [r.reason for r in new]}, schema=SCHEMA)
        lance.write_dataset(table, self.uri, schema=SCHEMA, mode="append" if known or self._open() else "create",
                            storage_options=self.storage_options)

    def unmark(self, item_ids: list[int]) -> None:
        """Lift the marks of `item_ids` in one commit."""
        dataset = self._open()
        if dataset is not None and item_ids:
            dataset.delete(f"item_id IN ({', '.join(str(int(item_id)) for item_id in item_ids)})")

    def cleanup_old_versions(self, older_than) -> None:
        dataset = self._open()
        if dataset is not None:
            dataset.cleanup_old_versions(older_than=older_than, delete_unverified=True)
