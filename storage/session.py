"""One writer session: what every writing flow does before it writes, and how a full disk is reported.

`writer_session` takes the writer lock, undoes what a killed writer left (storage.releases.recover),
opens the live release, checks the catalogue against it (rebuilt from the release when it was lost or
is behind, and never giving out an id the release's manifest says was given out), finishes the moves
to processed/ of a re-index that stopped right after publishing, and turns running out of disk space
anywhere inside into one StoreFullError line that says what to do.
"""

from __future__ import annotations

import logging
import os
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from typing import Iterator

import numpy as np

from storage.catalog import Catalog
from storage.dataset import DatasetDescription, home_dataset
from storage.errors import UserError, is_out_of_space
from storage.files import unescape_name
from storage.home import DataHome
from storage.images import ImageRejected, normalise_file
from storage.lock import writer_lock
from storage.releases import DamagedReleaseError, NoReleaseError, latest_release_id, Recovery, Release, load_release, next_item_id_of, recover



class StoreFullError(UserError, RuntimeError):
    """The data home's filesystem is full; the message says what to do."""


@dataclass
class WriterSession:
    """What a writing flow works with once the session has started."""

    home: DataHome
    catalog: Catalog
    live: Release | None  # None only where the flow allows it (a first pipeline run)
    dataset: DatasetDescription  # what the flow works with: the catalogue loads its items in this shape
    recovery: Recovery = field(default_factory=Recovery)  # what was undone or rebuilt; false when nothing
    live_id: str | None = None  # the live release's id, also when it is damaged (`live` is None then)

    @property
    def next_item_id(self) -> int:
        return self.catalog.next_item_id()


def finish_processed_moves(home: DataHome, catalog: Catalog, live: Release | None) -> int:
    """Move to processed/<live release>/ the dropped files that the live re-index release indexed but
    that are still in incoming/: its writer stopped (killed, disk full) after the release was complete
    and before the moves, and recovery rolled LATEST forward to it. A file is moved only while it
    still has the content that was indexed; otherwise the scan treats it as any other drop."""
    if live is None or live.manifest.get("kind") != "reindex" or not home.has_drop_folder:
        return 0
    prefix = home.relative(home.processed / live.release_id) + "/"
    moved = 0
    for path, digest in catalog.paths_and_hashes(live.release_id, prefix):
        relative = unescape_name(path[len(prefix):])
        source, target = home.incoming / relative, home.processed / live.release_id / relative
        if target.exists() or not source.is_file() or source.is_symlink():
            continue
        try:
            if normalise_file(source, live.dataset, with_display=True).content_hash != digest:
                continue
        except ImageRejected:
            continue
        target.parent.mkdir(parents=True, exist_ok=True)
        os.rename(source, target)
        moved += 1
    return moved


def restore_catalog(catalog: Catalog, live: Release | None) -> int:
    """Catalogue the live release's items that the catalogue lacks (it was deleted, or restored from an
    old backup); keep ids below the release's next_item_id given out. Returns how many rows came back."""
    if live is None:
        return 0
    missing = ~np.isin(live.items.item_ids, catalog.item_ids())
    if missing.any():
        catalog.add(live.items.subset(missing), live.release_id)
    catalog.keep_ids_from(next_item_id_of(live.manifest, live.items))
    return int(missing.sum())


@contextmanager
def writer_session(home: DataHome, holder: str, timeout_s: float | None = None, require_live: bool = True,
                   log: logging.Logger | logging.LoggerAdapter | None = None,
                   dataset: DatasetDescription | None = None) -> Iterator[WriterSession]:
    """The writer lock, recovery (told to `log` as a warning when anything was needed), the live release
    (NoReleaseError if `require_live` and none; a damaged one is refused the same way, or taken as none
    when not `require_live`: a pipeline run or a rollback replaces it) and a catalogue that covers it, loading items as
    `dataset` (default: the live release's, else the home's) says; a full disk inside becomes
    StoreFullError."""
    with writer_lock(home, timeout_s=timeout_s, holder=holder):
        try:
            recovered = recover(home)
            try:
                live = load_release(home)
            except (NoReleaseError, DamagedReleaseError) as error:
                if require_live:
                    raise
                if isinstance(error, DamagedReleaseError) and log is not None:  # a full run or a rollback replaces it
                    log.warning("not building on the live release: %s", error)
                live = None
            dataset = dataset or (live.dataset if live else home_dataset(home))
            catalog = Catalog(home.catalog, dataset)
            restored = restore_catalog(catalog, live)
            moved = finish_processed_moves(home, catalog, live)
            recovery = replace(recovered, restored_catalog_rows=restored, moved_to_processed=moved)
            if recovery and log is not None:
                log.warning("recovered from an interrupted run: %s", recovery)
            yield WriterSession(home, catalog, live, dataset, recovery, latest_release_id(home))
        except Exception as error:
            if is_out_of_space(error):
                raise StoreFullError(
                    f"The data home {home.root} is out of disk space ({error}). Free some space and run again: "
                    "nothing is lost (the live release still answers, files not yet handled are still in "
                    "incoming/, and the next run removes what this one left half-written)."
                ) from None
            raise
