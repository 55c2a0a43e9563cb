"""Where Lance's index takes over (issue 16): the in-memory path and the on-demand path on the same
catalogues, in one run.

Takes a published Fashion-MNIST home's live release (its items and embeddings; the home is never
changed), grows it to each of --sizes by copies (pixels shifted by one to three columns, embeddings
perturbed by noise of sigma 0.05 and renormalised: near their originals, never equal), and writes each
catalogue twice into a scratch store as one segment: in memory (an HNSW graph) and on demand (Lance's
IVF_HNSW_SQ index; storage.search_index.write_segment with the memory limit set to 0 and to the
maximum). Each path is then opened in a fresh process, which reports: seconds to open, the memory
the open added (peak RSS), one query's p50 / p99 (SegmentedIndex.nearest, in process, --queries
queries that are perturbed catalogue vectors), recall@10 against exact search, and the time to read
the pixels of ten rows (what the page shows for an answer). With --s3, the on-demand path also on an
S3 store (SeaweedFS on this machine, started and stopped here). Prints one JSON object.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import json
import os
import tempfile
import time
from pathlib import Path

import numpy as np

from benchmarks.common import in_child, machine, peak_resident_mib, resident_bytes
from storage.catalog import CatalogItems
from storage.home import DataHome
from storage.objects import open_store
from storage.releases import load_release
from storage.search_index import (IN_MEMORY_LIMIT_VARIABLE, IN_MEMORY_MAX_BYTES, exact_knn, in_memory_bytes,
                                  load_segments, write_segment)
from tests.seaweedfs import seaweedfs

K = 10
PATHS = {"in_memory": str(1 << 62), "on_demand": "0"}  # FASHION_SIM_IN_MEMORY_BYTES for each


def grown(items: CatalogItems, embeddings: np.ndarray, size: int, seed: int = 0) -> tuple[CatalogItems, np.ndarray]:
    """`size` items: the originals, then shifted, perturbed copies of them (see the module docstring)."""
    rng = np.random.default_rng(seed)
    parts, vectors, copy = [items], [embeddings], 0
    while sum(len(part) for part in parts) < size:
        copy += 1
        shifted = CatalogItems(item_ids=items.item_ids + copy * (int(items.item_ids.max()) + 1), labels=items.labels,
                               images=np.roll(items.images, 1 + copy % 3, axis=2), paths=items.paths,
                               sources=items.sources, displays=items.displays, metadata=items.metadata)
        noisy = embeddings + rng.normal(0, 0.05, embeddings.shape).astype(np.float32)
        parts.append(shifted)
        vectors.append(noisy / np.linalg.norm(noisy, axis=1, keepdims=True))
    joined = CatalogItems.concatenate(parts).subset(np.arange(size))
    return joined, np.concatenate(vectors)[:size].astype(np.float32)


def timed_queries(index, queries: np.ndarray, truth: np.ndarray) -> dict:
    """One query at a time: p50 / p99 and recall@K against `truth` (exact rows); and the found rows."""
    samples, found = [], []
    for query in queries:
        started = time.perf_counter()
        _, rows = index.nearest(query[None], K)
        samples.append(time.perf_counter() - started)
        found.append(rows[0])
    recall = float(np.mean([len(set(got) & set(want)) / K for got, want in zip(found, truth)]))
    return {"query_p50_ms": round(float(np.percentile(samples, 50)) * 1000, 3),
            "query_p99_ms": round(float(np.percentile(samples, 99)) * 1000, 3),
            "recall@10": round(recall, 4), "found": found}


def measure_open(uri: str, record: dict, shape: tuple, queries: np.ndarray, truth: np.ndarray,
                 ef_values: tuple[int, ...], result) -> None:
    """Runs in a fresh process: open the segment, search one query at a time and in one batch, read
    pixels, and (for a graph, `ef_values`) search again at each search width; figures into `result`."""
    for module in ("hnswlib", "lance"):  # imported before the clock starts, as in a serving process
        importlib.import_module(module)
    before = resident_bytes()
    started = time.perf_counter()
    items, _, index = load_segments(open_store(uri, Path(tempfile.mkdtemp())), [record], shape)
    opened = time.perf_counter() - started
    added = resident_bytes() - before
    index.nearest(queries[:5], K)  # warm up
    figures = timed_queries(index, queries, truth)
    found = figures.pop("found")
    started = time.perf_counter()
    index.nearest(queries, K)
    batch = len(queries) / (time.perf_counter() - started)
    started = time.perf_counter()
    for rows in found[:20]:
        items.images[rows]
    pixels_ms = (time.perf_counter() - started) / 20 * 1000
    sweep = []
    for ef in ef_values if index.graphs else ():
        for segment in index.graphs:
            segment.graph.set_ef(ef)
        sweep.append({"ef": ef, **{key: value for key, value in timed_queries(index, queries, truth).items()
                                   if key != "found"}})
    result.put({"open_s": round(opened, 3), "open_memory_mib": round(added / 2 ** 20, 1), **figures,
                "batch_queries_per_s": round(batch), "pixels_of_10_rows_ms": round(pixels_ms, 3),
                "peak_memory_mib": peak_resident_mib(),
                **({"ef_sweep": sweep} if sweep else {})})


def measure_size(items: CatalogItems, embeddings: np.ndarray, size: int, queries_count: int, scratch: Path,
                 s3_uri: str | None) -> dict:
    catalogue, vectors = grown(items, embeddings, size)
    rng = np.random.default_rng(1)
    queries = vectors[rng.choice(size, queries_count, replace=False)] + rng.normal(0, 0.02, (queries_count, vectors.shape[1]))
    queries = (queries / np.linalg.norm(queries, axis=1, keepdims=True)).astype(np.float32)
    truth = exact_knn(queries, vectors, K)[1]
    figures = {"items": size, "in_memory_bytes_estimate": in_memory_bytes(catalogue)}
    runs = [(path, limit, str(scratch / f"store-{size}")) for path, limit in PATHS.items()]
    if s3_uri:
        runs.append(("on_demand_s3", PATHS["on_demand"], f"{s3_uri}/store-{size}"))
    for number, (path, limit, uri) in enumerate(runs):
        os.environ[IN_MEMORY_LIMIT_VARIABLE] = limit
        started = time.perf_counter()
        record = write_segment(open_store(uri, scratch / "cache"), f"20260101T000000000000Z-{size}{number}",
                               catalogue, vectors, scratch)
        written = time.perf_counter() - started
        opened = in_child(measure_open, uri, record, catalogue.images.shape[1:], queries, truth, ())
        figures[path] = {"write_and_index_s": round(written, 2), **opened, "index": record.get("index", "hnsw")}
    return figures


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--home", default=os.environ.get("FASHION_SIM_HOME", "data"),
                        help="a published Fashion-MNIST data home (read only)")
    parser.add_argument("--sizes", default="60000,240000", help="catalogue sizes, comma-separated")
    parser.add_argument("--queries", type=int, default=300)
    parser.add_argument("--s3", action="store_true", help="also the on-demand path on an S3 store (SeaweedFS, started here)")
    args = parser.parse_args(argv)
    release = load_release(DataHome.from_env(Path(args.home)))
    embeddings = np.asarray(release.embeddings, np.float32)
    with tempfile.TemporaryDirectory(prefix="benchmark-lance-index-") as scratch, contextlib.ExitStack() as stack:
        s3_uri = None
        if args.s3:
            (Path(scratch) / "s3").mkdir()
            os.environ.update(stack.enter_context(seaweedfs(Path(scratch) / "s3")))
            s3_uri = f"s3://{os.environ['S3_BUCKET']}/lance-index"
        sizes = [measure_size(release.items, embeddings, int(size), args.queries, Path(scratch), s3_uri)
                 for size in args.sizes.split(",")]
    print(json.dumps({"benchmark": "lance_index", "machine": machine(), "k": K,
                      "in_memory_max_bytes": IN_MEMORY_MAX_BYTES, "sizes": sizes}, indent=2))


if __name__ == "__main__":
    main()
