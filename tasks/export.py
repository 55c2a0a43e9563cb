"""export: a class-balanced subset of the query images to gallery/<class>/test-<index>.png (.jpg: a
photo's display copy).

The page shows these as pickable queries; gallery/index.json lists them (written atomically last),
with the item id of those that are catalogued too (a folder's held-out images), so the page can leave
the query itself out of its neighbours.
"""

from __future__ import annotations

import json

import numpy as np
from prefect import task
from prefect.cache_policies import NO_CACHE

from storage.dataset import DatasetDescription
from storage.home import GALLERY, GALLERY_INDEX
from storage.images import encode_png
from tasks.logs import step_logger
from tasks.sample import balanced_indices



def export_gallery(test_images: np.ndarray, test_labels: np.ndarray, store, gallery_size: int, seed: int,
                   dataset: DatasetDescription, displays: list[bytes] | None = None,
                   item_ids: list[int | None] | None = None) -> list[dict]:
    """The gallery in `store` (storage/objects.py), under gallery/."""
    log = step_logger()
    entries = []
    for index in balanced_indices(test_labels, gallery_size, seed):
        label = int(test_labels[index])
        display = displays[index] if displays else b""
        relative = f"{dataset.class_slugs[label]}/test-{index:05d}.{'jpg' if display else 'png'}"
        if not store.exists(f"{GALLERY}/{relative}"):
            store.write_bytes(f"{GALLERY}/{relative}", display or encode_png(test_images[index]))
        entry = {"path": relative, "label": label, "test_index": int(index)}
        if item_ids and item_ids[index] is not None:
            entry["item_id"] = int(item_ids[index])
        entries.append(entry)
    store.write_bytes(f"{GALLERY}/{GALLERY_INDEX}", json.dumps(entries).encode())
    log.info("export: %d gallery images in %s", len(entries), store.url(GALLERY))
    return entries


@task(name="export", cache_policy=NO_CACHE)
def export_task(test_images, test_labels, store, gallery_size: int, seed: int,
                dataset: DatasetDescription, displays: list[bytes] | None = None,
                item_ids: list[int | None] | None = None) -> list[dict]:
    return export_gallery(test_images, test_labels, store, gallery_size, seed, dataset, displays, item_ids)
