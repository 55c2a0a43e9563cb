"""Your own images, measured: the pipeline on clothing-small (real photos, train/ and validation/) with
the default photo configuration, one run per seed, against Fashion-MNIST references measured in the
same run on the same machine (the article's training time, one query from a PNG file). Prints JSON.

Per seed: precision@1 / recall@5 of the validation photos against the indexed training photos, the
raw-pixel baseline, training seconds. Then one query from a 400x534 JPEG file (read, normalised,
embedded, searched: Release.search as the page and `ui.search` run it), median of --repeats, beside
one query from a Fashion-MNIST PNG on a release of the article's model over the 60,000 training images.
Peak memory is the process's (ru_maxrss), which holds every run.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import resource
import shutil
import statistics
import sys
import tempfile
from pathlib import Path

import numpy as np

from benchmarks.common import load_split, machine, median_ms, mirror_dir
from benchmarks.quality import article_reference
from storage.catalog import DATASET_SOURCE, CatalogItems
from storage.dataset import FASHION_MNIST
from storage.embedder import make_embedder
from storage.home import DataHome
from storage.images import encode_png, normalise_file
from storage.releases import ModelRecord, ReleaseManifest, ReleaseWriter, load_release
from tasks.publish import publish_release
from tasks.train import TrainConfig

DEFAULT_IMAGES = Path(__file__).resolve().parents[2] / "shared" / "data" / "clothing-small"
QUERY_SIZE = (400, 534)  # the typical clothing-small photo


def fashion_mnist_reference(mirror: str, root: Path, repeats: int) -> dict:
    """The article's configuration trained on Fashion-MNIST (its training time), published as a release
    over the 60,000 training images, and one query from a PNG file on it."""
    train_x, train_y = load_split(mirror_dir(mirror), "train")
    test_x, _ = load_split(mirror_dir(mirror), "test")
    similarity_model, seconds = article_reference(train_x, train_y, epochs=10, steps=1000, seed=42)
    from storage.runtime import load_tensorflow

    model = load_tensorflow().keras.Model(similarity_model.inputs, similarity_model.outputs)  # as train_model returns
    home = DataHome(root).ensure()
    writer = ReleaseWriter(home)
    items = CatalogItems(np.arange(len(train_y), dtype=np.int64), train_y.astype(np.int16),
                         train_x.reshape(-1, *FASHION_MNIST.pixel_shape), np.array([f"train/{i}" for i in range(len(train_y))]),
                         np.full(len(train_y), DATASET_SOURCE))
    record = ModelRecord({**TrainConfig(architecture="article").as_dict()}, writer.release_id, len(items) - 1)
    publish_release(home, writer, ReleaseManifest("full", None, len(items), record.as_dict(), FASHION_MNIST), {},
                    new_items=items, new_embeddings=make_embedder(model)(train_x), model=model)
    png = root / "query.png"
    png.write_bytes(encode_png(test_x[0]))
    return {"article_train_seconds": round(seconds, 2), "one_query_png_ms": round(one_query_ms(home, png, repeats), 3)}


def one_query_ms(home: DataHome, image: Path, repeats: int) -> float:
    release = load_release(home)
    release.search(normalise_file(image, release.dataset).pixels[None], 10)
    return median_ms(lambda: release.search(normalise_file(image, release.dataset).pixels[None], 10), repeats)


def query_photo(folder: Path) -> Path:
    """A validation photo of the typical size (the first one, when none has it)."""
    from PIL import Image

    photos = sorted((folder / "validation").rglob("*.jpg"))
    return next((path for path in photos if Image.open(path).size == QUERY_SIZE), photos[0])


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.own_images", description=__doc__.split("\n\n")[0])
    parser.add_argument("--images", default=str(DEFAULT_IMAGES), help="the labelled folder (default: clothing-small)")
    parser.add_argument("--mirror", default="", help="Fashion-MNIST files (default: ../shared/data/fashion-mnist)")
    parser.add_argument("--seeds", default="1,2,3", help="one pipeline run per seed")
    parser.add_argument("--repeats", type=int, default=200, help="single queries timed (median reported)")
    parser.add_argument("--skip-reference", action="store_true", help="do not measure the Fashion-MNIST references")
    parser.add_argument("--keep", default="", help="keep the last seed's data home here (default: a temporary one)")
    args = parser.parse_args(argv)
    from flows.pipeline import pipeline

    folder = Path(args.images)
    if not (folder / "validation").is_dir():
        raise SystemExit(f"{folder} has no validation/ split; pass --images (clothing-small is in ../shared/data/)")
    result = {"machine": machine(), "images": str(folder),
              "config": TrainConfig.for_dataset(_photo_description(folder)).as_dict(), "seeds": {}}
    with tempfile.TemporaryDirectory(prefix="own-images-") as scratch:
        if not args.skip_reference:  # first: nothing else of this run has warmed or loaded the machine yet
            reference = fashion_mnist_reference(args.mirror, Path(scratch) / "fashion-mnist", args.repeats)
            result["fashion_mnist_reference"] = reference
        for seed in [int(s) for s in args.seeds.split(",")]:
            home = Path(scratch) / f"seed-{seed}"
            run = pipeline(data_home=str(home), images=str(folder), seed=seed)
            metrics = load_release(DataHome(home)).metrics
            result["seeds"][seed] = {"precision@1": round(metrics["precision@1"], 4),
                                     "recall@5": round(metrics["recall@5"], 4),
                                     "baseline_raw_pixels_precision@1": round(
                                         metrics["baseline_raw_pixels"]["precision@1"], 4),
                                     "train_seconds": run["train_seconds"], "queries": metrics["queries"],
                                     "indexed_items": len(load_release(DataHome(home)).items)}
        last = DataHome(home)
        if args.keep:
            shutil.copytree(home, args.keep)
        photo = query_photo(folder)
        result["one_query_jpeg_ms"] = round(one_query_ms(last, photo, args.repeats), 3)
        result["query_file"] = f"{photo.relative_to(folder)} ({QUERY_SIZE[0]}x{QUERY_SIZE[1]} JPEG)"
        runs = list(result["seeds"].values())
        result["mean"] = {key: round(statistics.mean(run[key] for run in runs), 4)
                          for key in ("precision@1", "recall@5", "baseline_raw_pixels_precision@1", "train_seconds")}
        if not args.skip_reference:
            result["train_time_ratio_vs_article"] = round(result["mean"]["train_seconds"]
                                                          / reference["article_train_seconds"], 2)
            result["one_query_ratio_jpeg_vs_png"] = round(result["one_query_jpeg_ms"] / reference["one_query_png_ms"], 2)
    result["peak_memory_mib"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)
    return result


def _photo_description(folder: Path):
    from storage.dataset import photo_dataset
    from tasks.folder import folder_classes

    return photo_dataset(folder, folder_classes(folder))


if __name__ == "__main__":
    with contextlib.redirect_stdout(sys.stderr):  # TF Similarity prints its progress on stdout
        figures = main()
    print(json.dumps(figures, indent=2))
