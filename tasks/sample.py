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

from storage.catalog import CatalogItems
from storage.dataset import network_input
from storage.runtime import load_tensorflow_similarity, quiet_native_output
from tasks.logs import step_logger


def balanced_indices(labels: np.ndarray, total: int, seed: int) -> np.ndarray:
    """`total` indices (fewer only if the data has fewer), as equal a share per class as the data
    allows: a seeded shuffle of each class, then dealt round-robin across classes."""
    rng = np.random.default_rng(seed)
    rank = np.empty(len(labels), dtype=np.int64)
    for label in np.unique(labels):
        members = rng.permutation(np.flatnonzero(labels == label))
        rank[members] = np.arange(len(members))
    return np.sort(np.lexsort((labels, rank))[:total])


def retrain_set(new: CatalogItems, items: CatalogItems, trained_through: int, replay_size: int,
                seed: int) -> tuple[np.ndarray, np.ndarray, int]:
    """Images and labels an incremental retrain trains on: the `new` labelled items plus a
    class-balanced replay sample of `replay_size` labelled items the live model was trained on (so it
    does not forget them). Returns (images, labels, items replayed)."""
    seen = np.flatnonzero(items.trainable & (items.item_ids <= trained_through))
    replay = seen[balanced_indices(items.labels[seen], replay_size, seed)] if replay_size > 0 else seen[:0]
    step_logger().info("sample: %d new labelled items + %d replayed", len(new), len(replay))
    return (np.concatenate([new.images, items.images[replay]]), np.concatenate([new.labels, items.labels[replay]]),
            len(replay))


def make_sampler(images: np.ndarray, labels: np.ndarray, examples_per_class: int, steps_per_epoch: int,
                 classes_per_batch: int, seed: int = 0):
    """A sampler yielding batches of classes_per_batch x examples_per_class images (as the network takes
    them: `input_shape`, channels last)."""
    tfsim = load_tensorflow_similarity()

    class SeededSampler(tfsim.samplers.MultiShotMemorySampler):
        def __init__(self, x, y, seed: int, **kwargs):
            super().__init__(x, y, **kwargs)
            # the library shuffled its copy with the global `random`: index the arrays as given instead
            self._x, self._y = x, y
            self.input_shape = tuple(int(n) for n in x.shape[1:])
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
    with quiet_native_output():  # the library prints its batch size and four tqdm bars
        return SeededSampler(
            network_input(np.asarray(images, dtype=np.uint8)),
            np.asarray(labels, dtype=np.int32), seed,
            classes_per_batch=min(classes_per_batch, len(classes)),
            examples_per_class_per_batch=examples_per_class,
            steps_per_epoch=steps_per_epoch,
            class_list=classes,
        )


@task(name="sample", cache_policy=NO_CACHE)
def sample_task(images, labels, examples_per_class: int, steps_per_epoch: int,
                classes_per_batch: int, seed: int = 0):
    return make_sampler(images, labels, examples_per_class, steps_per_epoch, classes_per_batch, seed)


@task(name="retrain-set", cache_policy=NO_CACHE)
def retrain_set_task(new: CatalogItems, items: CatalogItems, trained_through: int, replay_size: int,
                     seed: int) -> tuple[np.ndarray, np.ndarray, int]:
    return retrain_set(new, items, trained_through, replay_size, seed)
