"""The compiled embedder: the same embeddings as the Keras model for every batch size, safe to share
between threads, saved in each release, and enough on its own to search a release (no TensorFlow)."""

from __future__ import annotations

import json
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

from storage.dataset import FASHION_MNIST
from storage.embedder import CHUNK, EMBEDDER_FILE, SINGLE_MAX, Embedder, make_embedder
from storage.releases import load_release
from tasks.train import TrainConfig, build_model
from tests.conftest import REPO


@pytest.fixture(scope="module")
def model():
    from storage.runtime import load_tensorflow

    load_tensorflow().keras.utils.set_random_seed(3)
    return build_model(TrainConfig().architecture, 64, FASHION_MNIST.input_shape)


@pytest.mark.parametrize("count", [0, 1, SINGLE_MAX, SINGLE_MAX + 1, CHUNK, CHUNK + 1, 3 * CHUNK - 5])
def test_embeddings_match_the_keras_model_for_every_batch_size(model, count):
    images = np.random.default_rng(count).integers(0, 256, (count, 28, 28), dtype=np.uint8)
    embedded = make_embedder(model)(images)
    assert embedded.shape == (count, 64) and embedded.dtype == np.float32
    if count:
        expected = model(images[..., None].astype(np.float32), training=False).numpy()
        np.testing.assert_allclose(embedded, expected, atol=1e-5)


def test_a_model_is_compiled_once_and_a_flatbuffer_round_trips(model, tmp_path):
    embedder = make_embedder(model)
    assert make_embedder(model) is embedder
    (tmp_path / EMBEDDER_FILE).write_bytes(embedder.flatbuffer)
    images = np.random.default_rng(1).integers(0, 256, (9, 28, 28), dtype=np.uint8)
    np.testing.assert_array_equal(Embedder.load(tmp_path / EMBEDDER_FILE)(images), embedder(images))


def test_threads_sharing_one_embedder_get_their_own_answers(model):
    embedder = make_embedder(model)
    batches = [np.random.default_rng(seed).integers(0, 256, (1 + seed % 7, 28, 28), dtype=np.uint8)
               for seed in range(40)]
    expected = [embedder(batch) for batch in batches]
    with ThreadPoolExecutor(max_workers=8) as pool:
        results = list(pool.map(embedder, batches))
    for got, want in zip(results, expected):
        np.testing.assert_array_equal(got, want)


def test_a_published_release_carries_its_compiled_embedder(published_home):
    release = load_release(published_home)
    assert release.local_file(EMBEDDER_FILE).is_file()
    assert f"releases/{release.release_id}/{EMBEDDER_FILE}" in release.manifest["files"]
    images = release.items.images[:5]
    np.testing.assert_allclose(release.embed(images), make_embedder(release.model)(images), atol=1e-5)


def test_searching_a_release_does_not_import_tensorflow(published_home):
    """The search CLI and the page answer from the flatbuffer: no TensorFlow start-up per process."""
    script = ("import sys, json; from storage.home import DataHome; from storage.releases import load_release; "
              "r = load_release(DataHome.from_env()); hits = r.search(r.items.images[:2], 3); "
              "print(json.dumps({'tf': 'tensorflow' in sys.modules, 'hits': len(hits[0])}))")
    out = subprocess.run([sys.executable, "-c", script], cwd=REPO, capture_output=True, text=True, timeout=120,
                         check=True)
    assert json.loads(out.stdout.strip().splitlines()[-1]) == {"tf": False, "hits": 3}


def test_mirror_averaging_embeds_an_image_and_its_mirror_alike(model):
    images = np.random.default_rng(5).integers(0, 256, (CHUNK + 3, 28, 28), dtype=np.uint8)
    plain, averaged = make_embedder(model), make_embedder(model, mirror_average=True)
    assert averaged.flatbuffer is plain.flatbuffer  # one compilation serves both
    for batch in (images[:1], images):  # the single-image and the batch paths
        mirrored = averaged(batch[:, :, ::-1])
        np.testing.assert_allclose(averaged(batch), mirrored, atol=1e-5)
        np.testing.assert_allclose(np.linalg.norm(mirrored, axis=1), 1.0, atol=1e-5)
        both = plain(batch) + plain(batch[:, :, ::-1])
        np.testing.assert_allclose(averaged(batch), both / np.linalg.norm(both, axis=1, keepdims=True), atol=1e-6)


def test_the_quality_preset_and_a_release_that_uses_it(model, home):
    from tasks.train import PresetError

    quality = TrainConfig().with_preset("quality")
    assert (quality.architecture, quality.steps_per_epoch, quality.mirror_average) == ("compact", 450, True)
    assert TrainConfig().with_preset("") == TrainConfig()
    with pytest.raises(PresetError, match="unknown preset 'fast': use one of quality"):
        TrainConfig().with_preset("fast")

    from storage.catalog import CatalogItems
    from storage.releases import MODEL_FILE, ModelRecord, ReleaseManifest, ReleaseWriter

    images = np.random.default_rng(6).integers(0, 256, (6, 28, 28), dtype=np.uint8)
    items = CatalogItems(np.arange(6), np.zeros(6, np.int16), images, np.array(["a"] * 6), np.array(["drop"] * 6))
    writer = ReleaseWriter(home)
    writer.add_segment(items, make_embedder(model, True)(images))
    (writer.path / MODEL_FILE).write_bytes(b"placeholder: queries use the compiled embedder")
    (writer.path / EMBEDDER_FILE).write_bytes(make_embedder(model).flatbuffer)
    writer.write_json("metrics.json", {})
    record = ModelRecord({**quality.as_dict(), "architecture": TrainConfig().architecture}, writer.release_id, 5)
    writer.publish(ReleaseManifest("full", None, 6, record.as_dict(), FASHION_MNIST))
    release = load_release(home)  # queries go through the release's own embedder, mirror-averaged too
    np.testing.assert_allclose(release.embed(images[:2]), release.embed(images[:2, :, ::-1]), atol=1e-5)
    assert release.search(images[3][:, ::-1][None], k=1)[0][0].item_id == 3
