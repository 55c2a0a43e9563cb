"""The store notices its own damage and says what to do: a lost or stale catalogue is rebuilt from the
live release without reusing ids, segments stay few across re-index runs, and a busy lock, a damaged catalogue,
a missing or odd LATEST each give one line naming who, what and the command (issue 12)."""

from __future__ import annotations

import os
import shutil
import threading

import numpy as np
import pytest

from flows.reindex import reindex
from storage.catalog import Catalog, CatalogError
from storage.dataset import FASHION_MNIST
from storage.lock import StoreBusyError, writer_lock
from storage.releases import (MAX_MINOR_SEGMENTS, NoReleaseError, ReleaseError, ReleaseManifest, ReleaseWriter,
                              latest_release_id, load_release)
from storage.session import restore_catalog, writer_session
from tests import corpus
from tests.test_storage import make_items, publish
from tests.watchdog import under_watchdog


def drop_garments(home, variants) -> None:
    for variant in variants:
        corpus_file = home.incoming / f"garment-{variant}.png"
        corpus_file.write_bytes(corpus.encode(corpus.garment(variant=variant), "PNG"))


def test_a_lost_catalogue_is_rebuilt_from_the_live_release(published_home):
    home = published_home
    live = load_release(home)
    before = Catalog(home.catalog, FASHION_MNIST).load()
    shutil.rmtree(home.catalog)
    drop_garments(home, [30, 31])
    (home.incoming / "again.png").write_bytes(corpus.encode(corpus.garment(variant=30), "PNG"))

    result = reindex(data_home=str(home.root), settle_seconds=0)

    assert result["indexed"] == 2 and result["rejections"][0]["reason"].startswith("duplicate of catalogue item")
    release = load_release(home)
    ids = release.items.item_ids.tolist()
    assert len(ids) == len(set(ids)) == len(live.items) + 2  # no id given twice
    assert min(ids[-2:]) == int(live.items.item_ids.max()) + 1
    after = Catalog(home.catalog, FASHION_MNIST).load()
    assert after.item_ids.tolist() == sorted(ids)
    np.testing.assert_array_equal(after.images[: len(before)], before.images)
    # duplicate detection works again: the training set's first image is known
    assert Catalog(home.catalog, FASHION_MNIST).find_hashes([corpus_hash(before.images[0])]) == {corpus_hash(before.images[0]): 0}


def corpus_hash(pixels):
    from storage.images import content_hash

    return content_hash(pixels)


def test_ids_given_out_by_any_release_are_never_given_again(home):
    parent = publish(home, 10)  # ids 0..9
    writer = ReleaseWriter(home)  # a child that holds fewer items (as after a removal)
    (writer.path / "model.keras").write_bytes(b"placeholder")
    items, embeddings = make_items(3)
    writer.add_segment(items, embeddings)
    writer.write_json("metrics.json", {})
    child = writer.publish(ReleaseManifest("test", parent, len(writer.segments), {}, FASHION_MNIST))
    assert load_release(home, child).manifest["next_item_id"] == 10

    catalog = Catalog(home.catalog, FASHION_MNIST)  # lost: rebuilt from the child, which only holds ids 0..2
    assert restore_catalog(catalog, load_release(home)) == 3
    assert catalog.count() == 3 and catalog.next_item_id() == 10


def test_segments_stay_few_and_search_stays_exact(home):
    publish(home, 40)
    for run in range(3 * MAX_MINOR_SEGMENTS):
        base = load_release(home)
        writer = ReleaseWriter(home)
        writer.link_model_from(base)
        items, embeddings = make_items(3, first_id=40 + 3 * run, seed=run + 1)
        writer.extend(base, items, embeddings)
        writer.write_json("metrics.json", {})
        writer.publish(ReleaseManifest("test", base.release_id, 0, {}, FASHION_MNIST))
        assert len(writer.segments) <= MAX_MINOR_SEGMENTS + 1
    release = load_release(home)
    assert release.items.item_ids.tolist() == list(range(40 + 9 * MAX_MINOR_SEGMENTS))
    queries = release.embeddings[[0, 45, len(release.items) - 1]]
    for batch in (queries, queries[:1]):  # the batch path and the single-query path
        _, rows = release.nearest(batch, 5)
        expected = np.argsort(1.0 - batch @ release.embeddings.T, axis=1, kind="stable")[:, :5]
        np.testing.assert_array_equal(rows, expected)


def test_a_busy_lock_names_its_holder_and_since_when(any_home):
    """The flock of a local home, the lease of an S3 home: the second writer names the first."""
    home = any_home
    holding, release = threading.Event(), threading.Event()

    def hold():
        with writer_lock(home, holder="retrain"):
            holding.set()
            release.wait(30)

    holder = threading.Thread(target=hold)
    holder.start()
    assert holding.wait(30)
    try:
        with pytest.raises(StoreBusyError, match=rf"retrain pid={os.getpid()} host=\S+ since=20\d\d-"):
            with writer_lock(home, timeout_s=1.5, holder="reindex"):
                pass
    finally:
        release.set()
        holder.join()
    with writer_lock(home, timeout_s=5, holder="reindex"):  # released: the next writer gets it at once
        pass


def test_a_damaged_catalogue_says_how_to_rebuild_it(published_home):
    for manifest in (published_home.catalog / "_versions").iterdir():
        manifest.write_bytes(b"this is not a Lance manifest" * 100)
    with pytest.raises(CatalogError, match="Move it aside .* rebuilds it from the live release"):
        with writer_session(published_home, "test"):
            pass


def test_a_missing_latest_names_the_releases_and_the_command(home):
    first = publish(home, 5)
    newest = publish(home, 3, first_id=5)
    home.latest.unlink()
    with pytest.raises(NoReleaseError, match=rf"LATEST is missing.*echo {newest} > {home.latest}.*2 complete"):
        load_release(home)
    assert first < newest


@pytest.mark.parametrize("kind", ["directory", "fifo"])
def test_latest_of_the_wrong_kind_is_refused_in_one_line(home, kind):
    live = publish(home, 4)
    home.latest.unlink()
    home.latest.mkdir() if kind == "directory" else os.mkfifo(home.latest)
    with pytest.raises(ReleaseError) as refused:
        under_watchdog(lambda: latest_release_id(home), seconds=30)
    message = str(refused.value)
    assert "\n" not in message and ("a directory" if kind == "directory" else "FIFO") in message
    assert f"echo {live} >" in message
