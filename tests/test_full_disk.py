"""A re-index on a data home whose filesystem is full (README "Guarantees", issue 12).

The tiny published home is copied onto a small tmpfs, garments to index and junk to reject are
dropped into its incoming/, and a filler file takes all but a little of the space: either before
the run, or just as one of the run's writing steps begins (what each step writes changes with the
code, so filling the disk at the step is what keeps a case on its step). The run must stop with
StoreFullError, one line that says to free space and run again; the live release must still answer;
every dropped file must be in exactly one place, with its bytes. Once the filler is deleted, the next
run must complete, leave each garment in processed/ and each junk file in rejected/, and leave no
litter: tmp/ empty, no temporary *.part files, no empty run folders, only complete releases in
releases/, and a catalogue that holds exactly the live release's items.

Mounting needs root (CI runs as root): the tests skip without it.
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import subprocess
import time
from contextlib import contextmanager
from pathlib import Path
from unittest import mock

import pytest

import flows.reindex as reindex_module
import storage.releases
from flows.reindex import reindex
from storage.atomic import leftover_temp_files
from storage.catalog import Catalog
from storage.dataset import FASHION_MNIST
from storage.home import DataHome
from storage.releases import ReleaseWriter, complete_release_ids, load_release
from storage.session import StoreFullError
from tasks.ingest import reason_path
from tests import corpus
from tests.corpus import accounted

KIB = 1024
FILLER = "filler"
HEADROOM = 8 * KIB * KIB  # the tmpfs is this much larger than the home

# path under incoming/ -> the bytes dropped there
GARMENTS = {  # distinct garments (variant), so none is a duplicate of another
    "dress/long-sleeves.png": lambda: corpus.encode(corpus.garment(variant=1), "PNG"),
    "dress/short-sleeves.png": lambda: corpus.encode(corpus.garment(variant=2), "PNG"),
    "coat/wide.png": lambda: corpus.encode(corpus.garment(variant=3), "PNG"),
    "unlabelled.png": lambda: corpus.encode(corpus.garment(variant=4), "PNG"),
}
JUNK = {
    "empty.png": corpus.IMAGES["zero-byte"],
    "price list.png": corpus.IMAGES["text-named-png"],
    "truncated.png": corpus.IMAGES["truncated-png"],
    "notes.txt": lambda: b"remember to buy socks\n",
    "hats/cap.png": lambda: corpus.encode(corpus.garment(variant=5), "PNG"),
}

# where the disk fills up: the function whose call starts the step
STEPS = {
    "catalogue insert": (Catalog, "add"),
    "release files": (ReleaseWriter, "add_segment"),
    "LATEST pointer": (storage.releases, "set_latest"),
    "reason files": (reindex_module, "move_rejected"),
}

CASES = [  # (bytes left free, step at which the disk fills up; None: before the run)
    pytest.param(0, None, id="nothing-free-before-the-run"),
    pytest.param(36 * KIB, None, id="36k-free-before-the-run"),  # today: the session's first catalogue write
    pytest.param(48 * KIB, None, id="48k-free-before-the-run"),  # today: the catalogue insert
    pytest.param(36 * KIB, "catalogue insert", id="36k-free-at-catalogue-insert"),
    pytest.param(0, "release files", id="full-at-release-files"),
    pytest.param(0, "LATEST pointer", id="full-at-LATEST-pointer"),
    pytest.param(8 * KIB, "reason files", id="two-pages-free-at-reason-files"),
]


@pytest.fixture
def small_disk(published_home, tmp_path) -> Path:
    """A tmpfs mount a few MB larger than the published home; unmounted at teardown whatever happens."""
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root (CI runs as root)")
    disk = tmp_path / "disk"
    disk.mkdir()
    size_k = (tree_bytes(published_home.root) + HEADROOM) // KIB
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size_k}k", "tmpfs", str(disk)],
                             capture_output=True, text=True)
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here (no CAP_SYS_ADMIN?): {mounted.stderr.strip()}")
    try:
        yield disk
    finally:  # lazy: a file still open (a connection kept alive by a traceback) must not keep it mounted
        subprocess.run(["umount", "--lazy", str(disk)], check=True)


def tree_bytes(folder: Path) -> int:
    """Bytes the files under `folder` take, each rounded up to whole 4 KiB pages."""
    return sum(-(-p.stat().st_size // 4096) * 4096 for p in folder.rglob("*") if p.is_file())


def fill(disk: Path, leave: int) -> None:
    """Grow the filler file until `leave` bytes (whole 4 KiB pages on tmpfs) are free."""
    status = os.statvfs(disk)
    with open(disk / FILLER, "ab") as filler:
        filler.write(bytes(max(status.f_bavail * status.f_frsize - leave, 0)))


@contextmanager
def disk_fills(disk: Path, leave: int, step: str | None):
    """Within the block, the disk has `leave` bytes free from the start (step None) or from the
    moment `step` begins."""
    if step is None:
        fill(disk, leave)
        yield
        return
    owner, name = STEPS[step]
    original = getattr(owner, name)

    def filling_first(*args, **kwargs):
        fill(disk, leave)
        return original(*args, **kwargs)

    with mock.patch.object(owner, name, filling_first):
        yield


def drop_files(incoming: Path) -> dict[str, str]:
    """Write GARMENTS and JUNK into incoming/, dated two hours back; returns path -> sha256 of its bytes."""
    dropped = {}
    two_hours_ago = time.time() - 7200
    for relative, make in {**GARMENTS, **JUNK}.items():
        data = make()
        (incoming / relative).parent.mkdir(parents=True, exist_ok=True)
        (incoming / relative).write_bytes(data)
        os.utime(incoming / relative, (two_hours_ago, two_hours_ago))
        dropped[relative] = hashlib.sha256(data).hexdigest()
    return dropped


def places(home: DataHome, dropped: dict[str, str]) -> dict[str, str]:
    """Where each dropped file is ("processed", "rejected" or "incoming"), checking that it is in exactly
    one place, with its bytes, and beside its reason file when rejected."""
    processed, rejected, waiting = accounted(home)
    assert sorted([*processed, *rejected, *waiting]) == sorted(dropped)
    found = {}
    for relative, digest in dropped.items():
        candidates = [*home.processed.glob(f"*/{relative}"), *home.rejected.glob(f"*/{relative}"),
                      home.incoming / relative]
        [file] = [path for path in candidates if path.is_file()]
        assert hashlib.sha256(file.read_bytes()).hexdigest() == digest, relative
        found[relative] = file.relative_to(home.root).parts[0]
        if found[relative] == "rejected":
            assert reason_path(file).read_text().strip(), relative
    return found


def assert_live_release_answers(home: DataHome) -> None:
    """LATEST opens a complete release that finds its own first item."""
    release = load_release(home)
    [neighbours] = release.search(release.items.images[:1], k=3)
    assert len(neighbours) == 3 and neighbours[0].distance == pytest.approx(0.0, abs=1e-4)


def assert_no_litter(home: DataHome) -> None:
    """Nothing half-done is left, and the catalogue, releases/ and processed/ agree with the live release."""
    assert not list(home.tmp.iterdir())
    assert not leftover_temp_files(home.root)
    assert not [folder for top in (home.processed, home.rejected) for folder in top.rglob("*")
                if folder.is_dir() and not any(folder.iterdir())]
    assert sorted(p.name for p in home.releases.iterdir()) == complete_release_ids(home)
    release = load_release(home)
    assert sorted(Catalog(home.catalog, FASHION_MNIST).item_ids().tolist()) == sorted(release.items.item_ids.tolist())
    assert all((home.root / path).is_file() for path in release.items.paths if path.startswith("processed/"))


@pytest.mark.parametrize(("leave", "step"), CASES)
def test_reindex_on_a_full_disk_loses_nothing_and_the_next_run_completes(published_home, small_disk, leave, step):
    home = DataHome(small_disk / "home")
    shutil.copytree(published_home.root, home.root)
    dropped = drop_files(home.incoming)

    with disk_fills(small_disk, leave, step), pytest.raises(StoreFullError) as failure:
        reindex(data_home=str(home.root), settle_seconds=0)

    message = str(failure.value)
    assert "\n" not in message and re.search(r"free some space and run again", message, re.I), message
    assert_live_release_answers(home)
    waiting = [relative for relative, place in places(home, dropped).items() if place == "incoming"]

    (small_disk / FILLER).unlink()
    result = reindex(data_home=str(home.root), settle_seconds=0)

    # garments a published (only not yet live) release indexed are moved by the next run's recovery
    assert result["waiting"] == 0 and result["seen"] <= len(waiting), result
    assert places(home, dropped) == {**dict.fromkeys(GARMENTS, "processed"), **dict.fromkeys(JUNK, "rejected")}
    assert_live_release_answers(home)
    assert_no_litter(home)
