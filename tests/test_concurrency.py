"""Readers never see half a release while writers publish; writers take turns on the store's lock;
on a local home and on an S3 home alike.

A local home's lock is an flock, held per open file description, and an S3 home's a lease, so the
writer tests use separate processes, as real runs are.
"""

from __future__ import annotations

import subprocess
import sys
import threading

import numpy as np

from storage.catalog import CatalogItems
from storage.lock import writer_lock
from storage.releases import ReleaseManifest, ReleaseWriter, load_release
from tasks.publish import publish_release
from tests.conftest import REPO

RELEASES_TO_PUBLISH = 6
READS_PER_PUBLISH = 5


def publish_next(home, base, step: int) -> str:
    """A re-index of `base` (its segments and model shared) plus a segment of 3 copies of its items."""
    rows = np.arange(3) + 3 * step
    next_id = int(base.items.item_ids.max()) + 1
    items = CatalogItems(np.arange(next_id, next_id + 3), base.items.labels[rows], base.items.images[rows],
                         base.items.paths[rows], base.items.sources[rows])
    manifest = ReleaseManifest("reindex", base.release_id, len(base.items) + 3, base.manifest["model"], base.dataset)
    return publish_release(home, ReleaseWriter(home), manifest, base.metrics, items, base.embeddings[rows], base=base)


def check_complete(release, queries: np.ndarray | None, labels: np.ndarray) -> None:
    """What a searcher relies on: every array present and aligned, and (given queries) the model answering."""
    assert len(release.embeddings) == len(release.items) == release.manifest["num_items"]
    assert len(np.unique(release.items.item_ids)) == len(release.items)
    distances, _ = release.nearest(release.embeddings[:5], k=1)
    assert np.all(distances[:, 0] < 1e-4)  # every item finds itself (or its copy)
    if queries is not None:
        assert [n[0].label for n in release.search(queries, k=1)] == labels.tolist()


def test_reader_sees_only_complete_releases_while_releases_are_published(any_published_home):
    home = any_published_home
    first = load_release(home)
    queries, labels = first.items.images[:4], first.items.labels[:4]
    reads = threading.Condition()
    seen: list[str] = []
    errors: list[BaseException] = []
    stop = threading.Event()

    def reader():
        while not stop.is_set():
            try:
                release = load_release(home)  # what the page and ui.search do per session
                new = release.release_id not in seen  # load each release's model once: it is the slow part
                check_complete(release, queries if new else None, labels)
                outcome = release.release_id
            except BaseException as error:  # noqa: BLE001 - every failure is the finding
                errors.append(error)
                stop.set()
                outcome = "error"
            with reads:
                seen.append(outcome)
                reads.notify_all()

    thread = threading.Thread(target=reader, daemon=True)
    thread.start()
    published = [first.release_id]
    try:
        for step in range(RELEASES_TO_PUBLISH):
            with reads:  # let the reader work against the current release before replacing it
                target = len(seen) + READS_PER_PUBLISH
                assert reads.wait_for(lambda: len(seen) >= target or stop.is_set(), timeout=120)
            with writer_lock(home, holder="test"):  # as every writing flow does (on S3: the lease)
                published.append(publish_next(home, load_release(home), step))
        with reads:
            target = len(seen) + READS_PER_PUBLISH
            reads.wait_for(lambda: len(seen) >= target or stop.is_set(), timeout=120)
    finally:
        stop.set()
        thread.join(timeout=120)
    assert not errors, errors
    assert set(seen) <= set(published)
    assert len(set(seen)) >= 2  # the reader did run across publishes
    assert seen == sorted(seen)  # and never went back to an older release
    final = load_release(home)
    assert final.release_id == published[-1]
    assert len(final.items) == len(first.items) + 3 * RELEASES_TO_PUBLISH


# A writer in its own process: takes the lock, journals start/end around its critical section.
WRITER = """
import sys, time
from storage.home import DataHome
from storage.lock import StoreBusyError, writer_lock
home, name, timeout = DataHome.from_env(sys.argv[1]), sys.argv[2], float(sys.argv[3])
try:
    with writer_lock(home, timeout_s=timeout, holder=name):
        with open(home.root / "journal", "a") as out:
            out.write(f"start {name}\\n")
        print("locked", flush=True)
        sys.stdin.readline() if "--hold" in sys.argv else time.sleep(0.3)
        with open(home.root / "journal", "a") as out:
            out.write(f"end {name}\\n")
except StoreBusyError as error:
    print(error, file=sys.stderr)
    sys.exit(3)
"""


def start_writer(home, name: str, timeout_s: float, hold: bool = False) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-c", WRITER, home.location, name, str(timeout_s),
                             *(["--hold"] if hold else [])],
                            cwd=REPO, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)


def journal(home) -> list[str]:
    return (home.root / "journal").read_text().splitlines()


def test_writers_started_together_take_turns(any_home):
    home = any_home
    writers = [start_writer(home, f"w{i}", timeout_s=120) for i in range(3)]
    for writer in writers:
        _, err = writer.communicate(timeout=180)
        assert writer.returncode == 0, err
    lines = journal(home)
    assert len(lines) == 6
    for start, end in zip(lines[::2], lines[1::2]):  # each critical section is whole: never interleaved
        assert start.startswith("start ") and end == "end " + start.split()[1]
    assert sorted(line.split()[1] for line in lines[::2]) == ["w0", "w1", "w2"]


def test_second_writer_waits_then_gets_a_clear_busy_error(any_home):
    home = any_home
    holder = start_writer(home, "holder", timeout_s=10, hold=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        busy = start_writer(home, "impatient", timeout_s=1.5)
        _, err = busy.communicate(timeout=120)
        assert busy.returncode == 3
        assert "Another pipeline run is writing to" in err and "FASHION_SIM_LOCK_TIMEOUT" in err
        assert "Nothing was changed by this run" in err and "Traceback" not in err
        patient = start_writer(home, "patient", timeout_s=120)
    finally:
        holder.communicate("\n", timeout=120)
    _, err = patient.communicate(timeout=120)
    assert patient.returncode == 0, err
    assert journal(home) == ["start holder", "end holder", "start patient", "end patient"]
