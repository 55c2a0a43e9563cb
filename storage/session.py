"""One writer session: what every writing flow does before it writes, and how a full disk is reported.

`writer_session` takes the writer lock, undoes what a killed writer left (storage.releases.recover),
opens the live release, checks the catalogue against it (rebuilt from the release when it was lost or
is behind, and never giving out an id the release's manifest says was given out) and turns running
out of disk space anywhere inside into one StoreFullError line that says what to do.
"""

from __future__ import annotations

import errno
import sqlite3
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, Iterator

import numpy as np

from storage.catalog import Catalog
from storage.home import DataHome
from storage.lock import writer_lock
from storage.releases import NoReleaseError, Release, load_release, next_item_id_of, recover

OUT_OF_SPACE_ERRNOS = (errno.ENOSPC, errno.EDQUOT)


class StoreFullError(RuntimeError):
    """The data home's filesystem is full; the message says what to do."""


def is_out_of_space(error: BaseException) -> bool:
    """True for the ways a full disk (or quota) shows: ENOSPC/EDQUOT, or SQLite's "database or disk is full"."""
    if isinstance(error, OSError) and error.errno in OUT_OF_SPACE_ERRNOS:
        return True
    return isinstance(error, sqlite3.OperationalError) and "disk is full" in str(error)


@dataclass
class WriterSession:
    """What a writing flow works with once the session has started."""

    home: DataHome
    catalog: Catalog
    live: Release | None  # None only where the flow allows it (a first pipeline run)
    recovery: dict[str, Any] = field(default_factory=dict)  # what was undone or rebuilt; empty when nothing

    @property
    def next_item_id(self) -> int:
        return self.catalog.next_item_id()


def restore_catalog(catalog: Catalog, live: Release | None) -> int:
    """Catalogue the live release's items that the catalogue lacks (it was deleted, or restored from an
    old backup); keep ids below the release's next_item_id given out. Returns how many rows came back."""
    if live is None:
        return 0
    missing = ~np.isin(live.items.item_ids, catalog.item_ids())
    if missing.any():
        items = live.items
        catalog.restore(type(items)(items.item_ids[missing], items.labels[missing], items.images[missing],
                                    items.paths[missing], items.sources[missing]), live.release_id)
    catalog.keep_ids_from(next_item_id_of(live.manifest, live.items))
    return int(missing.sum())


@contextmanager
def writer_session(home: DataHome, holder: str, timeout_s: float | None = None,
                   require_live: bool = True) -> Iterator[WriterSession]:
    """The writer lock, recovery, the live release (NoReleaseError if `require_live` and none) and a
    catalogue that covers it; a full disk inside becomes StoreFullError."""
    with writer_lock(home, timeout_s=timeout_s, holder=holder):
        try:
            recovered = recover(home)
            try:
                live = load_release(home)
            except NoReleaseError:
                if require_live:
                    raise
                live = None
            catalog = Catalog(home.catalog)
            restored = restore_catalog(catalog, live)
            report = {key: value for key, value in {**recovered, "restored_catalog_rows": restored}.items() if value}
            yield WriterSession(home, catalog, live, report)
        except Exception as error:
            if is_out_of_space(error):
                raise StoreFullError(
                    f"The data home {home.root} is out of disk space ({error}). Free some space and run again: "
                    "nothing is lost (the live release still answers, files not yet handled are still in "
                    "incoming/, and the next run removes what this one left half-written)."
                ) from None
            raise
