"""Helpers shared by the benchmark scripts: the real data, timing, and the machine they ran on."""

from __future__ import annotations

import os
import platform
import statistics
import time
from pathlib import Path

import numpy as np

from tasks.reshape import SPLITS, read_idx_images, read_idx_labels

DEFAULT_MIRROR = Path(__file__).resolve().parents[2] / "shared" / "data" / "fashion-mnist"


def mirror_dir(mirror: str | None) -> Path:
    folder = Path(mirror or os.environ.get("FASHION_MNIST_MIRROR") or DEFAULT_MIRROR)
    if not (folder / SPLITS["train"][0]).exists():
        raise SystemExit(f"real Fashion-MNIST files not found in {folder}; pass --mirror or set FASHION_MNIST_MIRROR")
    return folder


def load_split(folder: Path, split: str) -> tuple[np.ndarray, np.ndarray]:
    images_file, labels_file = SPLITS[split]
    return read_idx_images(folder / images_file), read_idx_labels(folder / labels_file)


def machine() -> dict:
    return {"cpus": os.cpu_count(), "processor": platform.processor() or platform.machine(),
            "python": platform.python_version(), "platform": platform.platform(terse=True)}


def median_ms(fn, repeats: int, warmup: int = 5) -> float:
    for _ in range(warmup):
        fn()
    samples = []
    for _ in range(repeats):
        started = time.perf_counter()
        fn()
        samples.append((time.perf_counter() - started) * 1000)
    return statistics.median(samples)
