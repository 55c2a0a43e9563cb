"""The whole pipeline on tiny generated data, under Prefect's test harness, then queried."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np

from storage.catalog import Catalog
from storage.dataset import FASHION_MNIST
from storage.releases import latest_release_id, load_release
from tests.conftest import REPO


def test_pipeline_publishes_a_searchable_release(published_home):
    release = load_release(published_home)
    assert latest_release_id(published_home) == release.release_id
    manifest = release.manifest
    assert manifest["kind"] == "full" and manifest["parent"] is None
    assert manifest["model"]["architecture"] == "lean"
    assert len(release.embeddings) == len(release.items) == Catalog(published_home.catalog, FASHION_MNIST).count()
    np.testing.assert_allclose(np.linalg.norm(release.embeddings, axis=1), 1.0, atol=1e-4)
    for key in ("precision@1", "recall@5", "map@10", "per_class_precision@1", "baseline_raw_pixels",
                "confusion", "no_match_distance", "match_score"):
        assert key in release.metrics
    assert release.match_score.none_above >= release.match_score.weak_above
    # the tiny classes are trivially separable: the model must find them
    assert release.metrics["precision@1"] >= 0.9


def test_search_returns_neighbours_of_the_query_class(published_home):
    release = load_release(published_home)
    gallery = json.loads((published_home.gallery / "index.json").read_text())
    entry = gallery[0]
    from storage.images import normalise_image

    image = normalise_image((published_home.gallery / entry["path"]).read_bytes())
    neighbours = release.search(image.pixels[None], k=5)[0]
    assert len(neighbours) == 5
    assert [n.rank for n in neighbours] == [1, 2, 3, 4, 5]
    assert neighbours[0].label == entry["label"]
    assert all(a.distance <= b.distance for a, b in zip(neighbours, neighbours[1:]))


def test_batch_search_columns_agree_with_per_query_neighbours(published_home):
    release = load_release(published_home)
    queries = release.items.images[:7]
    results = release.search(queries, k=3)
    assert len(results) == 7 and results.rows.shape == results.item_ids.shape == (7, 3)
    distances, rows = release.nearest(release.embed(queries), 3)
    assert (results.rows == rows).all()
    for query, neighbours in enumerate(results):
        assert [n.item_id for n in neighbours] == release.items.item_ids[rows[query]].tolist()
        assert [n.label for n in neighbours] == results.labels[query].tolist()
        assert [n.path for n in neighbours] == release.items.paths[rows[query]].tolist()
        np.testing.assert_allclose([n.distance for n in neighbours], distances[query], atol=1e-6)
    assert results[-1] == results[6]
    assert results.distances[:, 0].max() < 1e-4  # an indexed image finds itself (or an identical one)


def test_search_cli_prints_json_per_image(published_home):
    gallery = json.loads((published_home.gallery / "index.json").read_text())
    paths = [str(published_home.gallery / e["path"]) for e in gallery[:3]]
    out = subprocess.run([sys.executable, "-m", "ui.search", *paths, "--k", "4",
                          "--data-home", str(published_home.root)],
                         cwd=REPO, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    lines = [json.loads(line) for line in out.stdout.splitlines()]
    assert len(lines) == 3
    for entry, result in zip(gallery[:3], lines):
        assert len(result["neighbours"]) == 4
        assert result["neighbours"][0]["label"] == entry["label"]
        assert set(result["neighbours"][0]) >= {"item_id", "label", "label_name", "distance", "path"}


def test_flow_modules_do_not_import_tensorflow():
    code = "import sys, flows.pipeline, ui.search; print('tensorflow' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert out.stdout.strip() == "False", out.stderr[-2000:]


def test_pipeline_help_lists_every_parameter():
    out = subprocess.run([sys.executable, "-m", "flows.pipeline", "--help"], cwd=REPO,
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0
    for flag in ("--epochs", "--steps-per-epoch", "--examples-per-class", "--classes-per-batch",
                 "--learning-rate", "--architecture", "--embedding-size", "--gallery-size", "--seed"):
        assert flag in out.stdout
