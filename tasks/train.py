"""train: a metric-learning embedding with TF Similarity (MultiSimilarityLoss, cosine distance).

Architectures are chosen by name. "article" is the article's network, kept for comparison; "lean" is
the default; "compact", the previous default, stays so that releases trained with it can be retrained
(see README "Performance" for how they measure).
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, fields, replace
from typing import Any, Callable

from prefect import task
from prefect.cache_policies import NO_CACHE

from storage.dataset import GREY_ON_BLACK, PHOTO, DatasetDescription
from storage.errors import UserError
from storage.runtime import load_tensorflow, load_tensorflow_similarity
from tasks.backbones import BACKBONES, backbone_model
from tasks.logs import Progress, step_logger

COSINE_SCALE = 16.0


class PresetError(UserError, ValueError):
    """An unknown preset or architecture name."""


# quality: the best measured precision@1, at a cost (README "Performance"): the compact network (twice
# lean's multiply-adds), 10 x 450 steps and mirror-averaged embeddings: 0.9294 against 0.9175, for 1.7x
# the default's training time, 1.9x the cost of one query and 3.5x the embedding time of a batch
PRESETS = {"quality": {"architecture": "compact", "steps_per_epoch": 450, "mirror_average": True}}
# what each kind of dataset trains with unless told otherwise (README "Your own images" for photos:
# the from-scratch `photo` network on 64 px, 10 x 300 steps of 10 classes x 8, shifts and colour jitter,
# and mirror-averaged embeddings: +0.029 precision@1 on clothing-small's validation photos, 0.809 ->
# 0.839 with the same trained network, for twice the network's share of a query)
DATASET_TRAINING = {
    GREY_ON_BLACK: {},
    PHOTO: {"architecture": "photo", "steps_per_epoch": 300, "examples_per_class": 8, "shift_pixels": 8,
            "colour_jitter": 0.2, "mirror_average": True},
}


@dataclass(frozen=True)
class TrainConfig:
    architecture: str = "lean"
    embedding_size: int = 64
    epochs: int = 10
    steps_per_epoch: int = 400
    classes_per_batch: int = 10
    examples_per_class: int = 16
    learning_rate: float = 2e-3
    augment: bool = True
    seed: int = 42
    classifier_weight: float = 1.0
    mirror_average: bool = False  # embed each image and its mirror image, averaged (queries and catalogue)
    weights: str = ""  # a pretrained backbone's ImageNet weights file (tasks/backbones.py)
    shift_pixels: int = 0  # random shifts up to this many pixels each way (edges reflected) while training
    colour_jitter: float = 0.0  # random brightness (+-255 x this) and contrast (1 +- this) while training

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def for_dataset(cls, dataset: DatasetDescription, **given) -> "TrainConfig":
        """The dataset's default configuration, with the `given` settings that are not None over it."""
        base = replace(cls(), **DATASET_TRAINING[dataset.conventions])
        return replace(base, **{name: value for name, value in given.items() if value is not None})

    def with_preset(self, name: str) -> "TrainConfig":
        """This configuration with a named preset's settings over it ("" leaves it as it is)."""
        if name and name not in PRESETS:
            raise PresetError(f"unknown preset {name!r}: use one of {', '.join(PRESETS)} (or none for the default)")
        return replace(self, **PRESETS[name]) if name else self

    @classmethod
    def warm_start(cls, trained: dict[str, Any], **budget) -> "TrainConfig":
        """A trained model's configuration (architecture, embedding size...: its release's
        ModelRecord.config) with a new training budget."""
        known = {f.name for f in fields(cls)}
        return replace(cls(**{k: v for k, v in trained.items() if k in known}), **budget)


def _article(tf, tfsim, embedding_size: int, input_shape: tuple[int, int, int]):
    inputs = tf.keras.layers.Input(shape=input_shape)
    x = tf.keras.layers.Rescaling(1 / 255)(inputs)
    x = tf.keras.layers.Conv2D(64, 3, activation="relu")(x)
    x = tf.keras.layers.Flatten()(x)
    x = tf.keras.layers.Dense(64, activation="relu")(x)
    outputs = tfsim.layers.MetricEmbedding(embedding_size)(x)
    return inputs, outputs


def _conv_bn_relu(layers, x, filters: int):
    x = layers.Conv2D(filters, 3, padding="same", use_bias=False)(x)
    x = layers.BatchNormalization()(x)
    return layers.Activation("relu")(x)


