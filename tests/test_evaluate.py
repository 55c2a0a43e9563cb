"""evaluate: retrieval metrics with known answers, the raw-pixel baseline, the publish gate and the report."""

from __future__ import annotations

import json

import numpy as np
import pytest

from storage.catalog import CatalogItems
from storage.dataset import FASHION_MNIST
from storage.embedder import make_embedder
from storage.match_score import MatchScore
from tasks.evaluate import evaluate_release, gate, markdown_report, pixel_vectors, retrieval_metrics
from tests.tiny_data import class_images


def on_circle(degrees) -> np.ndarray:
    radians = np.deg2rad(np.asarray(degrees, dtype=np.float64))
    return np.stack([np.cos(radians), np.sin(radians)], axis=1).astype(np.float32)


# Index: class 0 at 0..5 degrees, class 1 at 90..95 degrees. Queries: a class-0 query among class 0,
# a class-1 query among class 0 (a miss), a class-1 query among class 1.
INDEX_DEGREES = [0, 1, 2, 3, 4, 5, 90, 91, 92, 93, 94, 95]
INDEX_LABELS = np.array([0] * 6 + [1] * 6)
QUERY_DEGREES = [0.5, 2.5, 92.2]
QUERY_LABELS = np.array([0, 1, 1])
# relevance of the 10 nearest: hit x6 then miss x4 | miss x6 then hit x4 | hit x6 then miss x4
AVERAGE_PRECISION = [6 / 10, (1 / 7 + 2 / 8 + 3 / 9 + 4 / 10) / 10, 6 / 10]


@pytest.fixture(scope="module")
def known():
    return retrieval_metrics(on_circle(QUERY_DEGREES), QUERY_LABELS, on_circle(INDEX_DEGREES), INDEX_LABELS,
                             FASHION_MNIST.class_names)


def test_precision_and_recall_at_k(known):
    assert known["queries"] == 3 and known["indexed_items"] == 12
    assert known["precision@1"] == pytest.approx(2 / 3)
    assert known["precision@5"] == pytest.approx(2 / 3)
    assert known["precision@10"] == pytest.approx((0.6 + 0.4 + 0.6) / 3)
    assert known["recall@1"] == pytest.approx(2 / 3)
    assert known["recall@5"] == pytest.approx(2 / 3)
    assert known["recall@10"] == pytest.approx(1.0)


def test_map_at_10_follows_the_documented_definition(known):
    assert known["map@10"] == pytest.approx(np.mean(AVERAGE_PRECISION))


def test_per_class_precision_and_confusion(known):
    assert known["per_class_precision@1"] == {FASHION_MNIST.class_names[0]: 1.0, FASHION_MNIST.class_names[1]: 0.5}
    confusion = np.array(known["confusion"])
    assert confusion.shape == (FASHION_MNIST.num_classes, FASHION_MNIST.num_classes)
    assert confusion[0, 0] == 1 and confusion[1, 0] == 1 and confusion[1, 1] == 1 and confusion.sum() == 3


def test_no_match_distance_is_the_99th_percentile_of_correct_nearest_distances(known):
    nearest_correct = 1 - np.cos(np.deg2rad([0.5, 0.2]))  # the two hits; the miss is left out
    assert known["no_match_distance"] == pytest.approx(np.percentile(nearest_correct, 99), abs=1e-6)


def test_metrics_agree_with_a_brute_force_count_on_random_data():
    rng = np.random.default_rng(4)
    index, queries = rng.standard_normal((200, 8)), rng.standard_normal((40, 8))
    index /= np.linalg.norm(index, axis=1, keepdims=True)
    queries /= np.linalg.norm(queries, axis=1, keepdims=True)
    index_labels, query_labels = rng.integers(0, 3, 200), rng.integers(0, 3, 40)
    metrics = retrieval_metrics(queries, query_labels, index, index_labels, FASHION_MNIST.class_names)
    order = np.argsort(1 - queries @ index.T, axis=1, kind="stable")[:, :10]
    relevant = index_labels[order] == query_labels[:, None]
    assert metrics["precision@5"] == pytest.approx(relevant[:, :5].mean(), abs=1e-6)
    assert metrics["recall@10"] == pytest.approx(relevant.any(axis=1).mean(), abs=1e-6)
    precision_at = np.cumsum(relevant, axis=1) / np.arange(1, 11)
    assert metrics["map@10"] == pytest.approx(((precision_at * relevant).sum(axis=1) / 10).mean(), abs=1e-6)


def test_pixel_vectors_are_unit_length_and_safe_for_blank_images():
    images = np.zeros((3, 28, 28, 1), np.uint8)
    images[1] = 255
    images[2, 3, 4] = 9
    vectors = pixel_vectors(images)
    assert vectors.shape == (3, 784)
    assert np.isfinite(vectors).all() and not vectors[0].any()
    np.testing.assert_allclose(np.linalg.norm(vectors[1:], axis=1), 1.0, atol=1e-6)


