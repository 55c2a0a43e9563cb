"""export: a class-balanced subset of test images to gallery/<class>/test-<index>.png.

The page shows these as pickable queries; gallery/index.json lists them (written atomically last).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from prefect import task
from prefect.cache_policies import NO_CACHE

from storage.atomic import atomic_write_bytes, atomic_write_text
from storage.home import GALLERY_INDEX
from storage.images import encode_png
from storage.labels import CLASS_SLUGS
from tasks.logs import step_logger
from tasks.sample import balanced_indices



def export_gallery(test_images: np.ndarray, test_labels: np.ndarray, gallery_dir: Path,
                   gallery_size: int, seed: int) -> list[dict]:
    log = step_logger()
    gallery_dir = Path(gallery_dir)
    entries = []
    for index in balanced_indices(test_labels, gallery_size, seed):
        label = int(test_labels[index])
        relative = f"{CLASS_SLUGS[label]}/test-{index:05d}.png"
        target = gallery_dir / relative
        if not target.exists():
            atomic_write_bytes(target, encode_png(test_images[index]))
        entries.append({"path": relative, "label": label, "test_index": int(index)})
    atomic_write_text(gallery_dir / GALLERY_INDEX, json.dumps(entries))
    log.info("export: %d gallery images in %s", len(entries), gallery_dir)
    return entries


@task(name="export", cache_policy=NO_CACHE)
def export_task(test_images, test_labels, gallery_dir: Path, gallery_size: int, seed: int) -> list[dict]:
    return export_gallery(test_images, test_labels, gallery_dir, gallery_size, seed)
