"""Segments too large for memory: searched through Lance's vector index, their pixels, display copies
and embeddings read on demand. The limit is lowered (FASHION_SIM_IN_MEMORY_BYTES) so tiny data takes
the path a catalogue of millions takes; answers must match the in-memory path's."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np

from storage.catalog import CatalogItems
from storage.objects import LocalStore
from storage.releases import load_release
from storage.search_index import (IN_MEMORY_LIMIT_VARIABLE, Column, OnDemandColumn, exact_knn, is_on_demand,
                                  load_segments, read_segment, write_segment)
from tests import corpus
from tests.conftest import REPO, TINY_TRAINING

SHAPE = (28, 28)


def random_items(count: int, first_id: int, seed: int) -> tuple[CatalogItems, np.ndarray]:
    rng = np.random.default_rng(seed)
    embeddings = rng.normal(size=(count, 16)).astype(np.float32)
    embeddings /= np.linalg.norm(embeddings, axis=1, keepdims=True)
    items = CatalogItems(item_ids=np.arange(first_id, first_id + count), labels=(np.arange(count) % 5).astype(np.int16),
                         images=rng.integers(0, 255, (count, *SHAPE), dtype=np.uint8),
                         paths=np.array([f"p/{i}" for i in range(count)]), sources=np.full(count, "drop"))
    return items, embeddings


def test_an_on_demand_segment_answers_as_the_same_segment_read_whole(tmp_path, monkeypatch):
    store = LocalStore(tmp_path / "store")
    big, big_embeddings = random_items(600, 0, seed=1)
    fresh, fresh_embeddings = random_items(20, 600, seed=2)
    monkeypatch.setenv(IN_MEMORY_LIMIT_VARIABLE, "1")
    records = [write_segment(store, "20260101T000000000000Z-0", big, big_embeddings, tmp_path),
               write_segment(store, "20260101T000000000000Z-1", fresh, fresh_embeddings, tmp_path)]
    assert is_on_demand(records[0]) and not is_on_demand(records[1])  # a few fresh items stay in memory

    items, embeddings, index = load_segments(store, records, SHAPE)
    assert isinstance(items.images, Column) and isinstance(embeddings, Column)
    assert isinstance(items.images.parts[0], OnDemandColumn)
    whole = CatalogItems.concatenate([read_segment(store, record, SHAPE)[0] for record in records])
    every = np.concatenate([big_embeddings, fresh_embeddings])
    for key in (5, -1, 610, slice(590, 605), np.array([612, 3, 599]), whole.labels == 2):
        np.testing.assert_array_equal(items.images[key], whole.images[key])
        np.testing.assert_allclose(embeddings[key], every[key])
    assert list(items.displays[[1, 601]]) == [b"", b""]
    np.testing.assert_array_equal(np.asarray(items.images), whole.images)
    assert np.array_equal(items.item_ids, whole.item_ids) and np.array_equal(items.paths, whole.paths)

    queries = every[[3, 100, 605]] + 0.01
    queries /= np.linalg.norm(queries, axis=1, keepdims=True)
    want_distances, want_rows = exact_knn(queries, every, 10)
    distances, rows = index.nearest(queries, 10, exact=True)
    np.testing.assert_array_equal(rows, want_rows)
    np.testing.assert_allclose(distances, want_distances, atol=1e-5)
    _, found = index.nearest(queries, 10)
    assert np.mean([len(set(a) & set(b)) / 10 for a, b in zip(found, want_rows)]) >= 0.9
    _, one = index.nearest(queries[:1], 10)
    assert one[0][0] == want_rows[0][0]

    members = np.flatnonzero(whole.labels == 3)
    want_distances, want_found = exact_knn(queries, every[members], 7)
    distances, rows = index.nearest(queries, 7, label=3)
    assert np.all(whole.labels[rows] == 3)
    np.testing.assert_array_equal(rows, members[want_found])
    np.testing.assert_allclose(distances, want_distances, atol=1e-4)


def test_a_release_too_large_for_memory_is_searched_through_lance(any_home, tiny_mirror, tmp_path, monkeypatch):
    from flows.pipeline import pipeline
    from flows.reindex import reindex

    monkeypatch.setenv(IN_MEMORY_LIMIT_VARIABLE, "1")
    monkeypatch.chdir(tmp_path)
    assert pipeline(data_home=any_home.uri or str(any_home.root), mirror=str(tiny_mirror), **TINY_TRAINING)["published"]
    release = load_release(any_home)
    assert [is_on_demand(record) for record in release.manifest["segments"]] == [True]
    assert "graph_bytes" not in release.manifest["segments"][0]
    row = release.row_of(7)
    found = release.search(release.items.images[row][None], k=5)[0]
    assert found[0].item_id == 7 and found[0].distance < 1e-3
    similar = release.similar(7, k=5)[0]
    assert len(similar) == 5 and 7 not in [n.item_id for n in similar]
    label = int(release.items.labels[row])
    assert {n.label for n in release.similar(7, k=5, label=label)[0]} == {label}
    assert release.picture_file(row)[1] == "png"

    (any_home.incoming / "dress").mkdir(parents=True)
    (any_home.incoming / "dress" / "one.png").write_bytes(corpus.encode(corpus.garment(variant=1), "PNG"))
    outcome = reindex(data_home=any_home.uri or str(any_home.root), settle_seconds=0)
    assert outcome["published"] and outcome["indexed"] == 1
    extended = load_release(any_home)
    assert [is_on_demand(record) for record in extended.manifest["segments"]] == [True, False]
    new_item = int(extended.items.item_ids[-1])
    assert extended.search(extended.items.images[-1][None], k=1)[0][0].item_id == new_item

    if any_home.is_remote:
        return
    answer = subprocess.run([sys.executable, "-m", "ui.search", "--item", "7", "--k", "3"], cwd=REPO,
                            capture_output=True, text=True, timeout=300, env=os.environ.copy())
    assert answer.returncode == 0, answer.stderr
    assert len(json.loads(answer.stdout)["neighbours"]) == 3