def test_evaluation_reports_the_raw_pixel_baseline_beside_the_model():
    """A "model" that embeds raw pixels must score exactly the baseline: zero gain."""
    from storage.runtime import load_tensorflow

    tf = load_tensorflow()
    inputs = tf.keras.layers.Input(shape=(28, 28, 1))
    outputs = tf.keras.layers.UnitNormalization()(tf.keras.layers.Flatten()(inputs))
    pixels_model = tf.keras.Model(inputs, outputs)
    rng = np.random.default_rng(1)
    index_labels, query_labels = np.repeat(np.arange(FASHION_MNIST.num_classes), 5), np.repeat(np.arange(FASHION_MNIST.num_classes), 2)
    index_images, query_images = class_images(index_labels, rng), class_images(query_labels, rng)
    items = CatalogItems(item_ids=np.arange(len(index_labels)), labels=index_labels.astype(np.int16),
                         images=index_images, paths=np.array(["p"] * len(index_labels)),
                         sources=np.array(["s"] * len(index_labels)))
    index_emb = pixel_vectors(index_images)
    metrics = evaluate_release(make_embedder(pixels_model), query_images[..., None], query_labels, index_emb, items,
                               FASHION_MNIST)
    baseline = metrics["baseline_raw_pixels"]
    assert set(baseline) == {"precision@1", "precision@5", "precision@10", "recall@1", "recall@5",
                             "recall@10", "map@10"}
    for key, value in baseline.items():
        assert metrics[key] == pytest.approx(value, abs=1e-6)
    assert metrics["gain_over_baseline_precision@1"] == pytest.approx(0.0, abs=1e-6)
    score = MatchScore.from_dict(json.loads(json.dumps(metrics["match_score"])))  # plain JSON numbers
    assert score.calibration["garment_queries"] == len(query_labels) // 2  # the other half is the benchmark's
    assert score.none_above >= score.weak_above and "match score" in markdown_report(metrics, "t")
    fewer = evaluate_release(make_embedder(pixels_model), query_images[:10, ..., None], query_labels[:10], index_emb,
                             items, FASHION_MNIST)
    assert "match_score" not in fewer and fewer["no_match_distance"] is not None  # too few to calibrate


LIVE = {"precision@1": 0.90, "recall@5": 0.97}


@pytest.mark.parametrize("candidate, publish", [
    ({"precision@1": 0.91, "recall@5": 0.98}, True),  # better
    ({"precision@1": 0.90, "recall@5": 0.97}, True),  # equal
    ({"precision@1": 0.896, "recall@5": 0.97}, True),  # worse, within the 0.005 tolerance
    ({"precision@1": 0.92, "recall@5": 0.96}, False),  # recall@5 regresses beyond tolerance
    ({"precision@1": 0.80, "recall@5": 0.99}, False),
])
def test_gate_publishes_unless_the_candidate_regresses(candidate, publish):
    decision = gate(candidate, LIVE, tolerance=0.005)
    assert decision.publish is publish
    assert decision.live == LIVE and decision.candidate == candidate
    if not publish:
        assert "regresses" in decision.reason and "0.005" in decision.reason


def test_gate_tolerance_is_a_parameter_and_first_release_always_publishes():
    candidate = {"precision@1": 0.85, "recall@5": 0.97}
    assert not gate(candidate, LIVE, tolerance=0.01).publish
    assert gate(candidate, LIVE, tolerance=0.06).publish
    assert gate(candidate, None).publish and gate(candidate, {}).publish


def test_markdown_report_shows_model_baseline_classes_and_gate(known):
    metrics = {**known, "baseline_raw_pixels": {"precision@1": 0.5, "recall@5": 0.25}}
    decision = gate({"precision@1": 0.1, "recall@5": 0.1}, LIVE)
    report = markdown_report(metrics, "Candidate 42", decision)
    assert report.startswith("# Candidate 42")
    assert "| precision@1 | 0.6667 | 0.5000 |" in report
    assert "| recall@5 | 0.6667 | 0.2500 |" in report
    assert "| precision@10 | 0.5333 | nan |" in report
    assert f"| map@10 | {np.mean(AVERAGE_PRECISION):.4f} |" in report
    assert f"| {FASHION_MNIST.class_names[0]} | 1.0000 |" in report and f"| {FASHION_MNIST.class_names[1]} | 0.5000 |" in report
    assert "Queries: 3, indexed items: 12" in report
    assert "**Gate:** refuse - candidate regresses" in report
    assert "Gate" not in markdown_report(metrics, "No gate")
