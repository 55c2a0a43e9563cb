"""Cost of one query after many drop-folder re-index runs (issue 12 item 4): one query after 50
re-index runs of 10 images must cost at most 1.5x what it costs right after a full pipeline, in the
same run.

Each re-index publishes a release with one more small segment, and a query searches every segment
(the big one through its HNSW graph, small ones exactly) before merging, so the cost of a query grows
with the number of segments unless they are merged. This copies a data home (release files
hard-linked, everything else copied, incoming/ left empty: the home given is never changed), times
one query on its live release, runs the re-index flow --runs times in this process, each time
dropping --images-per-run new PNGs (mirrored, lightly noised test images, so none is a duplicate),
and times one query on the release that leaves. One query is timed as Release.search (pixels in,
10 nearest items out: embedding and search) and as Release.nearest alone (search only), medians over
--repeats different test images. This VM's speed drifts by about 20% from run to run, so both
releases are then timed again in --rounds alternating rounds, and the ratios come from those.
Prints one JSON object; the copy is deleted at the end.
"""

from __future__ import annotations

import argparse
import contextlib
import itertools
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from benchmarks.common import copy_home, machine, median_ms
from storage.dataset import FASHION_MNIST
from storage.home import DataHome
from storage.images import encode_png
from storage.releases import Release, load_release
from tasks.reshape import Arrays

K = 10
TARGET_RATIO = 1.5
FIGURES = ("search_ms", "nearest_ms")


def drop_pngs(incoming: Path, images: np.ndarray, labels: np.ndarray, run: int, rng: np.random.Generator) -> None:
    """Write each image mirrored, with noise of 0-3 grey levels, as a PNG in its class folder."""
    for number, (pixels, label) in enumerate(zip(images, labels)):
        noisy = np.fliplr(pixels).astype(np.int16) + rng.integers(0, 4, size=pixels.shape)
        folder = incoming / FASHION_MNIST.class_slugs[int(label)]
        folder.mkdir(parents=True, exist_ok=True)
        (folder / f"segments-{run:03d}-{number:03d}.png").write_bytes(encode_png(np.clip(noisy, 0, 255)))


def one_query_ms(release: Release, queries: np.ndarray, repeats: int) -> dict[str, float]:
    """Median ms of one query, each timed call taking the next test image: search and nearest."""
    embeddings = release.embed(queries)
    turn = itertools.count()
    search = median_ms(lambda: release.search(queries[next(turn) % len(queries)][None], K), repeats)
    turn = itertools.count()
    nearest = median_ms(lambda: release.nearest(embeddings[next(turn) % len(embeddings)][None], K), repeats)
    return {"search_ms": search, "nearest_ms": nearest}


def segment_counts(release: Release) -> dict[str, int]:
    return {"items": len(release.items), "segments": len(release.manifest["segments"]),
            "segments_with_graph": sum(segment.graph is not None for segment in release.index.segments)}


def rounded(timings: dict[str, float]) -> dict[str, float]:
    return {name: round(value, 4) for name, value in timings.items()}


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.segments", description=__doc__.split("\n\n")[0])
    parser.add_argument("--data-home", required=True, help="data home with a published release (left unchanged)")
    parser.add_argument("--runs", type=int, default=50, help="re-index runs")
    parser.add_argument("--images-per-run", type=int, default=10, help="new PNGs dropped before each run")
    parser.add_argument("--repeats", type=int, default=300, help="single queries timed per median")
    parser.add_argument("--rounds", type=int, default=6, help="alternating rounds timing both releases at the end")
    args = parser.parse_args(argv)
    source = DataHome.from_env(args.data_home)
    test_images, test_labels = Arrays(source.store).load("test")
    test_images = test_images.reshape(-1, *FASHION_MNIST.pixel_shape)
    queries = test_images[: args.repeats]
    dropped = args.runs * args.images_per_run
    if dropped > len(test_images):
        raise SystemExit(f"--runs x --images-per-run is {dropped}, more than the {len(test_images)} test images")
    drop_images, drop_labels = test_images[-dropped:], test_labels[-dropped:]  # the end of the test set
    rng = np.random.default_rng(0)

    with tempfile.TemporaryDirectory(prefix="benchmark-segments-") as scratch:
        home = copy_home(source, Path(scratch) / "home")
        pipeline_release = load_release(home)
        after_pipeline = one_query_ms(pipeline_release, queries, args.repeats)

        from flows.reindex import reindex  # imports Prefect

        started = time.perf_counter()
        reindex(data_home=str(home.root))  # nothing to index: starts Prefect's ephemeral server outside the runs
        prefect_seconds = time.perf_counter() - started
        run_seconds = []
        for run in range(args.runs):
            batch = slice(run * args.images_per_run, (run + 1) * args.images_per_run)
            drop_pngs(home.incoming, drop_images[batch], drop_labels[batch], run, rng)
            started = time.perf_counter()
            outcome = reindex(data_home=str(home.root), settle_seconds=0)
            run_seconds.append(time.perf_counter() - started)
            if outcome["indexed"] != args.images_per_run:
                raise SystemExit(f"re-index run {run + 1}: expected {args.images_per_run} indexed, got {outcome}")

        reindexed_release = load_release(home)
        after_reindex = one_query_ms(reindexed_release, queries, args.repeats)

        # both releases opened afresh and timed in turn, the one timed first alternating from round to round
        both = [load_release(home, pipeline_release.release_id), load_release(home, reindexed_release.release_id)]
        rounds = []
        for number in range(args.rounds):
            order = both if number % 2 == 0 else both[::-1]
            timed = {release.release_id: one_query_ms(release, queries, args.repeats) for release in order}
            rounds.append([timed[release.release_id] for release in both])
        pipeline_segments, reindex_segments = segment_counts(pipeline_release), segment_counts(reindexed_release)

    ratios = {name: statistics.median(after[name] / before[name] for before, after in rounds) for name in FIGURES}
    return {
        "machine": machine(), "load_average_1min": round(os.getloadavg()[0], 2), "data_home": str(source.root),
        "settings": {"runs": args.runs, "images_per_run": args.images_per_run, "repeats": args.repeats,
                     "rounds": args.rounds, "k": K},
        "release_ids": {"after_pipeline": pipeline_release.release_id,
                        "after_reindex": reindexed_release.release_id},
        "after_pipeline": {**rounded(after_pipeline), **pipeline_segments},
        "after_reindex": {**rounded(after_reindex), **reindex_segments},
        "prefect_start_seconds": round(prefect_seconds, 2),
        "reindex_run_mean_seconds": round(statistics.mean(run_seconds), 3),
        "interleaved": {
            "after_pipeline": rounded({name: statistics.median(r[0][name] for r in rounds) for name in FIGURES}),
            "after_reindex": rounded({name: statistics.median(r[1][name] for r in rounds) for name in FIGURES}),
            "ratio_median_of_rounds": {name: round(value, 3) for name, value in ratios.items()},
        },
        "target_ratio": TARGET_RATIO,
        "search_within_target": ratios["search_ms"] <= TARGET_RATIO,
    }


if __name__ == "__main__":
    with contextlib.redirect_stdout(sys.stderr):  # anything the flow or LiteRT prints stays off stdout
        figures = main()
    print(json.dumps(figures, indent=2))
