"""Tiny generated Fashion-MNIST look-alikes: canonical idx .gz files whose classes are easy to learn."""

from __future__ import annotations

import gzip
import hashlib
import struct
from pathlib import Path

import numpy as np

FILES = {
    "train": ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz"),
    "test": ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"),
}


def class_images(labels: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Class c: a bright block whose position and shape depend on c, plus noise."""
    images = rng.integers(0, 40, size=(len(labels), 28, 28), dtype=np.int16)
    for i, label in enumerate(labels):
        row, col = 2 + 6 * (label // 4) + rng.integers(0, 2), 2 + 6 * (label % 4) + rng.integers(0, 2)
        height, width = 6 + (label % 3) * 2, 6 + (label % 2) * 3
        images[i, row: row + height, col: col + width] = rng.integers(180, 256)
    return np.clip(images, 0, 255).astype(np.uint8)


def idx_images(images: np.ndarray) -> bytes:
    return gzip.compress(struct.pack(">IIII", 2051, len(images), 28, 28) + images.tobytes())


def idx_labels(labels: np.ndarray) -> bytes:
    return gzip.compress(struct.pack(">II", 2049, len(labels)) + labels.astype(np.uint8).tobytes())


def write_tiny_mirror(folder: Path, per_class_train: int = 40, per_class_test: int = 10, seed: int = 0) -> Path:
    """Write the four files and an MD5SUMS for them into `folder`; returns the MD5SUMS path."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    sums = []
    for split, per_class in (("train", per_class_train), ("test", per_class_test)):
        labels = rng.permutation(np.repeat(np.arange(10), per_class)).astype(np.uint8)
        images_name, labels_name = FILES[split]
        for name, payload in ((images_name, idx_images(class_images(labels, rng))),
                              (labels_name, idx_labels(labels))):
            (folder / name).write_bytes(payload)
            sums.append(f"{hashlib.md5(payload).hexdigest()}  {name}")
    md5sums = folder / "MD5SUMS"
    md5sums.write_text("\n".join(sums) + "\n")
    return md5sums
