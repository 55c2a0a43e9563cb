"""The drop-folder re-index flow on a copy of the tiny published release: what gets indexed, what is
rejected and why, what is left waiting, and two writers at once."""

from __future__ import annotations

import io
import threading
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from flows.reindex import reindex
from storage.catalog import Catalog
from storage.dataset import FASHION_MNIST
from storage.images import encode_png, normalise_image
from storage.lock import StoreBusyError, writer_lock
from storage.releases import latest_release_id, load_release
from tasks.reshape import Arrays
from tests.tiny_data import class_images


def drop_labelled(incoming: Path, folder: str, label: int, count: int, seed: int) -> list[Path]:
    """`count` new images of tiny class `label` as PNGs in incoming/<folder>/."""
    images = class_images(np.full(count, label), np.random.default_rng(seed))
    paths = []
    for i, image in enumerate(images):
        path = incoming / folder / f"new-{seed}-{i}.png"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(encode_png(image))
        paths.append(path)
    return paths


def jpeg_of(pixels: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(pixels, mode="L").save(buffer, format="JPEG", quality=95)
    return buffer.getvalue()


def catalogue_agrees_with_release(home) -> None:
    release = load_release(home)
    catalogued = Catalog(home.catalog, FASHION_MNIST).load()
    assert sorted(release.items.item_ids.tolist()) == catalogued.item_ids.tolist()
    assert len(release.embeddings) == len(release.items)


def test_reindex_indexes_valid_drops_and_rejects_the_rest_with_reasons(published_home):
    home = published_home
    live = load_release(home)
    incoming = home.incoming
    labelled = drop_labelled(incoming, "dress", 3, 3, seed=101) + drop_labelled(incoming, "7", 7, 2, seed=102)
    rng = np.random.default_rng(103)
    (incoming / "Ankle Boot").mkdir()
    (incoming / "Ankle Boot" / "photo.JPG").write_bytes(jpeg_of(class_images(np.array([9]), rng)[0]))
    (incoming / "loose.png").write_bytes(encode_png(class_images(np.array([1]), rng)[0]))  # unlabelled
    train_images, _ = Arrays(home.store).load("train")
    (incoming / "known.png").write_bytes(encode_png(train_images[5]))  # catalogue item 5 (training set)
    (incoming / "zz-copy-of-new.png").write_bytes(labelled[0].read_bytes())  # same content, later in the run
    (incoming / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\nnot really")
    (incoming / "notes.txt").write_text("hello")
    (incoming / "shoes").mkdir()
    (incoming / "shoes" / "x.png").write_bytes(encode_png(class_images(np.array([7]), rng)[0]))
    (incoming / "dress" / "deeper").mkdir()
    (incoming / "dress" / "deeper" / "y.png").write_bytes(encode_png(class_images(np.array([3]), rng)[0]))
    outside = home.root / "outside.png"
    outside.write_bytes(encode_png(class_images(np.array([2]), rng)[0]))
    (incoming / "link.png").symlink_to(outside)
    (incoming / ".hidden.png").write_bytes(outside.read_bytes())
    (incoming / "upload.png.part").write_bytes(b"half")
    (incoming / "coat").mkdir()  # empty class folder: left alone

    result = reindex(data_home=str(home.root), settle_seconds=0)

    assert result["published"], result
    assert result["seen"] == result["indexed"] + result["rejected"] + result["waiting"] == 16
    assert (result["indexed"], result["labelled"], result["unlabelled"]) == (7, 6, 1)
    assert (result["rejected"], result["waiting"]) == (7, 2)
    release_id = result["release_id"]
    assert latest_release_id(home) == release_id != live.release_id
    release = load_release(home)
    assert release.manifest["kind"] == "reindex" and release.manifest["parent"] == live.release_id
    assert release.manifest["model"] == live.manifest["model"]
    assert release.metrics["match_score"] == live.metrics["match_score"]  # same network: its score carries over
    assert release.manifest["num_items"] == len(live.items) + 7
    # the live segments and model are shared, not copied: the release adds one segment of the new items
    assert release.manifest["segments"][:-1] == live.manifest["segments"]
    assert release.manifest["segments"][-1]["rows"] == 7
    assert release.manifest["model_release"] == live.manifest["model_release"]
    catalogue_agrees_with_release(home)

    processed = home.processed / release_id
    for path in labelled:
        moved = processed / path.relative_to(incoming)
        assert moved.exists() and not path.exists()
        row = np.flatnonzero(release.items.paths == home.relative(moved))
        assert row.size == 1 and release.items.sources[row[0]] == "drop"
        nearest = release.search(normalise_image(moved.read_bytes()).pixels[None], k=3)[0][0]
        assert nearest.item_id == release.items.item_ids[row[0]] and nearest.distance < 1e-4
        assert nearest.label == (3 if "dress" in path.parts else 7)
    assert (processed / "Ankle Boot" / "photo.JPG").exists() and (processed / "loose.png").exists()
    assert int(release.items.labels[release.items.paths == f"processed/{release_id}/loose.png"][0]) == -1

    reasons = {r["path"]: r["reason"] for r in result["rejections"]}
    assert reasons["known.png"] == "duplicate of catalogue item 5"
    assert reasons["zz-copy-of-new.png"].startswith("duplicate of catalogue item")
    assert reasons["link.png"] == "symbolic links are not followed"
    assert "PNG or JPEG" in reasons["notes.txt"]
    assert "'shoes'" in reasons["shoes/x.png"] and "ankle-boot" in reasons["shoes/x.png"]
    assert "nested too deep" in reasons["dress/deeper/y.png"]
    rejected = home.rejected / release_id
    for relative, reason in reasons.items():
        assert (rejected / relative).is_symlink() or (rejected / relative).is_file()
        assert (rejected / (relative + ".reason.txt")).read_text().strip() == reason
    assert outside.exists() and (rejected / "link.png").is_symlink()
    assert (incoming / ".hidden.png").exists() and (incoming / "upload.png.part").exists()
    assert (incoming / "coat").is_dir()

    again = reindex(data_home=str(home.root), settle_seconds=0)
    assert not again["published"] and again["indexed"] == 0 and again["waiting"] == 2
    assert latest_release_id(home) == release_id


def test_reindex_leaves_fresh_files_for_a_later_run(published_home):
    path = drop_labelled(published_home.incoming, "bag", 8, 1, seed=7)[0]
    result = reindex(data_home=str(published_home.root), settle_seconds=3600)
    assert not result["published"] and (result["seen"], result["waiting"]) == (1, 1)
    assert path.exists()


def test_second_writer_stops_with_a_clear_message_and_changes_nothing(published_home):
    home = published_home
    before = latest_release_id(home)
    dropped = drop_labelled(home.incoming, "sandal", 5, 2, seed=11)
    with writer_lock(home, holder="test"):
        with pytest.raises(StoreBusyError, match="Another pipeline run is writing"):
            reindex(data_home=str(home.root), settle_seconds=0, lock_timeout_s=0.5)
    assert latest_release_id(home) == before and all(path.exists() for path in dropped)


def test_two_reindex_runs_at_once_one_waits_for_the_other(published_home):
    home = published_home
    dropped = drop_labelled(home.incoming, "shirt", 6, 4, seed=12)
    results = []
    runs = [threading.Thread(target=lambda: results.append(reindex(data_home=str(home.root), settle_seconds=0)))
            for _ in range(2)]
    for run in runs:
        run.start()
    for run in runs:
        run.join(timeout=300)
    assert len(results) == 2
    assert sorted(r["published"] for r in results) == [False, True]
    assert sum(r["indexed"] for r in results) == len(dropped)
    assert not any(path.exists() for path in dropped)
    catalogue_agrees_with_release(home)
