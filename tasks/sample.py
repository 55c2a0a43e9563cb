"""sample: TF Similarity's MultiShotMemorySampler, every class in every batch.

Multi-similarity loss needs positives and negatives in each batch; drawing `examples_per_class`
images of each of `classes_per_batch` classes guarantees both. Augmentation happens inside
the compiled training step (tasks/train.py), not here, so the sampler stays a cheap index lookup.
"""

from __future__ import annotations

import random

import numpy as np
from prefect import task
from prefect.cache_policies import NO_CACHE

from storage.labels import NUM_CLASSES
from storage.runtime import load_tensorflow_similarity


def make_sampler(images: np.ndarray, labels: np.ndarray, examples_per_class: int, steps_per_epoch: int,
                 classes_per_batch: int = NUM_CLASSES, seed: int = 0):
    """A sampler yielding batches of classes_per_batch x examples_per_class images (float32)."""
    tfsim = load_tensorflow_similarity()
    classes = sorted(int(c) for c in np.unique(labels))
    random.seed(seed)
    return tfsim.samplers.MultiShotMemorySampler(
        np.asarray(images, dtype=np.uint8).reshape(-1, 28, 28, 1), np.asarray(labels, dtype=np.int32),
        classes_per_batch=min(classes_per_batch, len(classes)),
        examples_per_class_per_batch=examples_per_class,
        steps_per_epoch=steps_per_epoch,
        class_list=classes,
    )


@task(name="sample", cache_policy=NO_CACHE)
def sample_task(images, labels, examples_per_class: int, steps_per_epoch: int,
                classes_per_batch: int = NUM_CLASSES, seed: int = 0):
    return make_sampler(images, labels, examples_per_class, steps_per_epoch, classes_per_batch, seed)
