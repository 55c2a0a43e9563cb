"""Retrieval quality and training time: the default configuration against the article's, measured in
one run on the real data, with the raw-pixel kNN baseline. Prints one JSON object.

The article's configuration is run as the article wrote it: its network, MultiShotMemorySampler with
10 classes x 2 examples, 10 epochs of 1,000 steps, Adam 1e-3, Keras fit().
"""

from __future__ import annotations

import argparse
import contextlib
import json
import sys
import time

from benchmarks.common import load_split, machine, mirror_dir
from storage.catalog import CatalogItems
from storage.dataset import FASHION_MNIST
from storage.embedder import make_embedder
from tasks.evaluate import evaluate_release
from tasks.sample import make_sampler
from tasks.train import TrainConfig, build_model, train_model


def article_reference(train_x, train_y, epochs: int, steps: int, seed: int):
    """The article's training loop, unchanged: SimilarityModel.fit on the sampler."""
    from storage.runtime import load_tensorflow, load_tensorflow_similarity

    tf, tfsim = load_tensorflow(), load_tensorflow_similarity()
    tf.keras.utils.set_random_seed(seed)
    sampler = make_sampler(train_x, train_y, examples_per_class=2, steps_per_epoch=steps,
                           classes_per_batch=FASHION_MNIST.num_classes, seed=seed)
    model = build_model("article", 64, FASHION_MNIST.input_shape)
    model.compile(optimizer=tf.keras.optimizers.Adam(1e-3), loss=tfsim.losses.MultiSimilarityLoss(distance="cosine"))
    started = time.perf_counter()
    model.fit(sampler, epochs=epochs, verbose=0)
    return model, time.perf_counter() - started


def measure(model, train_x, train_y, test_x, test_y, mirror_average: bool = False) -> dict:
    items = CatalogItems(item_ids=train_y * 0, labels=train_y.astype("int16"),
                         images=train_x.reshape(-1, *FASHION_MNIST.pixel_shape),
                         paths=train_y.astype(str), sources=train_y.astype(str))
    started = time.perf_counter()
    embed = make_embedder(model, mirror_average)
    index = embed(train_x)
    index_s = time.perf_counter() - started
    metrics = evaluate_release(embed, test_x, test_y, index, items, FASHION_MNIST)
    return {"precision@1": metrics["precision@1"], "recall@5": metrics["recall@5"], "map@10": metrics["map@10"],
            "index_seconds": round(index_s, 2), "baseline_raw_pixels_precision@1":
            metrics["baseline_raw_pixels"]["precision@1"]}


def main(argv=None) -> dict:
    defaults = TrainConfig()
    parser = argparse.ArgumentParser(prog="python -m benchmarks.quality", description=__doc__.split("\n\n")[0])
    parser.add_argument("--mirror", default="", help="folder with the four .gz files (default: ../shared/data/fashion-mnist)")
    parser.add_argument("--skip-article", action="store_true", help="measure only the default configuration")
    parser.add_argument("--article-epochs", type=int, default=10)
    parser.add_argument("--article-steps", type=int, default=1000)
    parser.add_argument("--preset", default="", help="a tasks.train preset over the configuration, e.g. quality")
    for field, value in defaults.as_dict().items():
        parser.add_argument(f"--{field.replace('_', '-')}", type=type(value) if not isinstance(value, bool)
                            else (lambda s: s.lower() in ("1", "true", "yes")), default=value)
    args = parser.parse_args(argv)
    folder = mirror_dir(args.mirror)
    train_x, train_y = load_split(folder, "train")
    test_x, test_y = load_split(folder, "test")
    config = TrainConfig(**{f: getattr(args, f) for f in defaults.as_dict()}).with_preset(args.preset)
    result = {"machine": machine(), "queries": int(len(test_y)), "indexed_items": int(len(train_y))}

    sampler = make_sampler(train_x, train_y, config.examples_per_class, config.steps_per_epoch,
                           config.classes_per_batch, config.seed)
    model, history = train_model(sampler, config, FASHION_MNIST.num_classes)
    result["default"] = {"config": config.as_dict(), "train_seconds": history["train_seconds"],
                         **measure(model, train_x, train_y, test_x, test_y, config.mirror_average)}
    if not args.skip_article:
        reference, seconds = article_reference(train_x, train_y, args.article_epochs, args.article_steps, config.seed)
        result["article"] = {"train_seconds": round(seconds, 2), **measure(reference, train_x, train_y, test_x, test_y)}
        result["train_time_ratio_default_vs_article"] = round(
            result["default"]["train_seconds"] / result["article"]["train_seconds"], 3)
    return result


if __name__ == "__main__":
    with contextlib.redirect_stdout(sys.stderr):  # TF Similarity prints its progress on stdout
        figures = main()
    print(json.dumps(figures, indent=2))
