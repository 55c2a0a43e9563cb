"""embed: the catalogue's items through a network, into the unit vectors a release searches."""

from __future__ import annotations

from typing import Callable

import numpy as np
from prefect import task
from prefect.cache_policies import NO_CACHE

from storage.catalog import CatalogItems
from tasks.logs import step_logger


def embed_items(embed: Callable[[np.ndarray], np.ndarray], items: CatalogItems) -> np.ndarray:
    """`embed` is a trained model's Embedder (storage/embedder.py) or a live release's `embed`."""
    embeddings = embed(items.images)
    step_logger().info("embed: %d items into %d dimensions", *embeddings.shape)
    return embeddings


@task(name="embed", cache_policy=NO_CACHE)
def embed_task(embed: Callable[[np.ndarray], np.ndarray], items: CatalogItems) -> np.ndarray:
    return embed_items(embed, items)
