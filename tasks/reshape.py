"""reshape: idx .gz files -> numpy arrays (N, side, side, 1) uint8 + uint8 labels, validated; and the
training set registered in the catalogue (item ids 0..N-1) once.

The arrays are rebuilt only when the .gz files they came from change (their md5s are recorded in
arrays/source.json), so a second run costs a few milliseconds.
"""

from __future__ import annotations

import gzip
import io
import json
import struct
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from prefect import task
from prefect.cache_policies import NO_CACHE

from storage.catalog import DATASET_SOURCE, Catalog, CatalogItems
from storage.dataset import FASHION_MNIST
from storage.errors import UserError
from storage.home import ARRAYS
from tasks.download import md5_of
from tasks.logs import step_logger

SPLITS = {
    "train": ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz"),
    "test": ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"),
}
IMAGES_MAGIC, LABELS_MAGIC = 2051, 2049


class DatasetFormatError(UserError, ValueError):
    """An idx file is not what Fashion-MNIST files look like."""


@dataclass(frozen=True)
class Arrays:
    """The reshaped arrays in a store (storage/objects.py), under arrays/: never unpickled."""

    store: object

    @staticmethod
    def key(split: str, kind: str) -> str:
        return f"{ARRAYS}/{split}_{kind}.npy"

    def exists(self, split: str) -> bool:
        return all(self.store.exists(self.key(split, kind)) for kind in ("images", "labels"))

    def load(self, split: str) -> tuple[np.ndarray, np.ndarray]:
        return tuple(np.load(io.BytesIO(self.store.read_bytes(self.key(split, kind))), allow_pickle=False)
                     for kind in ("images", "labels"))

    def save(self, split: str, images: np.ndarray, labels: np.ndarray) -> None:
        for kind, array in (("images", images), ("labels", labels)):
            buffer = io.BytesIO()
            np.save(buffer, array, allow_pickle=False)
            self.store.write_bytes(self.key(split, kind), buffer.getvalue())


def _idx_bytes(path: Path, header_bytes: int) -> bytes:
    """The decompressed file, or DatasetFormatError when it is not gzip or too short for its header."""
    path = Path(path)
    compressed = path.read_bytes()
    try:
        data = gzip.decompress(compressed)
    except (OSError, EOFError) as error:  # not gzip, or a gzip stream cut short
        raise DatasetFormatError(f"{path.name}: not a complete gzip file ({error})") from None
    if len(data) < header_bytes:
        raise DatasetFormatError(f"{path.name}: {len(data)} bytes, too short for an idx header")
    return data


def read_idx_images(path: Path) -> np.ndarray:
    data = _idx_bytes(path, 16)
    magic, count, rows, cols = struct.unpack(">IIII", data[:16])
    if magic != IMAGES_MAGIC or (rows, cols) != FASHION_MNIST.pixel_shape:
        raise DatasetFormatError(f"{path.name}: magic {magic}, shape {rows}x{cols}; expected 2051 and 28x28")
    if len(data) != 16 + count * rows * cols:
        raise DatasetFormatError(f"{path.name}: {len(data) - 16} pixel bytes for {count} images")
    return np.frombuffer(data, dtype=np.uint8, offset=16).reshape(count, rows, cols, 1)


def read_idx_labels(path: Path) -> np.ndarray:
    data = _idx_bytes(path, 8)
    magic, count = struct.unpack(">II", data[:8])
    if magic != LABELS_MAGIC or len(data) != 8 + count:
        raise DatasetFormatError(f"{path.name}: magic {magic} or length does not match {count} labels")
    labels = np.frombuffer(data, dtype=np.uint8, offset=8)
    if labels.size and labels.max() >= FASHION_MNIST.num_classes:
        raise DatasetFormatError(f"{path.name}: label {labels.max()} outside 0..{FASHION_MNIST.num_classes - 1}")
    return labels


def reshape_dataset(raw_dir: Path, store) -> Arrays:
    """The idx files of `raw_dir` as arrays in `store` (kept when already built from the same files)."""
    log = step_logger()
    arrays = Arrays(store)
    stamp_key = f"{ARRAYS}/source.json"
    sources = {name: md5_of(Path(raw_dir) / name) for pair in SPLITS.values() for name in pair}
    if (store.exists(stamp_key) and json.loads(store.read_bytes(stamp_key)) == sources
            and all(arrays.exists(split) for split in SPLITS)):
        log.info("reshape: arrays already built from these files")
        return arrays
    for split, (images_file, labels_file) in SPLITS.items():
        images = read_idx_images(Path(raw_dir) / images_file)
        labels = read_idx_labels(Path(raw_dir) / labels_file)
        if len(images) != len(labels):
            raise DatasetFormatError(f"{split}: {len(images)} images but {len(labels)} labels")
        arrays.save(split, images, labels)
        log.info("reshape %s: %s images, classes %s", split, images.shape, np.bincount(labels).tolist())
    store.write_bytes(stamp_key, json.dumps(sources, sort_keys=True).encode())
    return arrays


@task(name="reshape", cache_policy=NO_CACHE)
def reshape_task(raw_dir: Path, store) -> Arrays:
    return reshape_dataset(raw_dir, store)


def catalogue_dataset(catalog: Catalog, images: np.ndarray, labels: np.ndarray, release_id: str) -> int:
    """Add the training set to the catalogue once (item ids from the next free one; 0..N-1 in a new
    store). Returns how many rows were added."""
    if catalog.count_source(DATASET_SOURCE):
        return 0
    start, count = catalog.next_item_id(), len(images)
    catalog.add(CatalogItems(item_ids=np.arange(start, start + count, dtype=np.int64),
                             labels=np.asarray(labels, dtype=np.int16),
                             images=images.reshape(count, *images.shape[1:3]),
                             paths=np.array([f"fashion-mnist/train/{i}" for i in range(count)]),
                             sources=np.full(count, DATASET_SOURCE)), release_id)
    return count
