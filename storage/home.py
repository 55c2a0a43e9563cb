"""The data home: where everything the pipeline writes lives, on this machine or on object storage.

`FASHION_SIM_HOME` / `--data-home` is a local folder (default ./data) or s3://bucket/prefix. The store
(storage/objects.py, storage/catalog.py) holds what every machine that shares the home must see:

    dataset.json catalog.lance/ releases/ segments/ arrays/ gallery/ LATEST (.writer.lease on s3)

and the local folder `root` holds what belongs to this machine's use of it: tmp/ (releases being
built), raw/ (downloads), state/ (Prefect's database for `make up`, logs, caches), .writer.lock.
For a local home, `root` is the home itself and the store is that same folder; for an s3 home it is
a folder of its own under the local cache directory ($FASHION_SIM_CACHE, else ~/.cache/fashion-sim).

The drop folder is always local: `--incoming DIR` / FASHION_SIM_INCOMING (default <home>/incoming for
a local home; required for an s3 home), with processed/ and rejected/ beside it.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

from storage.errors import UserError
from storage.location import is_remote

DEFAULT_HOME = "data"
HOME_ENV = "FASHION_SIM_HOME"
INCOMING_ENV = "FASHION_SIM_INCOMING"
CACHE_ENV = "FASHION_SIM_CACHE"
LATEST = "LATEST"  # the store's pointer to the live release: one line, its id
ARRAYS = "arrays"  # the store's folder of reshaped arrays (the evaluation's queries)
GALLERY = "gallery"  # the store's folder of exported gallery images
CATALOG = "catalog.lance"  # the catalogue's Lance dataset (storage/catalog.py)
REASON_SUFFIX = ".reason.txt"  # rejected/<run>/<file> has its reason in <file>.reason.txt beside it
GALLERY_INDEX = "index.json"  # gallery/index.json lists the exported images: [{path, label, test_index}, ...]


class NoDropFolderError(UserError, ValueError):
    """An s3 home was given no local drop folder."""


@dataclass(frozen=True)
class DataHome:
    root: Path  # this machine's folder for the home (the home itself when it is local)
    uri: str = ""  # where the store is: s3://bucket/prefix, or "" for the local folder `root`
    incoming_folder: Path | None = None  # the drop folder, when not <root>/incoming

    @classmethod
    def from_env(cls, root: str | os.PathLike | None = None, incoming: str | os.PathLike | None = None) -> "DataHome":
        """The data home named by `root`, else $FASHION_SIM_HOME, else ./data; its drop folder `incoming`,
        else $FASHION_SIM_INCOMING, else <home>/incoming (local homes only)."""
        chosen = str(root) if root not in (None, "") else os.environ.get(HOME_ENV) or DEFAULT_HOME
        incoming = incoming if incoming not in (None, "") else os.environ.get(INCOMING_ENV) or None
        folder = Path(incoming).expanduser().resolve() if incoming else None
        if is_remote(chosen):
            uri = chosen.rstrip("/")
            cache = Path(os.environ.get(CACHE_ENV) or Path.home() / ".cache" / "fashion-sim").expanduser()
            local = cache / f"{uri.split('://', 1)[1].replace('/', '-')[:60]}-{hashlib.sha256(uri.encode()).hexdigest()[:8]}"
            return cls(local.resolve(), uri, folder)
        return cls(Path(chosen).expanduser().resolve(), "", folder)

    @property
    def is_remote(self) -> bool:
        return bool(self.uri)

    @property
    def location(self) -> str:
        """The home as the user named it: its folder, or its s3:// URI."""
        return self.uri or str(self.root)

    @cached_property
    def store(self):
        """The store's files (storage/objects.py): releases, segments, the pointer, the gallery, arrays."""
        from storage.objects import open_store

        return open_store(self.location, self.state / "cache")

    @property
    def raw(self) -> Path:
        return self.root / "raw"

    @property
    def arrays(self) -> Path:
        """The local folder of the arrays (a local home's store holds them there)."""
        return self.root / ARRAYS

    @property
    def gallery(self) -> Path:
        """The local folder of the gallery (a local home's store holds it there)."""
        return self.root / GALLERY

    @property
    def incoming(self) -> Path:
        if self.incoming_folder is not None:
            return self.incoming_folder
        if self.is_remote:
            raise NoDropFolderError(
                f"The data home {self.uri} is on object storage and the drop folder must be on this machine: "
                f"give it with --incoming DIR or {INCOMING_ENV}=DIR.")
        return self.root / "incoming"

    @property
    def has_drop_folder(self) -> bool:
        """False for an s3 home given no local drop folder (flows that do not need one never ask)."""
        return not self.is_remote or self.incoming_folder is not None

    @property
    def processed(self) -> Path:
        return self.incoming.parent / "processed"

    @property
    def rejected(self) -> Path:
        return self.incoming.parent / "rejected"

    @property
    def releases(self) -> Path:
        return self.root / "releases"

    @property
    def tmp(self) -> Path:
        """Scratch space for releases being built; on a local home, the same filesystem as releases/ so
        publishing one is a rename."""
        return self.root / "tmp"

    @property
    def catalog(self) -> str | Path:
        return f"{self.uri}/{CATALOG}" if self.is_remote else self.root / CATALOG

    @property
    def latest(self) -> str | Path:
        return f"{self.uri}/{LATEST}" if self.is_remote else self.root / LATEST

    @property
    def state(self) -> Path:
        """This machine's state for the home (Prefect's database for `make up`, logs, caches): not the store."""
        return self.root / "state"

    @property
    def writer_lock(self) -> Path:
        return self.root / ".writer.lock"

    def ensure(self) -> "DataHome":
        folders = [self.raw, self.tmp, self.state]
        if self.has_drop_folder:
            folders += [self.incoming, self.processed, self.rejected]
        if not self.is_remote:
            folders += [self.arrays, self.gallery, self.releases]
        for folder in folders:
            folder.mkdir(parents=True, exist_ok=True)
        return self

    def relative(self, path: Path) -> str:
        """A path as stored in the catalogue and releases: relative to the folder that holds the drop
        folder (processed/<release>/... the same on every kind of home), else to the home's folder,
        else absolute."""
        path = Path(path).resolve()
        for base in ([self.incoming.parent] if self.has_drop_folder else []) + [self.root]:
            try:
                return path.relative_to(base).as_posix()
            except ValueError:
                continue
        return str(path)


if __name__ == "__main__":  # `python -m storage.home state`: the Makefile's way to the state folder
    import sys

    if sys.argv[1:] != ["state"]:
        raise SystemExit("usage: python -m storage.home state  (prints the data home's state folder, created)")
    state = DataHome.from_env().state
    state.mkdir(parents=True, exist_ok=True)
    print(state)