def _conv_blocks(tf, tfsim, embedding_size: int, input_shape: tuple[int, int, int], widths: tuple[int, ...]):
    """One conv-BN-ReLU-pool block per width, then a dense layer and the metric embedding."""
    layers = tf.keras.layers
    inputs = layers.Input(shape=input_shape)
    x = layers.Rescaling(1 / 255)(inputs)
    for filters in widths:
        x = layers.MaxPooling2D()(_conv_bn_relu(layers, x, filters))
    x = layers.Flatten()(x)
    x = layers.Dense(256, activation="relu")(x)
    outputs = tfsim.layers.MetricEmbedding(embedding_size)(x)
    return inputs, outputs


def _compact(tf, tfsim, embedding_size: int, input_shape: tuple[int, int, int]):
    """Widths 32-64-128: 7.8 M multiply-adds per image; precision@1 0.923 after 4,500 steps."""
    return _conv_blocks(tf, tfsim, embedding_size, input_shape, (32, 64, 128))


def _lean(tf, tfsim, embedding_size: int, input_shape: tuple[int, int, int]):
    """Widths 16-48-96: 3.7 M multiply-adds, so about half the embedding time and 60% of the
    training step of compact, for the same precision@1 after the same 4,500 steps (0.922 vs 0.923,
    within the 0.005 seed-to-seed spread). Measured and not kept: 16-32-64 (2.1 M) 0.916; a
    depthwise-separable variant 0.914 after 6,000 steps; a CosFace margin of 0.2 on the auxiliary
    classifier (+0.0004) and dropout 0.3 before the dense layer (-0.001)."""
    return _conv_blocks(tf, tfsim, embedding_size, input_shape, (16, 48, 96))


def _photo(tf, tfsim, embedding_size: int, input_shape: tuple[int, int, int]):
    """For colour product photos: four blocks of two 3x3 conv-BN-ReLU layers (widths 32-64-128-192,
    max-pooled between blocks), global average pooling, the metric embedding. Pooling instead of a
    dense layer over the feature map: where the garment lies in the frame says nothing of what it is."""
    layers = tf.keras.layers
    inputs = layers.Input(shape=input_shape)
    x = layers.Rescaling(1 / 255)(inputs)
    for block, filters in enumerate((32, 64, 128, 192)):
        if block:
            x = layers.MaxPooling2D()(x)
        x = _conv_bn_relu(layers, _conv_bn_relu(layers, x, filters), filters)
    x = layers.GlobalAveragePooling2D()(x)
    outputs = tfsim.layers.MetricEmbedding(embedding_size)(x)
    return inputs, outputs


ARCHITECTURES: dict[str, Callable] = {"article": _article, "compact": _compact, "lean": _lean, "photo": _photo}
ARCHITECTURE_SIDES = {name: backbone.side for name, backbone in BACKBONES.items()}  # input side, where fixed


def build_model(architecture: str, embedding_size: int, input_shape: tuple[int, int, int], weights: str | None = None):
    """The named network (from scratch, or a pretrained backbone with `weights`: a file, "imagenet" for
    Keras' own, None for random initial weights) as a SimilarityModel."""
    if architecture not in ARCHITECTURES and architecture not in BACKBONES:
        raise PresetError(f"unknown architecture {architecture!r}; choose one of "
                          f"{', '.join(sorted([*ARCHITECTURES, *BACKBONES]))}")
    tf, tfsim = load_tensorflow(), load_tensorflow_similarity()
    if architecture in BACKBONES:
        inputs, outputs = backbone_model(architecture, tf, tfsim, embedding_size, tuple(input_shape), weights)
    else:
        inputs, outputs = ARCHITECTURES[architecture](tf, tfsim, embedding_size, tuple(input_shape))
    return tfsim.models.SimilarityModel(inputs, outputs, name=f"fashion_{architecture}")


def augment_batch(tf, images, seed, shift_pixels: int = 0, colour_jitter: float = 0.0):
    """Random horizontal flips inside the compiled step (stateless, seeded); for photos also shifts and
    brightness/contrast jitter. Garments are left-right symmetric; on Fashion-MNIST (centred by the
    dataset) 2-pixel shifts cost 1.4 points of precision@1 (0.902 vs 0.916), so it gets flips only."""
    count = tf.shape(images)[0]
    flip = tf.random.stateless_uniform([count, 1, 1, 1], seed) < 0.5
    images = tf.where(flip, tf.reverse(images, axis=[2]), images)
    if shift_pixels:
        shifts = tf.random.stateless_uniform([count, 2], seed + 1, -shift_pixels, shift_pixels + 1, tf.int32)
        ones, zeros = tf.ones([count, 1]), tf.zeros([count, 1])
        dx, dy = tf.cast(shifts[:, :1], tf.float32), tf.cast(shifts[:, 1:], tf.float32)
        transforms = tf.concat([ones, zeros, dx, zeros, ones, dy, zeros, zeros], axis=1)
        images = tf.raw_ops.ImageProjectiveTransformV3(
            images=images, transforms=transforms, output_shape=tf.shape(images)[1:3], fill_value=0.0,
            interpolation="NEAREST", fill_mode="REFLECT")
    if colour_jitter:
        brightness = tf.random.stateless_uniform([count, 1, 1, 1], seed + 2, -colour_jitter, colour_jitter) * 255
        contrast = tf.random.stateless_uniform([count, 1, 1, 1], seed + 3, 1 - colour_jitter, 1 + colour_jitter)
        mean = tf.reduce_mean(images, axis=[1, 2, 3], keepdims=True)
        images = tf.clip_by_value((images - mean) * contrast + mean + brightness, 0.0, 255.0)
    return images


