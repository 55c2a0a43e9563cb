"""The store on a local folder against the store on S3 (a SeaweedFS server on this machine, started by
the benchmark), in one run: the pipeline on Fashion-MNIST, opening its release, one query, and a
re-index of --new dropped images into synthetic stores of each --sizes items (benchmarks/reindex.py's).
Prints one JSON object; each S3 figure also as a ratio to the local one.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path

import numpy as np

from benchmarks.common import machine, median_ms
from benchmarks.reindex import drop_pngs, synthetic_store
from storage.home import DataHome
from storage.releases import load_release
from storage.runtime import load_tensorflow
from tasks.train import TrainConfig, build_model
from tests.seaweedfs import seaweedfs

KINDS = ("local", "s3")


def home_of(kind: str, workdir: Path, name: str) -> DataHome:
    """A new home of `kind` named `name`: a folder of `workdir`, or a prefix of the S3 bucket."""
    incoming = workdir / f"{kind}-{name}-drops" / "incoming"
    if kind == "local":
        return DataHome.from_env(workdir / f"local-{name}", incoming).ensure()
    return DataHome.from_env(f"s3://{os.environ['S3_BUCKET']}/{name}", incoming).ensure()


def open_and_query(home: DataHome, repeats: int) -> dict:
    """Opening the live release (median of 3, each a fresh load) and one query through Release.search."""
    opened = []
    for _ in range(3):
        started = time.perf_counter()
        release = load_release(home)
        release.embed(release.items.images[:1])  # the model too: what a page or service does before answering
        opened.append(time.perf_counter() - started)
    queries, turn = release.items.images[:repeats], iter(range(1 << 62))
    return {"open_release_s": round(float(np.median(opened)), 3),
            "one_query_ms": round(median_ms(lambda: release.search(queries[next(turn) % len(queries)][None], k=10),
                                            repeats), 3)}


def pipeline_run(home: DataHome, epochs: int | None) -> float:
    from flows.pipeline import pipeline

    started = time.perf_counter()
    result = pipeline(data_home=home.location, **({"epochs": epochs} if epochs else {}))
    if not result["published"]:
        raise SystemExit(f"the pipeline did not publish: {result}")
    return time.perf_counter() - started


def reindex_run(home: DataHome, new: int, seed: int) -> float:
    from flows.reindex import reindex

    drop_pngs(home.incoming, new, seed=seed)
    started = time.perf_counter()
    outcome = reindex(data_home=home.location, settle_seconds=0, incoming=str(home.incoming))
    if outcome["indexed"] != new:
        raise SystemExit(f"expected {new} indexed, got {outcome}")
    return time.perf_counter() - started


def with_ratios(figures: dict[str, dict]) -> dict:
    """The figures per kind, and for each the S3 one divided by the local one."""
    ratios = {key: round(figures["s3"][key] / figures["local"][key], 2)
              for key in figures["local"] if figures["local"][key]}
    return {**figures, "s3_over_local": ratios}


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.store", description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[60_000, 120_000], help="items in the live index")
    parser.add_argument("--new", type=int, default=1000, help="images dropped into each store")
    parser.add_argument("--epochs", type=int, default=0, help="pipeline training epochs (default: the pipeline's)")
    parser.add_argument("--repeats", type=int, default=300, help="single queries timed (median reported)")
    parser.add_argument("--skip-pipeline", action="store_true", help="only the re-index figures")
    args = parser.parse_args(argv)
    if not os.environ.get("FASHION_MNIST_MIRROR") and not args.skip_pipeline:
        parser.error("set FASHION_MNIST_MIRROR to a folder with the four Fashion-MNIST files (nothing is downloaded)")

    similarity = build_model(TrainConfig().architecture, 64, (28, 28, 1))  # imports TensorFlow outside the timings
    model = load_tensorflow().keras.Model(similarity.inputs, similarity.outputs)
    result = {"machine": machine(), "load_average_1min": round(os.getloadavg()[0], 2), "new_images": args.new}
    with tempfile.TemporaryDirectory(prefix="benchmark-store-") as scratch:
        workdir = Path(scratch)
        (workdir / "seaweedfs").mkdir()
        with seaweedfs(workdir / "seaweedfs") as variables:
            os.environ.update(variables)
            os.environ["FASHION_SIM_CACHE"] = str(workdir / "cache")
            if not args.skip_pipeline:
                figures = {}
                for kind in KINDS:
                    home = home_of(kind, workdir, "pipeline")
                    figures[kind] = {"pipeline_s": round(pipeline_run(home, args.epochs or None), 1),
                                     **open_and_query(home, args.repeats)}
                result["pipeline"] = with_ratios(figures)
            result["reindex"] = []
            from flows.reindex import reindex

            started = time.perf_counter()  # Prefect's ephemeral server starts outside the measurements
            reindex(data_home=home_of("local", workdir, "warm-up").location, incoming=str(workdir / "none"))
            result["prefect_ephemeral_start_s"] = round(time.perf_counter() - started, 1)
            for size in args.sizes:
                figures = {}
                for kind in KINDS:
                    home = home_of(kind, workdir, f"store-{size}")
                    started = time.perf_counter()
                    synthetic_store(home, size, model, seed=size)
                    build = time.perf_counter() - started
                    figures[kind] = {"store_build_s": round(build, 1),
                                     "reindex_s": round(reindex_run(home, args.new, seed=size + 1), 2),
                                     "open_release_s": open_and_query(home, 20)["open_release_s"]}
                result["reindex"].append({"index_items": size, **with_ratios(figures)})
    print(json.dumps(result, indent=2))
    return result


if __name__ == "__main__":
    main()
