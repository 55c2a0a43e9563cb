"""A data home of the earlier format (numpy segments inside each release, hard-linked between releases)
is refused with the command that converts it, and `python -m storage.convert` keeps every release,
item and answer, and can be run again."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest

from storage.convert import OLD_ARRAYS, OLD_GRAPH, convert_home
from storage.dataset import FASHION_MNIST
from storage.releases import CONVERT_COMMAND, ReleaseError, load_release
from storage.search_index import ANN_MIN_ITEMS, build_hnsw
from tests.test_storage import make_items

PARENT, CHILD = "20260101T000000000000Z", "20260102T000000000000Z"


def write_old_release(home, release_id, segments, parent=None):
    folder = home.releases / release_id
    (folder / "segments").mkdir(parents=True)
    for name, (items, embeddings) in segments.items():
        target = folder / "segments" / name
        source = home.releases / PARENT / "segments" / name
        if source.is_dir() and release_id != PARENT:  # shared with the parent, as the old writer did
            target.mkdir()
            for file in source.iterdir():
                os.link(file, target / file.name)
            continue
        target.mkdir()
        arrays = {"embeddings": embeddings, "item_ids": items.item_ids, "labels": items.labels,
                  "images": items.images, "paths": items.paths, "sources": items.sources}
        for key in OLD_ARRAYS:
            np.save(target / f"{key}.npy", arrays[key], allow_pickle=False)
        if len(items) >= ANN_MIN_ITEMS:
            build_hnsw(embeddings, target / OLD_GRAPH)
    (folder / "model.keras").write_bytes(b"placeholder model")
    (folder / "metrics.json").write_text(json.dumps({"precision@1": 0.5}))
    files = {p.relative_to(folder).as_posix(): p.stat().st_size for p in folder.rglob("*") if p.is_file()}
    manifest = {"release_id": release_id, "kind": "test", "parent": parent, "segments": list(segments),
                "files": files, "model": {}, "dataset": FASHION_MNIST.as_dict(), "num_items": 0}
    (folder / "manifest.json").write_text(json.dumps(manifest))


@pytest.fixture
def old_home(home):
    big = make_items(ANN_MIN_ITEMS + 5)
    small = make_items(3, first_id=ANN_MIN_ITEMS + 5, seed=1)
    write_old_release(home, PARENT, {f"{PARENT}-0": big})
    write_old_release(home, CHILD, {f"{PARENT}-0": big, f"{CHILD}-1": small}, parent=PARENT)
    home.latest.write_text(CHILD + "\n")
    return home, big, small


def test_an_old_home_is_refused_with_the_command_that_converts_it(old_home):
    home, _, _ = old_home
    with pytest.raises(ReleaseError, match=f"earlier version.*`{CONVERT_COMMAND}`"):
        load_release(home)


def test_conversion_keeps_every_release_item_and_answer_and_can_run_again(old_home):
    home, big, small = old_home
    assert convert_home(home) == [PARENT, CHILD]
    child = load_release(home)
    assert child.release_id == CHILD and child.manifest["parent"] == PARENT
    np.testing.assert_array_equal(child.items.item_ids, np.concatenate([big[0].item_ids, small[0].item_ids]))
    np.testing.assert_array_equal(child.items.images, np.concatenate([big[0].images, small[0].images]))
    np.testing.assert_array_equal(child.embeddings, np.concatenate([big[1], small[1]]))
    assert child.metrics == {"precision@1": 0.5}
    assert [segment.graph is not None for segment in child.index.segments] == [True, False]
    queries = child.embeddings[[0, len(child.items) - 1]]
    _, rows = child.nearest(queries, 1)
    assert rows[:, 0].tolist() == [0, len(child.items) - 1]
    assert len(load_release(home, PARENT).items) == len(big[0])
    assert not (home.releases / CHILD / "segments").exists()
    assert convert_home(home) == []  # nothing left to convert
