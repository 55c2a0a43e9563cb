"""Query latency on a published release: one query and a 10,000-query batch through the code the page
and `python -m ui.search` use (Release.search), against TF Similarity's single_lookup on the same
model and catalogue, with the approximate index's recall@10 checked against exact search. The batch
figures are medians of --batch-repeats runs; end to end returns SearchResults (columns per query).
Prints one JSON object. Needs a published release (FASHION_SIM_HOME or --data-home).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import sys
import time

import numpy as np

from benchmarks.common import machine, median_ms
from storage.dataset import FASHION_MNIST
from storage.home import DataHome
from storage.images import encode_png, normalise_image
from storage.releases import load_release
from tasks.reshape import Arrays


def tfsim_reference(release, queries: np.ndarray, repeats: int) -> dict:
    """Index the release's catalogue with TF Similarity (its default index) and time single_lookup."""
    from storage.runtime import load_tensorflow_similarity

    tfsim = load_tensorflow_similarity()
    model = tfsim.models.SimilarityModel(release.model.inputs, release.model.outputs)
    model.create_index(distance="cosine")  # what compile() sets up in the article: nmslib HNSW, cosine
    started = time.perf_counter()
    model.index(release.items.images[..., None].astype("float32"), release.items.labels.astype("int32"),
                verbose=0)
    index_s = time.perf_counter() - started
    sample = queries[:, :, :, None].astype("float32")
    counter = iter(range(10**9))
    single = median_ms(lambda: model.single_lookup(sample[next(counter) % len(sample)], k=10), repeats)
    approx = [[n.label for n in model.single_lookup(sample[i], k=10)] for i in range(min(200, len(sample)))]
    return {"index_seconds": round(index_s, 2), "single_lookup_median_ms": round(single, 3), "labels": approx}


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.latency", description=__doc__.split("\n\n")[0])
    parser.add_argument("--data-home", default="", help="data home with a published release")
    parser.add_argument("--repeats", type=int, default=300, help="single queries timed (median reported)")
    parser.add_argument("--batch", type=int, default=10000, help="queries in the batch measurement")
    parser.add_argument("--batch-repeats", type=int, default=5, help="batch measurements timed (median reported)")
    parser.add_argument("--skip-tfsim", action="store_true", help="do not measure TF Similarity's single_lookup")
    args = parser.parse_args(argv)
    home = DataHome.from_env(args.data_home or None)
    started = time.perf_counter()
    release = load_release(home)
    release.embed(np.zeros((1, *FASHION_MNIST.pixel_shape), np.uint8))
    load_s = time.perf_counter() - started
    test_x, test_y = Arrays(home.store).load("test")
    queries = test_x.reshape(-1, *FASHION_MNIST.pixel_shape)[: args.batch]
    pngs = [encode_png(q) for q in queries[:1000]]
    counter = iter(range(10**9))
    single_pixels = median_ms(lambda: release.search(queries[next(counter) % len(queries)][None], 10), args.repeats)
    single_png = median_ms(
        lambda: release.search(normalise_image(pngs[next(counter) % len(pngs)]).pixels[None], 10), args.repeats)

    embedded = release.embed(queries)
    distances, rows = release.nearest(embedded, 10)
    results = release.search(queries, 10)  # columns of item ids, labels, distances (storage.releases)
    batch_runs = args.batch_repeats
    embed_s = median_ms(lambda: release.embed(queries), batch_runs, warmup=0) / 1000
    search_s = median_ms(lambda: release.nearest(embedded, 10), batch_runs, warmup=0) / 1000
    end_to_end_s = median_ms(lambda: release.search(queries, 10), batch_runs, warmup=0) / 1000
    _, exact_rows = release.nearest(embedded, 10, exact=True)
    graph_recall = np.mean([len(set(a) & set(b)) / 10 for a, b in zip(rows, exact_rows)])

    result = {
        "machine": machine(), "release_id": release.release_id, "indexed_items": int(len(release.items)),
        "load_release_seconds": round(load_s, 2),
        "single_query_median_ms": round(single_pixels, 3),
        "single_query_from_png_median_ms": round(single_png, 3),
        "batch_queries": int(len(queries)),
        "batch_embed_seconds": round(embed_s, 3), "batch_search_seconds": round(search_s, 3),
        "batch_end_to_end_seconds": round(end_to_end_s, 3),
        "precision@1_of_batch": float((results.labels[:, 0] == test_y[: len(queries)]).mean()),
        "search_recall@10_vs_exact": round(float(graph_recall), 4),
    }
    if not args.skip_tfsim:
        reference = tfsim_reference(release, queries, min(args.repeats, 200))
        exact_labels = release.items.labels[rows[: len(reference["labels"])]]
        result["tfsim_index_seconds"] = reference["index_seconds"]
        result["tfsim_single_lookup_median_ms"] = reference["single_lookup_median_ms"]
        result["speedup_vs_single_lookup"] = round(reference["single_lookup_median_ms"] / single_pixels, 1)
        result["tfsim_label_agreement_with_exact@10"] = float(
            (np.array(reference["labels"]) == exact_labels).mean())
    return result


if __name__ == "__main__":
    with contextlib.redirect_stdout(sys.stderr):  # TF Similarity prints its progress on stdout
        figures = main()
    print(json.dumps(figures, indent=2))
