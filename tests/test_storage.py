"""storage: the data home, atomic writes, releases (publish, LATEST, load, search, shared segments),
the catalogue, and recovery after a killed writer."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest

from storage.atomic import atomic_write_bytes, atomic_write_text
from storage.catalog import Catalog, CatalogItems
from storage.dataset import FASHION_MNIST
from storage.home import DataHome
from storage.images import content_hash
from storage.releases import (MANIFEST, METRICS_FILE, MODEL_FILE, STORE_FORMAT, NoReleaseError, ReleaseManifest,
                              ReleaseWriter, complete_release_ids, latest_release_id, load_release, recover,
                              set_latest)

DIM = 8


def make_items(count: int, first_id: int = 0, seed: int = 0) -> tuple[CatalogItems, np.ndarray]:
    rng = np.random.default_rng(seed)
    ids = np.arange(first_id, first_id + count, dtype=np.int64)
    items = CatalogItems(item_ids=ids, labels=(ids % 10).astype(np.int16),
                         images=rng.integers(0, 256, (count, 28, 28), dtype=np.uint8),
                         paths=np.array([f"items/{i}.png" for i in ids]),
                         sources=np.array(["drop"] * count))
    embeddings = rng.standard_normal((count, DIM)).astype(np.float32)
    return items, embeddings / np.linalg.norm(embeddings, axis=1, keepdims=True)


def publish(home: DataHome, count: int, first_id: int = 0, base=None, parent=None, seed: int = 0) -> str:
    """A release with `base`'s segments (shared) plus `count` new items. Its model file is a
    placeholder: these tests never embed, so they never load TensorFlow."""
    writer = ReleaseWriter(home)
    (writer.path / MODEL_FILE).write_bytes(b"placeholder model")
    if base is not None:
        writer.link_segments_from(base)
    items, embeddings = make_items(count, first_id, seed)
    writer.add_segment(items, embeddings)
    writer.write_json(METRICS_FILE, {"precision@1": 0.5, "no_match_distance": 0.25})
    return writer.publish(ReleaseManifest("test", parent, len(writer.segments), {}, FASHION_MNIST))


def leftovers(folder) -> list[str]:
    return [p.name for p in folder.iterdir() if p.name.endswith(".part") or p.name.startswith(".")]


# ------------------------------------------------------------------------------------------ home


def test_data_home_comes_from_the_argument_then_the_environment_then_data(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("FASHION_SIM_HOME", raising=False)
    assert DataHome.from_env().root == tmp_path / "data"
    monkeypatch.setenv("FASHION_SIM_HOME", str(tmp_path / "from-env"))
    assert DataHome.from_env().root == tmp_path / "from-env"
    assert DataHome.from_env("").root == tmp_path / "from-env"
    assert DataHome.from_env("relative").root == tmp_path / "relative"


def test_ensure_creates_the_layout_and_paths_are_stored_relative_to_the_home(tmp_path):
    home = DataHome.from_env(tmp_path / "h").ensure()
    for name in ("raw", "arrays", "gallery", "incoming", "processed", "rejected", "releases", "tmp"):
        assert (home.root / name).is_dir()
    assert home.relative(home.gallery / "shirt" / "a.png") == "gallery/shirt/a.png"
    assert home.relative(tmp_path / "elsewhere.png") == str(tmp_path / "elsewhere.png")


# ---------------------------------------------------------------------------------------- atomic


def test_atomic_write_replaces_the_file_and_leaves_no_temporary(tmp_path):
    target = tmp_path / "sub" / "file.txt"
    atomic_write_text(target, "one")
    atomic_write_bytes(target, b"two")
    assert target.read_bytes() == b"two"
    assert [p.name for p in target.parent.iterdir()] == ["file.txt"]


def test_a_failed_atomic_write_keeps_the_old_file_and_no_temporary(tmp_path, monkeypatch):
    target = tmp_path / "file.txt"
    atomic_write_text(target, "old")

    def failing_replace(*args):
        raise OSError("disk full")

    monkeypatch.setattr(os, "replace", failing_replace)
    with pytest.raises(OSError, match="disk full"):
        atomic_write_text(target, "new")
    assert target.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["file.txt"]


# -------------------------------------------------------------------------------------- releases


def test_nothing_published_is_a_clear_error(home):
    with pytest.raises(NoReleaseError, match="python -m flows.pipeline"):
        load_release(home)
    assert latest_release_id(home) is None


def test_publish_writes_a_complete_release_then_moves_latest(home):
    release_id = publish(home, 30)
    assert latest_release_id(home) == release_id
    assert home.latest.read_text() == release_id + "\n"
    folder = home.releases / release_id
    manifest = json.loads((folder / MANIFEST).read_text())
    assert manifest["release_id"] == release_id and manifest["kind"] == "test"
    assert [{key: record[key] for key in ("name", "version", "rows")} for record in manifest["segments"]] == [
        {"name": f"{release_id}-0", "version": 1, "rows": 30}]
    assert manifest["format"] == STORE_FORMAT and manifest["model_release"] == release_id
    listed = manifest["files"]
    on_disk = {p.relative_to(home.root).as_posix(): p.stat().st_size
               for p in folder.rglob("*") if p.is_file() and p.name != MANIFEST}
    assert listed == on_disk and f"releases/{release_id}/{METRICS_FILE}" in listed
    assert manifest["checksums"].keys() == listed.keys()  # storage/integrity.py; tests/test_integrity.py
    assert (home.root / "segments" / f"{release_id}-0.lance").is_dir()
    assert list(home.tmp.iterdir()) == [] and leftovers(home.root) == []
    assert complete_release_ids(home) == [release_id]


def test_latest_moves_atomically_to_each_new_release(home):
    first = publish(home, 10)
    second = publish(home, 10, first_id=10, parent=first)
    assert latest_release_id(home) == second
    assert complete_release_ids(home) == [first, second]
    assert load_release(home, first).release_id == first  # older releases stay loadable
    assert leftovers(home.root) == []


def test_load_release_gives_the_published_items_and_searches_them_exactly(home):
    items, embeddings = make_items(50)
    release = load_release(home, publish(home, 50))
    np.testing.assert_array_equal(release.embeddings, embeddings)
    np.testing.assert_array_equal(release.items.item_ids, items.item_ids)
    np.testing.assert_array_equal(release.items.labels, items.labels)
    np.testing.assert_array_equal(release.items.images, items.images)
    assert release.items.paths.tolist() == items.paths.tolist()
    assert release.metrics["precision@1"] == 0.5 and release.no_match_distance == 0.25
    _, queries = make_items(5, seed=9)
    distances, rows = release.nearest(queries, 7)
    brute = 1.0 - queries @ embeddings.T
    expected = np.argsort(brute, axis=1, kind="stable")[:, :7]
    np.testing.assert_array_equal(rows, expected)
    np.testing.assert_allclose(distances, np.take_along_axis(brute, expected, axis=1), atol=1e-5)


def test_a_child_release_shares_its_parents_segments(home):
    parent = load_release(home, publish(home, 20))
    child_id = publish(home, 5, first_id=20, base=parent, parent=parent.release_id, seed=1)
    child = load_release(home)
    assert child.release_id == child_id and len(child.items) == 25
    assert child.items.item_ids.tolist() == list(range(25))
    assert child.manifest["segments"][0] == parent.manifest["segments"][0]  # referred to, not copied
    assert sorted(p.name for p in (home.root / "segments").iterdir()) == [f"{parent.release_id}-0.lance",
                                                                          f"{child_id}-1.lance"]
    # the merged search over both segments equals brute force over everything
    queries = child.embeddings[[3, 22]]
    _, rows = child.nearest(queries, 4)
    expected = np.argsort(1.0 - queries @ child.embeddings.T, axis=1, kind="stable")[:, :4]
    np.testing.assert_array_equal(rows[:, 0], [3, 22])
    np.testing.assert_array_equal(rows, expected)


# ------------------------------------------------------------------------------------- catalogue


def test_catalogue_add_find_and_load(tmp_path):
    catalog = Catalog(tmp_path / "catalog.lance", FASHION_MNIST)
    assert catalog.count() == 0 and catalog.next_item_id() == 0
    items, _ = make_items(6)
    items.labels[5] = -1  # unlabelled
    catalog.add(items, "r1")
    assert catalog.count() == 6 and catalog.count_source("drop") == 6 and catalog.next_item_id() == 6
    h2, h4 = content_hash(items.images[2]), content_hash(items.images[4])
    assert catalog.find_hashes([h2, h4, "unknown"]) == {h2: 2, h4: 4}
    loaded = catalog.load()
    np.testing.assert_array_equal(loaded.images, items.images)
    assert loaded.paths.tolist() == items.paths.tolist()
    assert catalog.load_labelled_after(2).item_ids.tolist() == [3, 4]


def test_forget_unpublished_deletes_only_rows_of_unknown_releases(tmp_path):
    catalog = Catalog(tmp_path / "catalog.lance", FASHION_MNIST)
    first, _ = make_items(3)
    second, _ = make_items(2, first_id=3)
    catalog.add(first, "published")
    catalog.add(second, "crashed")
    assert catalog.forget_unpublished({"published"}) == 2
    assert catalog.load().item_ids.tolist() == [0, 1, 2]


# -------------------------------------------------------------------------------------- recovery


def test_recover_cleans_up_after_a_killed_writer(home):
    live = publish(home, 10)
    Catalog(home.catalog, FASHION_MNIST).add(make_items(10)[0], live)
    # a killed run: a half-written release, its segment, a partial file in tmp/, catalogue rows of its release
    dead = ReleaseWriter(home)
    dead.add_segment(*make_items(3, first_id=10))
    # ... and a publish to object storage cut short: a release folder without its manifest
    cut = home.releases / "20261129T000000000001Z"
    cut.mkdir()
    (cut / MODEL_FILE).write_bytes(b"half")
    (home.tmp / ".train-images.gz.part").write_bytes(b"half")
    Catalog(home.catalog, FASHION_MNIST).add(make_items(3, first_id=10)[0], dead.release_id)
    # ... and a drop-folder run killed while writing a reason file, beside files that are the user's
    run = home.rejected / "20261129T000000000000Z-reindex"
    run.mkdir(parents=True)
    (run / ".shirt.png.reason.txt.k3x9q2.part").write_text("damaged or trunc")
    users = {"shirt.png": b"png", "shirt.png.reason.txt": b"damaged\n", "notes.part": b"mine"}
    for name, data in users.items():
        (run / name).write_bytes(data)
    report = recover(home)
    assert sorted(report.removed_tmp) == sorted([
        dead.release_id, ".train-images.gz.part", f"segments/{dead.release_id}-0.lance", f"releases/{cut.name}",
        "rejected/20261129T000000000000Z-reindex/.shirt.png.reason.txt.k3x9q2.part"])
    assert report.forgotten_catalog_rows == 3 and report.rolled_forward is None
    assert list(home.tmp.iterdir()) == [] and not cut.exists()
    assert [p.name for p in (home.root / "segments").iterdir()] == [f"{live}-0.lance"]
    assert {p.name: p.read_bytes() for p in run.iterdir()} == users
    assert Catalog(home.catalog, FASHION_MNIST).count() == 10 and latest_release_id(home) == live
    assert not recover(home)


def test_recover_rolls_latest_forward_to_a_complete_child_of_the_live_release(home):
    """A writer killed between publishing its release folder and moving LATEST."""
    live = publish(home, 10)
    child = publish(home, 5, first_id=10, base=load_release(home, live), parent=live)
    set_latest(home, live)  # the LATEST move that was lost
    assert recover(home).rolled_forward == child
    assert latest_release_id(home) == child


def test_recover_does_not_roll_forward_to_a_release_built_on_another(home):
    old = publish(home, 10)
    live = publish(home, 10, parent=None)
    publish(home, 5, first_id=10, parent=old)  # complete, newest, but not a child of the live release
    set_latest(home, live)
    assert recover(home).rolled_forward is None
    assert latest_release_id(home) == live
