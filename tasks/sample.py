"""sample: TF Similarity's MultiShotMemorySampler, every class in every batch.

Multi-similarity loss needs positives and negatives in each batch; drawing `examples_per_class`
images of each of `classes_per_batch` classes guarantees both. Augmentation happens inside
the compiled training step (tasks/train.py), not here, so the sampler stays a cheap index lookup.

The library draws its batches from Python's process-wide `random` module, which Prefect's
background threads also use: inside a flow the same seed gave different batches from run to run.
SeededSampler draws the same way from a generator of its own.
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
    """A sampler yielding batches of classes_per_batch x examples_per_class images."""
    tfsim = load_tensorflow_similarity()

    class SeededSampler(tfsim.samplers.MultiShotMemorySampler):
        def __init__(self, x, y, seed: int, **kwargs):
            super().__init__(x, y, **kwargs)
            # the library shuffled its copy with the global `random`: index the arrays as given instead
            self._x, self._y = x, y
            self.index_per_class = {int(c): np.flatnonzero(y == c).tolist() for c in np.unique(y)}
            self.rng = random.Random(seed)

        def _get_examples(self, batch_id: int, num_classes: int, examples_per_class: int):
            rng = self.rng
            idxs = []
            for class_id in rng.sample(self.class_list, k=num_classes):
                pool = self.index_per_class[class_id]
                draw = rng.choices if len(pool) < examples_per_class else rng.sample  # as the library does
                idxs.extend(draw(pool, k=examples_per_class))
            idxs = np.asarray(idxs[: self.batch_size])
            return self._x[idxs], self._y[idxs]

    classes = sorted(int(c) for c in np.unique(labels))
    return SeededSampler(
        np.asarray(images, dtype=np.uint8).reshape(-1, 28, 28, 1), np.asarray(labels, dtype=np.int32), seed,
        classes_per_batch=min(classes_per_batch, len(classes)),
        examples_per_class_per_batch=examples_per_class,
        steps_per_epoch=steps_per_epoch,
        class_list=classes,
    )


@task(name="sample", cache_policy=NO_CACHE)
def sample_task(images, labels, examples_per_class: int, steps_per_epoch: int,
                classes_per_batch: int = NUM_CLASSES, seed: int = 0):
    return make_sampler(images, labels, examples_per_class, steps_per_epoch, classes_per_batch, seed)
