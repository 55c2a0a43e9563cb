"""A shop's own photos (a tiny colour folder, tests/tiny_photos.py) through every part: the pipeline,
the drop folder, retrain, search, the page; bad files, a too-small class, a second source, items.csv,
a new class, another image size and a pretrained backbone (random weights)."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from streamlit.testing.v1 import AppTest

from flows.pipeline import pipeline
from flows.reindex import reindex
from flows.retrain import retrain
from storage.catalog import FOLDER_SOURCE, HELD_OUT_SOURCE, Catalog
from storage.dataset import DatasetMismatchError, home_dataset, read_home_dataset
from storage.home import HOME_ENV, DataHome
from storage.releases import load_release
from tasks.backbones import BackboneWeightsError
from tasks.folder import HOLD_OUT_SHARE, FolderError
from tests.conftest import REPO
from tests.tiny_photos import CLASSES, photo, save, write_photo_folder

PHOTO_TRAINING = dict(image_size=32, epochs=2, steps_per_epoch=15, examples_per_class=4, gallery_size=30)
CLASS_NAMES = list(CLASSES)


@pytest.fixture(scope="module")
def photo_folder(tmp_path_factory) -> Path:
    """The folder with an items.csv and three files that cannot be used."""
    folder = write_photo_folder(tmp_path_factory.mktemp("own") / "photos")
    (folder / "items.csv").write_text("path,sku,title,url\nhat/000.jpg,H-1,Green hat,https://shop.example/h1\n"
                                      "Red Dress/001.jpg,D-9,,\n")
    (folder / "hat" / "notes.txt").write_text("not an image")
    (folder / "hat" / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 cut short")
    save(photo(0, np.random.default_rng(1), size=(4, 40)), folder / "Red Dress" / "sliver.png")
    return folder


@pytest.fixture(scope="module")
def photo_home_built(photo_folder, tmp_path_factory) -> tuple[Path, dict]:
    root = tmp_path_factory.mktemp("own-home") / "home"
    result = pipeline(data_home=str(root), images=str(photo_folder), **PHOTO_TRAINING)
    assert result["published"], result
    return root, result


@pytest.fixture
def photo_home(photo_home_built, tmp_path, monkeypatch) -> DataHome:
    root = tmp_path / "home"
    shutil.copytree(photo_home_built[0], root)
    monkeypatch.setenv(HOME_ENV, str(root))
    return DataHome.from_env(root)


def test_pipeline_on_a_folder_indexes_every_usable_photo_in_colour(photo_home_built, photo_folder):
    root, result = photo_home_built
    home = DataHome.from_env(root)
    release = load_release(home)
    dataset = release.dataset
    assert dataset.class_names == tuple(CLASS_NAMES) and dataset.channels == 3 and dataset.side == 32
    assert dataset.source == str(photo_folder.resolve()) and home_dataset(home) == dataset
    assert release.items.images.shape[1:] == (32, 32, 3)
    assert release.manifest["model"]["architecture"] == "photo"
    # every usable photo indexed (training images and the held-out queries), each with a display copy
    usable = 3 * 12
    assert len(release.items) == usable == result["training_images"] + result["query_images"]
    assert result["query_images"] == 3 * round(HOLD_OUT_SHARE * 12)
    assert sorted(set(release.items.sources.tolist())) == [FOLDER_SOURCE, HELD_OUT_SOURCE]
    assert all(len(display) > 0 for display in release.items.displays)
    # the evaluation searched the training images only: the held-out queries do not find themselves
    assert release.metrics["indexed_items"] == result["training_images"]
    assert release.metrics["per_class_precision@1"].keys() == set(CLASS_NAMES)
    assert "baseline_raw_pixels" in release.metrics
    skipped = {entry["path"]: entry["reason"] for entry in result["skipped_files"]}
    assert set(skipped) == {"hat/notes.txt", "hat/broken.jpg", "Red Dress/sliver.png"}
    assert "unsupported file type" in skipped["hat/notes.txt"] and "at least 8 pixels" in skipped["Red Dress/sliver.png"]
    assert (photo_folder / "hat" / "broken.jpg").exists()  # nothing in DIR is moved or modified
    gallery = json.loads((home.gallery / "index.json").read_text())
    assert gallery and all(entry["path"].endswith(".jpg") and "item_id" in entry for entry in gallery)


def test_search_cli_answers_a_jpeg_with_the_dataset_labels_and_metadata(photo_home, photo_folder):
    completed = subprocess.run([sys.executable, "-m", "ui.search", str(photo_folder / "hat" / "000.jpg"), "--k", "3"],
                               cwd=REPO, capture_output=True, text=True, timeout=300)
    assert completed.returncode == 0, completed.stderr
    result = json.loads(completed.stdout)
    nearest = result["neighbours"][0]
    assert nearest["distance"] < 1e-4 and nearest["label_name"] == "hat"
    assert nearest["metadata"] == {"sku": "H-1", "title": "Green hat", "url": "https://shop.example/h1"}
    assert {n["label_name"] for n in result["neighbours"]} <= set(CLASS_NAMES)


def test_a_bare_run_reuses_the_recorded_folder_and_another_source_changes_nothing(photo_home, tmp_path):
    before = sorted(path.name for path in photo_home.releases.iterdir())
    other = write_photo_folder(tmp_path / "other", per_class=4, seed=3)
    with pytest.raises(DatasetMismatchError, match="holds the images of"):
        pipeline(data_home=str(photo_home.root), images=str(other), **PHOTO_TRAINING)
    assert sorted(path.name for path in photo_home.releases.iterdir()) == before
    result = pipeline(data_home=str(photo_home.root), **PHOTO_TRAINING, force_publish=True)  # no --images
    assert result["published"] and result["images"] == home_dataset(photo_home).source


def test_a_fashion_mnist_home_refuses_a_folder(published_home, photo_folder):
    with pytest.raises(DatasetMismatchError, match="holds Fashion-MNIST"):
        pipeline(data_home=str(published_home.root), images=str(photo_folder), **PHOTO_TRAINING)
    assert read_home_dataset(published_home) is None or read_home_dataset(published_home).source == ""


def test_a_one_image_class_stops_the_run_naming_it(tmp_path):
    folder = write_photo_folder(tmp_path / "photos", per_class=6)
    for extra in sorted((folder / "hat").iterdir())[1:]:
        extra.unlink()
    with pytest.raises(FolderError, match=r"class hat \(1\)"):
        pipeline(data_home=str(tmp_path / "home"), images=str(folder), **PHOTO_TRAINING)
    assert not (tmp_path / "home" / "dataset.json").exists() and not (tmp_path / "home" / "LATEST").exists()


def test_a_validation_split_is_queries_only(tmp_path):
    folder = write_photo_folder(tmp_path / "photos", per_class=9, split="validation")
    result = pipeline(data_home=str(tmp_path / "home"), images=str(folder), **PHOTO_TRAINING)
    release = load_release(DataHome.from_env(tmp_path / "home"))
    assert result["query_images"] == 3 * 3 and len(release.items) == result["training_images"] == 27
    assert set(release.items.sources.tolist()) == {FOLDER_SOURCE}


def test_drops_follow_the_dataset_classes_and_a_new_class_when_allowed(photo_home):
    rng = np.random.default_rng(9)
    save(photo(2, rng), photo_home.incoming / "hat" / "new-hat.jpg")
    save(photo(0, rng), photo_home.incoming / "red-dress" / "new-dress.png")  # the class's slug
    for number in range(3):
        save(photo(1, rng).rotate(90, expand=True), photo_home.incoming / "Scarf" / f"scarf-{number}.jpg")
    refused = reindex(data_home=str(photo_home.root), settle_seconds=0)
    assert refused["indexed"] == 2 and refused["rejected"] == 3
    assert "red-dress, blue-shoes, hat" in refused["rejections"][0]["reason"]
    for number in range(3):  # dropped again, now allowed to add a class
        save(photo(1, rng).rotate(90, expand=True), photo_home.incoming / "Scarf" / f"scarf-{number}.jpg")
    added = reindex(data_home=str(photo_home.root), settle_seconds=0, allow_new_classes=True)
    assert added["indexed"] == 3, added
    release = load_release(photo_home)
    assert release.dataset.class_names == (*CLASS_NAMES, "Scarf")
    assert home_dataset(photo_home).class_names == (*CLASS_NAMES, "Scarf")
    nearest = release.search(release.items.images[release.items.labels == 3][:1], k=1)[0][0]
    assert nearest.label_name == "Scarf"
    trained = retrain(data_home=str(photo_home.root), steps_per_epoch=5, examples_per_class=4, gate_tolerance=1.0)
    assert trained["published"] and trained["new_labelled_items"] == 5, trained
    assert load_release(photo_home).dataset.class_names[-1] == "Scarf"


def test_another_image_size_rederives_inputs_from_the_display_copies(photo_home):
    result = pipeline(data_home=str(photo_home.root), **{**PHOTO_TRAINING, "image_size": 40}, force_publish=True)
    assert result["published"]
    release = load_release(photo_home)
    assert release.dataset.side == 40 and release.items.images.shape[1:] == (40, 40, 3)
    stored = Catalog(photo_home.catalog, release.dataset).load()
    assert stored.images.shape[1:] == (40, 40, 3)
    np.testing.assert_array_equal(stored.images, release.items.images)


def test_the_page_shows_the_photos_in_colour_with_the_dataset_classes(photo_home):
    at = AppTest.from_file(str(REPO / "ui" / "app.py"), default_timeout=180)
    at.run()
    assert not at.exception, at.exception
    assert "similarity search" in at.title[0].value and "Fashion-MNIST" not in at.title[0].value
    assert at.selectbox(key="class_filter").options == ["All classes", *CLASS_NAMES]
    at.button[0].click().run()
    assert not at.exception, at.exception
    captions = [caption for image in at.image for caption in image.captions if " · d=" in caption]
    assert captions and all(any(name in caption for name in CLASS_NAMES) for caption in captions)


def test_a_pretrained_backbone_trains_from_a_weights_file(tmp_path):
    from storage.runtime import load_tensorflow
    from tasks.backbones import BACKBONES

    tf = load_tensorflow()
    weights = tmp_path / BACKBONES["mobilenet_v3_small"].weights_file  # random weights, the real file's layout
    BACKBONES["mobilenet_v3_small"].network(tf, (32, 32, 3), None).save_weights(str(weights))
    folder = write_photo_folder(tmp_path / "photos", per_class=6)
    home = tmp_path / "home"
    with pytest.raises(BackboneWeightsError, match="pass it with --weights FILE"):
        pipeline(data_home=str(home), images=str(folder), architecture="mobilenet_v3_small",
                 weights=str(tmp_path / "missing.h5"), **{**PHOTO_TRAINING, "steps_per_epoch": 2})
    result = pipeline(data_home=str(home), images=str(folder), architecture="mobilenet_v3_small", weights=str(weights),
                      **{**PHOTO_TRAINING, "steps_per_epoch": 2})
    assert result["published"], result
    release = load_release(DataHome.from_env(home))
    assert release.manifest["model"]["architecture"] == "mobilenet_v3_small"
    query = release.items.images[:1]
    np.testing.assert_allclose(release.embed(query), release.embeddings[:1], atol=1e-4)  # the TFLite embedder


def test_the_command_line_runs_a_folder_and_says_what_it_skipped(tmp_path):
    folder = write_photo_folder(tmp_path / "photos", per_class=5)
    (folder / "hat" / "empty.jpg").write_bytes(b"")
    completed = subprocess.run([sys.executable, "-m", "flows.pipeline", "--data-home", str(tmp_path / "home"),
                                "--images", str(folder), "--image-size", "32", "--epochs", "1", "--steps-per-epoch", "3",
                                "--examples-per-class", "4"], cwd=REPO, capture_output=True, text=True, timeout=600)
    assert completed.returncode == 0, completed.stderr[-3000:]
    result = json.loads(completed.stdout[completed.stdout.index("{"):])
    assert result["published"] and result["classes"] == CLASS_NAMES
    assert result["skipped_files"] == [{"path": "hat/empty.jpg", "reason": "empty file (0 bytes)"}]
    assert "Traceback" not in completed.stderr
