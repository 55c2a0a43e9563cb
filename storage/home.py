"""The data home: one directory that holds everything the pipeline writes.

Layout (see README "Data home"):
    raw/ arrays/ gallery/ incoming/ processed/ rejected/ releases/ tmp/ state/ catalog.sqlite LATEST .writer.lock

state/ holds what belongs to this machine's use of the home, not to the store: Prefect's database for
`make up`, its server log, caches.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

DEFAULT_HOME = "data"
HOME_ENV = "FASHION_SIM_HOME"
REASON_SUFFIX = ".reason.txt"  # rejected/<run>/<file> has its reason in <file>.reason.txt beside it
GALLERY_INDEX = "index.json"  # gallery/index.json lists the exported images: [{path, label, test_index}, ...]


@dataclass(frozen=True)
class DataHome:
    root: Path

    @classmethod
    def from_env(cls, root: str | os.PathLike | None = None) -> "DataHome":
        """The data home named by `root`, else $FASHION_SIM_HOME, else ./data."""
        chosen = root if root not in (None, "") else os.environ.get(HOME_ENV) or DEFAULT_HOME
        return cls(Path(chosen).expanduser().resolve())

    @property
    def raw(self) -> Path:
        return self.root / "raw"

    @property
    def arrays(self) -> Path:
        return self.root / "arrays"

    @property
    def gallery(self) -> Path:
        return self.root / "gallery"

    @property
    def incoming(self) -> Path:
        return self.root / "incoming"

    @property
    def processed(self) -> Path:
        return self.root / "processed"

    @property
    def rejected(self) -> Path:
        return self.root / "rejected"

    @property
    def releases(self) -> Path:
        return self.root / "releases"

    def release_dir(self, release_id: str) -> Path:
        """Where a published release lives (storage.releases.read_manifest checks it stays inside)."""
        return self.releases / release_id

    @property
    def tmp(self) -> Path:
        """Scratch space for releases being written; same filesystem as releases/ so rename is atomic."""
        return self.root / "tmp"

    @property
    def catalog(self) -> Path:
        return self.root / "catalog.sqlite"

    @property
    def latest(self) -> Path:
        return self.root / "LATEST"

    @property
    def state(self) -> Path:
        """This machine's state for the home (Prefect's database for `make up`, logs, caches): not the store."""
        return self.root / "state"

    @property
    def writer_lock(self) -> Path:
        return self.root / ".writer.lock"

    def ensure(self) -> "DataHome":
        for folder in (self.raw, self.arrays, self.gallery, self.incoming, self.processed,
                       self.rejected, self.releases, self.tmp):
            folder.mkdir(parents=True, exist_ok=True)
        return self

    def relative(self, path: Path) -> str:
        """A path as stored in the catalogue and releases: relative to the home when inside it."""
        path = Path(path).resolve()
        try:
            return path.relative_to(self.root).as_posix()
        except ValueError:
            return str(path)


if __name__ == "__main__":  # `python -m storage.home state`: the Makefile's way to the state folder
    import sys

    if sys.argv[1:] != ["state"]:
        raise SystemExit("usage: python -m storage.home state  (prints the data home's state folder, created)")
    state = DataHome.from_env().state
    state.mkdir(parents=True, exist_ok=True)
    print(state)
