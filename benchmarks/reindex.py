"""Cost of re-indexing dropped images: wall time of the re-index flow adding --new PNGs to synthetic
stores of each --sizes items (a release of random unit embeddings, random item pixels and an
untrained model of the default architecture: the flow's work does not depend on what the model learned).
Measures scan + validate + normalise + deduplicate + embed + catalogue + publish + move, in one
process with Prefect and TensorFlow already started (their start-up is reported apart).
Prints one JSON object.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

from benchmarks.common import machine
from storage.catalog import DATASET_SOURCE, Catalog, CatalogItems
from storage.dataset import FASHION_MNIST
from storage.home import DataHome
from storage.lock import writer_lock
from storage.releases import ModelRecord, ReleaseManifest, ReleaseWriter, load_release
from storage.search_index import segment_key
from storage.runtime import load_tensorflow
from tasks.publish import publish_release
from tasks.train import TrainConfig, build_model


def synthetic_store(home: DataHome, size: int, model, seed: int) -> DataHome:
    """`home` (empty), its live release indexing `size` random items (catalogued like the training set)."""
    rng = np.random.default_rng(seed)
    images = rng.integers(0, 256, size=(size, *FASHION_MNIST.pixel_shape), dtype=np.uint8)
    labels = rng.integers(0, 10, size=size).astype(np.int16)
    embeddings = rng.normal(size=(size, 64)).astype(np.float32)
    embeddings /= np.linalg.norm(embeddings, axis=1, keepdims=True)
    paths = np.array([f"synthetic/{i}" for i in range(size)])
    items = CatalogItems(np.arange(size, dtype=np.int64), labels, images, paths,
                         np.full(size, DATASET_SOURCE))
    with writer_lock(home, holder="benchmark"):  # as every writer (on S3: the lease that moves LATEST)
        writer = ReleaseWriter(home)
        Catalog(home.catalog, FASHION_MNIST).add(items, writer.release_id)
        config = TrainConfig()
        manifest = ReleaseManifest("full", None, size, ModelRecord(config.as_dict(), writer.release_id,
                                                                   size - 1).as_dict(), FASHION_MNIST)
        publish_release(home, writer, manifest, {"precision@1": 0.0, "recall@5": 0.0}, new_items=items,
                        new_embeddings=embeddings, model=model)
    return home


def drop_pngs(incoming: Path, count: int, seed: int) -> None:
    """`count` product-photo-like PNGs (a light shape on a dark 84x84 backdrop), half of them labelled."""
    rng = np.random.default_rng(seed)
    for i in range(count):
        canvas = rng.integers(0, 30, size=(84, 84), dtype=np.uint8)
        top, left = rng.integers(4, 30, size=2)
        height, width = rng.integers(24, 50, size=2)
        canvas[top: top + height, left: left + width] = rng.integers(120, 256, size=(height, width))
        folder = incoming / (str(i % 10) if i % 2 else "")
        folder.mkdir(parents=True, exist_ok=True)
        buffer = io.BytesIO()
        Image.fromarray(canvas, mode="L").save(buffer, format="PNG")
        (folder / f"drop-{seed}-{i:05d}.png").write_bytes(buffer.getvalue())


def folder_bytes(folder: Path) -> int:
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.reindex", description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[60_000, 120_000], help="items in the live index")
    parser.add_argument("--new", type=int, default=1000, help="images dropped per run")
    parser.add_argument("--runs", type=int, default=2, help="re-index runs per size (each drops --new images)")
    parser.add_argument("--workdir", default="", help="where to build the stores (kept); default: a temporary dir")
    args = parser.parse_args(argv)

    started = time.perf_counter()
    similarity = build_model(TrainConfig().architecture, 64, FASHION_MNIST.input_shape)  # imports TensorFlow
    model = load_tensorflow().keras.Model(similarity.inputs, similarity.outputs)  # saved as train_model's output
    tensorflow_seconds = time.perf_counter() - started
    from flows.reindex import reindex

    results = []
    with tempfile.TemporaryDirectory() as scratch:
        workdir = Path(args.workdir or scratch)
        for size in args.sizes:
            started = time.perf_counter()
            home = synthetic_store(DataHome(workdir / f"store-{size}").ensure(), size, model, seed=size)
            build_seconds = time.perf_counter() - started
            if not results:  # start Prefect's ephemeral server outside the measurement
                started = time.perf_counter()
                reindex(data_home=str(home.root))
                prefect_seconds = time.perf_counter() - started
            runs = []
            for run in range(args.runs):
                drop_pngs(home.incoming, args.new, seed=1000 * size + run)
                started = time.perf_counter()
                outcome = reindex(data_home=str(home.root), settle_seconds=0)
                seconds = time.perf_counter() - started
                if outcome["indexed"] != args.new:
                    raise SystemExit(f"expected {args.new} indexed, got {outcome}")
                release = load_release(home)
                runs.append({"seconds": round(seconds, 2), "indexed": outcome["indexed"],
                             "new_segment_bytes": folder_bytes(home.root / segment_key(release.manifest["segments"][-1]["name"])),
                             "release_items": len(release.items)})
            results.append({"index_items": size, "store_build_seconds": round(build_seconds, 1),
                            "index_bytes_shared": sum(folder_bytes(home.root / segment_key(record["name"]))
                                                      for record in release.manifest["segments"][:-1]),
                            "runs": runs, "median_seconds": round(float(np.median([r["seconds"] for r in runs])), 2)})
    result = {"machine": machine(), "load_average_1min": round(os.getloadavg()[0], 2), "new_images_per_run": args.new,
              "tensorflow_import_seconds": round(tensorflow_seconds, 1),
              "prefect_ephemeral_start_seconds": round(prefect_seconds, 1), "sizes": results}
    print(json.dumps(result, indent=2))
    return result


if __name__ == "__main__":
    main()
