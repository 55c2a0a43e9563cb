"""index: embed catalogue items, and register the dataset's items in the catalogue."""

from __future__ import annotations

from typing import Callable

import numpy as np
from prefect import task
from prefect.cache_policies import NO_CACHE

from storage.catalog import Catalog, CatalogItems
from storage.images import content_hash
from tasks.logs import step_logger

DATASET_SOURCE = "fashion-mnist-train"


def catalogue_dataset(catalog: Catalog, images: np.ndarray, labels: np.ndarray, release_id: str) -> int:
    """Add the training set to the catalogue once (item ids 0..N-1). Returns how many rows were added."""
    if catalog.count_source(DATASET_SOURCE):
        return 0
    start = catalog.next_item_id()
    rows = [
        {"item_id": start + i, "content_hash": content_hash(image), "label": int(label),
         "source": DATASET_SOURCE, "path": f"fashion-mnist/train/{i}", "pixels": image}
        for i, (image, label) in enumerate(zip(images.reshape(-1, 28, 28), labels))
    ]
    catalog.add(rows, release_id)
    return len(rows)


def embed_items(embed: Callable[[np.ndarray], np.ndarray], items: CatalogItems) -> np.ndarray:
    """`embed` is a trained model's Embedder (storage/embedder.py) or a live release's `embed`."""
    log = step_logger()
    embeddings = embed(items.images)
    log.info("index: embedded %d items into %d dimensions", *embeddings.shape)
    return embeddings


@task(name="index", cache_policy=NO_CACHE)
def index_task(embed: Callable[[np.ndarray], np.ndarray], items: CatalogItems) -> np.ndarray:
    return embed_items(embed, items)
