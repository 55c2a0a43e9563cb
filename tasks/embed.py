"""embed: the catalogue's items through a network, into the unit vectors a release searches."""

from __future__ import annotations

from typing import Callable

import numpy as np
from prefect import task
from prefect.cache_policies import NO_CACHE

from storage.catalog import CatalogItems
from tasks.logs import Progress, step_logger


BATCH = 4096  # images per call of `embed`, so that progress can be shown (a multiple of embedder.CHUNK)


def embed_items(embed: Callable[[np.ndarray], np.ndarray], items: CatalogItems) -> np.ndarray:
    """`embed` is a trained model's Embedder (storage/embedder.py) or a live release's `embed`."""
    log = step_logger()
    images = items.images
    with Progress("embed", len(images), "image", log) as progress:
        parts = []
        for start in range(0, len(images), BATCH):
            parts.append(embed(images[start: start + BATCH]))
            progress.advance(len(parts[-1]))
    embeddings = np.concatenate(parts) if parts else embed(images)
    log.info("embed: %d items into %d dimensions", *embeddings.shape)
    return embeddings


@task(name="embed", cache_policy=NO_CACHE)
def embed_task(embed: Callable[[np.ndarray], np.ndarray], items: CatalogItems) -> np.ndarray:
    return embed_items(embed, items)
