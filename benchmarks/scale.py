"""What each catalogue size costs (issue 18): `python -m benchmarks.scale --items 60000,250000,1000000`.

For each size, a catalogue is built from Fashion-MNIST's training images and augmented copies of them
(shifts, mirror images with a shift, crops scaled back up; byte-identical copies dropped), embedded by
a published home's model (the default training: `--home`, never changed; by shards on a local Dask
cluster past tasks.shards.FANOUT_MIN_ITEMS, as the pipeline embeds), and indexed twice, as one
segment each: in memory (HNSW graph) and on demand (Lance's IVF_HNSW_SQ index), through
storage.search_index.write_segment as a release writes them. Each build runs in a fresh process, and
so does each opening, so peak memory is each step's own. Queries are 1,000 Fashion-MNIST test images
(never in the catalogue); recall@10 is against exact search over the same embeddings. For the graph,
the search width (ef) is swept to show what recall costs at each size. Prints one JSON object: seconds
by step, peak memory of each step (embedding, each index, each opening and its searches), one query's
p50 / p99, batch throughput, recall@10, the index settings (storage/search_index.py chooses them by
size), and 10M / 100M projected from the largest size's bytes and build seconds per item.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import resource
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from benchmarks.common import in_child, load_split, machine, mirror_dir, peak_resident_mib
from benchmarks.lance_index import K, PATHS, measure_open
from storage.catalog import CatalogItems
from storage.home import DataHome
from storage.objects import LocalStore
from storage.releases import load_release
from storage.search_index import IN_MEMORY_LIMIT_VARIABLE, exact_knn, write_segment
from tasks.shards import FanOut, embed_images

EF_VALUES = (16, 32, 48, 64, 96, 128)
PROJECTED = (10_000_000, 100_000_000)


def augmented(images: np.ndarray, labels: np.ndarray, size: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """`size` distinct images: the originals, then whole-set copies, each one transform with its own
    random parameters (copy 1 a shift, 2 a mirror image shifted, 3 a crop scaled back up, and again)."""
    rng = np.random.default_rng(seed)
    side = images.shape[1]
    seen: set[bytes] = set()
    kept_images, kept_labels, total, copy = [], [], 0, 0
    while total < size:
        block = images
        if copy % 3 in (1, 2):
            dy, dx = rng.choice([-3, -2, -1, 1, 2, 3], 2)
            block = np.roll(images[:, :, ::-1] if copy % 3 == 2 else images, (dy, dx), axis=(1, 2))
        elif copy:
            margin, offset = rng.integers(2, 5), rng.integers(0, 3, 2)
            top, left = min(offset[0], 2 * margin), min(offset[1], 2 * margin)
            scale = np.linspace(0, side - 2 * margin - 1, side).round().astype(int)
            block = images[:, top + scale][:, :, left + scale]
        fresh = [row for row, image in enumerate(block)
                 if (key := hashlib.blake2b(image.tobytes(), digest_size=8).digest()) not in seen and not seen.add(key)]
        kept_images.append(block[fresh])
        kept_labels.append(labels[fresh])
        total += len(fresh)
        copy += 1
    return np.concatenate(kept_images)[:size], np.concatenate(kept_labels)[:size]


def peak_mib() -> dict[str, int]:
    """The largest resident memory of this process, and of its child processes that ended (a local Dask
    cluster's workers; at least what this process held when it started them), in MiB."""
    return {"process": peak_resident_mib(),
            "largest_child": round(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024)}


def embed_step(home: str, mirror: str, size: int, scratch: str, queries_count: int, result) -> None:
    """Runs in a fresh process: build the catalogue and embed it (by shards past FANOUT_MIN_ITEMS) and
    the queries; the arrays go to `scratch` for the steps after."""
    release = load_release(DataHome.from_env(Path(home)))
    train_images, train_labels = load_split(Path(mirror), "train")
    test_images, _ = load_split(Path(mirror), "test")
    started = time.perf_counter()
    images, labels = augmented(train_images, train_labels, size)
    augment = time.perf_counter() - started
    started = time.perf_counter()
    embeddings = embed_images(release.embedder, images, FanOut())  # by shards on a local Dask cluster when large
    embed = time.perf_counter() - started
    for name, array in {"images": images, "labels": labels, "embeddings": embeddings,
                        "queries": release.embed(test_images[:queries_count])}.items():
        np.save(Path(scratch) / f"{name}-{size}.npy", array)
    result.put({"seconds": {"augment": round(augment, 2), "embed": round(embed, 2)},
                "embedded_by": f"{len(FanOut.shards(size))} shards on a local Dask cluster" if FanOut.shards(size)
                else "the process (below FANOUT_MIN_ITEMS)", "peak_memory_mib": peak_mib()})


def index_step(size: int, scratch: str, number: int, limit: str, result) -> None:
    """Runs in a fresh process: write the catalogue as one segment, indexed as `limit` makes
    write_segment choose (in memory or on demand), as a release writer does."""
    os.environ[IN_MEMORY_LIMIT_VARIABLE] = limit
    images, labels, embeddings = (np.load(Path(scratch) / f"{name}-{size}.npy")
                                  for name in ("images", "labels", "embeddings"))
    items = CatalogItems(item_ids=np.arange(size), labels=labels.astype(np.int16), images=images,
                         paths=np.array([f"scale/{row}" for row in range(size)]), sources=np.full(size, "scale"))
    store = Path(scratch) / f"store-{size}"
    started = time.perf_counter()
    record = write_segment(LocalStore(store), f"20260101T000000000000Z-{size}{number}", items, embeddings, Path(scratch))
    seconds = time.perf_counter() - started
    disk = sum(file.stat().st_size for file in store.rglob("*") if file.is_file() and record["name"] in str(file))
    result.put({"record": record, "seconds": round(seconds, 2), "disk_bytes": disk, "peak_memory_mib": peak_mib()})


def measure(home: str, mirror: str, size: int, scratch: Path, queries_count: int) -> dict:
    figures = {"items": size, "embed": in_child(embed_step, home, mirror, size, str(scratch), queries_count)}
    embeddings, queries = np.load(scratch / f"embeddings-{size}.npy"), np.load(scratch / f"queries-{size}.npy")
    started = time.perf_counter()
    truth = exact_knn(queries, embeddings, K)[1]
    figures["exact_answers_s"] = round(time.perf_counter() - started, 2)
    del embeddings
    shape = np.load(scratch / f"images-{size}.npy", mmap_mode="r").shape[1:]
    for number, (path, limit) in enumerate(PATHS.items()):
        built = in_child(index_step, size, str(scratch), number, limit)
        record = built.pop("record")
        opened = in_child(measure_open, str(scratch / f"store-{size}"), record, shape, queries, truth, EF_VALUES)
        figures[path] = {"index": record.get("index"), "write_and_index": built, "open_and_search": opened}
    return figures


def projections(largest: dict) -> dict:
    """10M and 100M items from the largest size's memory, disk and build seconds per item (linear:
    HNSW and IVF builds grow a little faster than that, so build times are lower bounds)."""
    size, projected = largest["items"], {}
    for path in PATHS:
        built, opened = largest[path]["write_and_index"], largest[path]["open_and_search"]
        per_item = {"memory_bytes": opened["open_memory_mib"] * 2 ** 20 / size, "disk_bytes": built["disk_bytes"] / size,
                    "build_s": (largest["embed"]["seconds"]["embed"] + built["seconds"]) / size}
        projected[path] = {"per_item": {key: round(value, 7) for key, value in per_item.items()},
                           **{f"{items:,}": {"memory_gib": round(per_item["memory_bytes"] * items / 2 ** 30, 1),
                                             "disk_gib": round(per_item["disk_bytes"] * items / 2 ** 30, 1),
                                             "embed_and_index_h": round(per_item["build_s"] * items / 3600, 1)}
                              for items in PROJECTED}}
    return projected


def ratios_to_first(sizes: list[dict]) -> dict:
    """The issue's in-memory targets as ratios to the smallest size: one query's p50, embedding + indexing."""
    def build_s(size: dict) -> float:
        return size["embed"]["seconds"]["embed"] + size["in_memory"]["write_and_index"]["seconds"]

    first = sizes[0]
    return {f"{size['items']:,}": {
        "query_p50_vs_first": round(size["in_memory"]["open_and_search"]["query_p50_ms"]
                                    / first["in_memory"]["open_and_search"]["query_p50_ms"], 2),
        "embed_and_index_vs_first": round(build_s(size) / build_s(first), 2)} for size in sizes}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--items", default="60000,250000,1000000", help="catalogue sizes, comma-separated")
    parser.add_argument("--home", default=os.environ.get("FASHION_SIM_HOME", "data"),
                        help="a published Fashion-MNIST data home whose model embeds (read only)")
    parser.add_argument("--mirror", default=None, help="the Fashion-MNIST files (default: FASHION_MNIST_MIRROR)")
    parser.add_argument("--queries", type=int, default=1000)
    args = parser.parse_args(argv)
    mirror = str(mirror_dir(args.mirror))
    with tempfile.TemporaryDirectory(prefix="benchmark-scale-") as scratch:
        sizes = []
        for size in sorted(int(size) for size in args.items.split(",")):
            sizes.append(measure(args.home, mirror, size, Path(scratch), args.queries))
            print(json.dumps(sizes[-1]), flush=True, file=sys.stderr)
    print(json.dumps({"benchmark": "scale", "machine": machine(), "k": K, "sizes": sizes,
                      "in_memory_ratios_to_first_size": ratios_to_first(sizes), "projected": projections(sizes[-1])}, indent=2))


if __name__ == "__main__":
    main()
