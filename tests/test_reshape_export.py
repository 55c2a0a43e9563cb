"""reshape (idx -> validated arrays) and export (class-balanced gallery of PNGs)."""

from __future__ import annotations

import gzip
import io
import json
import struct
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from storage.dataset import FASHION_MNIST
from storage.home import GALLERY_INDEX
from storage.objects import LocalStore
from tasks import reshape
from tasks.export import export_gallery
from tasks.reshape import (DatasetFormatError, SPLITS, read_idx_images, read_idx_labels,
                           reshape_dataset)
from tasks.sample import balanced_indices
from tests.tiny_data import idx_images, idx_labels, write_tiny_mirror


@pytest.fixture
def raw(tmp_path) -> Path:
    folder = tmp_path / "raw"
    write_tiny_mirror(folder)
    return folder


def write(path: Path, payload: bytes) -> Path:
    path.write_bytes(payload)
    return path


def test_idx_files_parse_to_images_and_labels(tmp_path):
    images = np.arange(3 * 28 * 28, dtype=np.uint32).reshape(3, 28, 28).astype(np.uint8)
    parsed = read_idx_images(write(tmp_path / "i.gz", idx_images(images)))
    assert parsed.shape == (3, 28, 28, 1) and parsed.dtype == np.uint8
    np.testing.assert_array_equal(parsed[..., 0], images)
    labels = read_idx_labels(write(tmp_path / "l.gz", idx_labels(np.array([0, 9, 4]))))
    assert labels.tolist() == [0, 9, 4] and labels.dtype == np.uint8


@pytest.mark.parametrize("payload, problem", [
    (gzip.compress(struct.pack(">IIII", 2049, 1, 28, 28) + bytes(784)), "magic 2049"),
    (gzip.compress(struct.pack(">IIII", 2051, 1, 32, 32) + bytes(1024)), "32x32"),
    (gzip.compress(struct.pack(">IIII", 2051, 2, 28, 28) + bytes(784)), "784 pixel bytes for 2 images"),
    (gzip.compress(b"\x00\x00\x08"), "too short"),
    (idx_images(np.zeros((2, 28, 28), np.uint8))[:-20], "gzip"),
    (b"plain text, not gzip", "gzip"),
])
def test_malformed_image_files_are_a_clear_format_error(tmp_path, payload, problem):
    with pytest.raises(DatasetFormatError, match=problem) as caught:
        read_idx_images(write(tmp_path / "bad-images.gz", payload))
    assert "bad-images.gz" in str(caught.value)


@pytest.mark.parametrize("payload, problem", [
    (gzip.compress(struct.pack(">II", 2051, 2) + bytes(2)), "magic 2051"),
    (gzip.compress(struct.pack(">II", 2049, 5) + bytes(2)), "does not match 5 labels"),
    (gzip.compress(struct.pack(">II", 2049, 3) + bytes([1, 10, 2])), "label 10 outside 0..9"),
    (gzip.compress(b"\x00\x00"), "too short"),
])
def test_malformed_label_files_are_a_clear_format_error(tmp_path, payload, problem):
    with pytest.raises(DatasetFormatError, match=problem):
        read_idx_labels(write(tmp_path / "bad-labels.gz", payload))


def test_reshape_builds_validated_arrays(raw, tmp_path):
    arrays = reshape_dataset(raw, LocalStore(tmp_path))
    for split, per_class in (("train", 40), ("test", 10)):
        images, labels = arrays.load(split)
        assert images.shape == (per_class * FASHION_MNIST.num_classes, 28, 28, 1) and images.dtype == np.uint8
        assert labels.dtype == np.uint8 and np.bincount(labels).tolist() == [per_class] * FASHION_MNIST.num_classes
    assert sorted(p.name for p in (tmp_path / "arrays").iterdir()) == [
        "source.json", "test_images.npy", "test_labels.npy", "train_images.npy", "train_labels.npy"]


def test_reshape_is_skipped_when_built_from_the_same_files(raw, tmp_path, monkeypatch):
    reshape_dataset(raw, LocalStore(tmp_path))
    with monkeypatch.context() as patched:
        patched.setattr(reshape, "read_idx_images", lambda path: pytest.fail("rebuilt needlessly"))
        reshape_dataset(raw, LocalStore(tmp_path))
    # a changed source file is noticed and the arrays rebuilt from it
    images_file = raw / SPLITS["test"][0]
    labels_file = raw / SPLITS["test"][1]
    write(images_file, idx_images(np.full((2, 28, 28), 7, np.uint8)))
    write(labels_file, idx_labels(np.array([3, 4])))
    images, labels = reshape_dataset(raw, LocalStore(tmp_path)).load("test")
    assert images.shape == (2, 28, 28, 1) and (images == 7).all() and labels.tolist() == [3, 4]


def test_reshape_refuses_image_and_label_counts_that_differ(raw, tmp_path):
    write(raw / SPLITS["train"][1], idx_labels(np.zeros(3, np.uint8)))
    with pytest.raises(DatasetFormatError, match="train: 400 images but 3 labels"):
        reshape_dataset(raw, LocalStore(tmp_path))


@pytest.mark.parametrize("total", [50, 55, 7, 1000])
def test_balanced_indices_share_classes_equally(total):
    labels = np.repeat(np.arange(FASHION_MNIST.num_classes), 30)
    chosen = balanced_indices(labels, total, seed=3)
    expected = min(total, len(labels))
    assert len(chosen) == len(set(chosen.tolist())) == expected
    counts = np.bincount(labels[chosen], minlength=FASHION_MNIST.num_classes)
    assert counts.max() - counts.min() <= 1
    np.testing.assert_array_equal(chosen, balanced_indices(labels, total, seed=3))


def test_balanced_indices_fill_from_other_classes_when_one_is_short():
    labels = np.concatenate([np.zeros(2), np.repeat(np.arange(1, FASHION_MNIST.num_classes), 10)]).astype(np.uint8)
    counts = np.bincount(labels[balanced_indices(labels, 50, seed=0)], minlength=FASHION_MNIST.num_classes)
    assert counts[0] == 2 and counts.sum() == 50 and counts[1:].max() - counts[1:].min() <= 1


def test_export_writes_pngs_that_decode_to_the_same_pixels(raw, tmp_path):
    images, labels = reshape_dataset(raw, LocalStore(tmp_path)).load("test")
    gallery = tmp_path / "gallery"
    entries = export_gallery(images, labels, LocalStore(tmp_path), gallery_size=30, seed=1, dataset=FASHION_MNIST)
    assert len(entries) == 30
    assert np.bincount([e["label"] for e in entries], minlength=FASHION_MNIST.num_classes).tolist() == [3] * FASHION_MNIST.num_classes
    assert json.loads((gallery / GALLERY_INDEX).read_text()) == entries
    for entry in entries:
        assert entry["path"].startswith(FASHION_MNIST.class_slugs[entry["label"]] + "/")
        assert labels[entry["test_index"]] == entry["label"]
        decoded = np.array(Image.open(io.BytesIO((gallery / entry["path"]).read_bytes())))
        np.testing.assert_array_equal(decoded, images[entry["test_index"], :, :, 0])
    pngs = sorted(p.relative_to(gallery).as_posix() for p in gallery.rglob("*.png"))
    assert pngs == sorted(e["path"] for e in entries)
