"""Incremental retrain against a full one on the real data: wall time and precision@1 of each.

1. the full pipeline publishes a release in a fresh data home (or --data-home already has one);
2. --new-labelled new labelled photos arrive: training images flipped left-right and shifted by a
   pixel (new content, known class, never the test images), dropped into incoming/<class>/ and
   re-indexed;
3. the incremental retrain (flows/retrain.py, its default budget) fine-tunes the live model on them;
4. a full pipeline run from scratch on the same catalogue (what the weekly reset does; gated as usual).
Every step runs as `python -m flows.<name>` in its own process, as a scheduled run would.
Prints one JSON object.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from benchmarks.common import load_split, machine, mirror_dir
from storage.dataset import FASHION_MNIST
from storage.home import DataHome
from storage.images import encode_png
from storage.releases import latest_release_id


def run_flow(module: str, *args: str) -> tuple[dict, float]:
    """Run `python -m <module> <args>`; returns (its printed JSON result, wall seconds)."""
    started = time.perf_counter()
    done = subprocess.run([sys.executable, "-m", module, *args], capture_output=True, text=True,
                          env=os.environ.copy())
    seconds = time.perf_counter() - started
    if done.returncode != 0:
        raise SystemExit(f"{module} failed:\n{done.stderr[-3000:]}")
    output = "\n" + done.stdout
    return json.loads(output[output.rindex("\n{") + 1:]), round(seconds, 1)


def drop_new_labelled(home: DataHome, images: np.ndarray, labels: np.ndarray, count: int, seed: int) -> None:
    rng = np.random.default_rng(seed)
    for index in rng.choice(len(images), size=count, replace=False):
        shifted = np.roll(images[index].reshape(FASHION_MNIST.pixel_shape)[:, ::-1], 1, axis=1)
        folder = home.incoming / FASHION_MNIST.class_slugs[int(labels[index])]
        folder.mkdir(parents=True, exist_ok=True)
        (folder / f"photo-{index:05d}.png").write_bytes(encode_png(shifted))


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.retrain", description=__doc__.split("\n\n")[0])
    parser.add_argument("--mirror", default="", help="folder with the four .gz files")
    parser.add_argument("--data-home", default="",
                        help="data home to use (kept; step 1 is skipped if it has a release); default: a temporary one")
    parser.add_argument("--new-labelled", type=int, default=1000, help="new labelled photos dropped before the retrain")
    parser.add_argument("--seed", type=int, default=0, help="which training images become the new photos")
    parser.add_argument("--skip-full-after", action="store_true", help="skip step 4 (the second full run)")
    args = parser.parse_args(argv)
    folder = mirror_dir(args.mirror)
    with tempfile.TemporaryDirectory() as scratch:
        home = DataHome.from_env(args.data_home or Path(scratch) / "home").ensure()
        common = ["--data-home", str(home.root)]
        result: dict = {"machine": machine(), "new_labelled": args.new_labelled}
        if latest_release_id(home) is None:
            initial, seconds = run_flow("flows.pipeline", *common, "--mirror", str(folder))
            result["full_initial"] = {"seconds": seconds, "train_seconds": initial["train_seconds"],
                                      "precision@1": initial["metrics"]["precision@1"]}
        images, labels = load_split(folder, "train")
        drop_new_labelled(home, images, labels, args.new_labelled, args.seed)
        reindexed, seconds = run_flow("flows.reindex", *common, "--settle-seconds", "0")
        result["reindex"] = {"seconds": seconds, "indexed": reindexed["indexed"], "rejected": reindexed["rejected"]}
        incremental, seconds = run_flow("flows.retrain", *common)
        result["incremental_retrain"] = {
            "seconds": seconds, "train_seconds": incremental.get("train_seconds"),
            "precision@1": incremental.get("metrics", {}).get("precision@1"),
            "published": incremental["published"], "gate": incremental.get("gate", {}).get("reason")}
        if not args.skip_full_after:
            full, seconds = run_flow("flows.pipeline", *common, "--mirror", str(folder))
            result["full_retrain"] = {"seconds": seconds, "train_seconds": full["train_seconds"],
                                      "precision@1": full["metrics"]["precision@1"], "published": full["published"]}
    print(json.dumps(result, indent=2))
    return result


if __name__ == "__main__":
    main()