def train_model(sampler, config: TrainConfig, num_classes: int, initial_model=None):
    """Fit a SimilarityModel on batches from `sampler`; warm-starts from `initial_model`'s weights.

    The step is one tf.function (forward, MultiSimilarityLoss, backward, Adam with cosine decay):
    on 2 CPU cores Keras' fit() loop added ~60% per step on top of the same computation.
    Returns (embedding model as a plain tf.keras.Model, history dict).
    """
    log = step_logger()
    tf, tfsim = load_tensorflow(), load_tensorflow_similarity()
    tf.keras.utils.set_random_seed(config.seed)
    input_shape = sampler.input_shape
    if initial_model is not None:  # a retrain starts from the live weights: no pretrained file needed
        model = build_model(config.architecture, config.embedding_size, input_shape)
        model.set_weights(initial_model.get_weights())
    else:
        model = build_model(config.architecture, config.embedding_size, input_shape, config.weights or "imagenet")
    total_steps = max(1, config.epochs * config.steps_per_epoch)
    schedule = tf.keras.optimizers.schedules.CosineDecay(config.learning_rate, total_steps, alpha=0.05)
    optimizer = tf.keras.optimizers.Adam(schedule)
    loss_fn = tfsim.losses.MultiSimilarityLoss(distance="cosine")
    augment, shift_pixels, colour_jitter = config.augment, config.shift_pixels, config.colour_jitter
    # Auxiliary cosine classifier on the (unit) embedding: the class signal pulls clusters apart
    # faster than pair mining alone within a short CPU budget. It is dropped after training.
    class_weights = tf.Variable(tf.random.normal([config.embedding_size, num_classes], stddev=0.1, seed=config.seed),
                                name="aux_classifier")
    classifier_weight = float(config.classifier_weight)
    trainable = model.trainable_variables + ([class_weights] if classifier_weight else [])

    @tf.function(input_signature=[tf.TensorSpec([None, *input_shape], tf.float32),
                                  tf.TensorSpec([None], tf.int32), tf.TensorSpec([2], tf.int64)])
    def train_step(images, labels, seed):
        if augment:
            images = augment_batch(tf, images, seed, shift_pixels, colour_jitter)
        with tf.GradientTape() as tape:
            embeddings = model(images, training=True)
            loss = loss_fn(labels, embeddings)
            if classifier_weight:
                logits = COSINE_SCALE * tf.matmul(embeddings, tf.math.l2_normalize(class_weights, axis=0))
                loss += classifier_weight * tf.reduce_mean(
                    tf.nn.sparse_softmax_cross_entropy_with_logits(labels=labels, logits=logits))
        grads = tape.gradient(loss, trainable)
        optimizer.apply_gradients(zip(grads, trainable))
        return loss

    started = time.perf_counter()
    losses = []
    with Progress("train", config.epochs * config.steps_per_epoch, "step", log) as progress:
        for epoch in range(config.epochs):
            epoch_loss = 0.0
            for step in range(config.steps_per_epoch):
                images, labels = sampler[step]
                seed = tf.constant([config.seed, epoch * config.steps_per_epoch + step], tf.int64)
                loss = float(train_step(tf.cast(images, tf.float32), tf.cast(labels, tf.int32), seed))
                epoch_loss += loss
                progress.advance(loss=f"{loss:.3f}")
            losses.append(epoch_loss / max(1, config.steps_per_epoch))
            progress.note("train epoch %d/%d: loss %.4f (%.0f s)", epoch + 1, config.epochs, losses[-1],
                          time.perf_counter() - started)
    embedding_model = tf.keras.Model(model.inputs, model.outputs, name=model.name)
    return embedding_model, {"loss": losses, "train_seconds": round(time.perf_counter() - started, 2)}


@task(name="train", cache_policy=NO_CACHE)
def train_task(sampler, config: TrainConfig, num_classes: int, initial_model=None):
    return train_model(sampler, config, num_classes, initial_model)
