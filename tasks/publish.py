"""publish: write a release (model, segments, metrics, manifest) and move LATEST to it, atomically."""

from __future__ import annotations

from typing import Any

import numpy as np
from prefect import task
from prefect.cache_policies import NO_CACHE

from storage.catalog import CatalogItems
from storage.home import DataHome
from storage.releases import METRICS_FILE, Release, ReleaseWriter
from tasks.logs import step_logger


def publish_release(home: DataHome, writer: ReleaseWriter, manifest: dict[str, Any], metrics: dict[str, Any],
                    new_items: CatalogItems | None = None, new_embeddings: np.ndarray | None = None,
                    model=None, base: Release | None = None) -> str:
    """Publish `writer`'s release: `base`'s segments and model (hard-linked) plus what is new.

    A retrain passes the new model and every item; a re-index passes `base` and only the new items.
    """
    try:
        if base is not None:
            writer.extend(base, new_items, new_embeddings)
        elif new_items is not None and len(new_items):
            writer.add_segment(new_items, new_embeddings)
        if model is not None:
            writer.save_model(model)
        else:
            writer.link_model_from(base)
        writer.write_json(METRICS_FILE, metrics)
        release_id = writer.publish(manifest)
    except BaseException:
        writer.discard()
        raise
    step_logger().info("publish: release %s is live (%s)", release_id, home.releases / release_id)
    return release_id


@task(name="publish", cache_policy=NO_CACHE)
def publish_task(home: DataHome, writer: ReleaseWriter, manifest: dict[str, Any], metrics: dict[str, Any],
                 new_items: CatalogItems | None = None, new_embeddings=None, model=None,
                 base: Release | None = None) -> str:
    return publish_release(home, writer, manifest, metrics, new_items, new_embeddings, model, base)
