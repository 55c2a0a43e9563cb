"""evaluate: retrieval quality of test queries against the index, beside the raw-pixel baseline.

Definitions (every query is a test image; "relevant" = an indexed item of the query's class):
- precision@k: mean share of relevant items among the k nearest (precision@1 = nearest is relevant).
- recall@k: share of queries with at least one relevant item among the k nearest (TF Similarity's).
- MAP@10: mean over queries of sum_{i<=10} precision@i * rel_i / 10 (every class has >= 10 items).
- per-class precision@1 and the confusion matrix (query class x class of the nearest item).
- no_match_distance: 99th percentile of the nearest-item distance over correctly matched test
  queries (what releases before the match score judged "no close match" by).
- match_score: good / weak / no close match, fitted on half of the queries against generated
  pictures that are not garments (tasks/match_calibration.py, storage/match_score.py).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any, Callable

import numpy as np
from prefect.artifacts import create_markdown_artifact

from storage.catalog import CatalogItems
from storage.dataset import DatasetDescription
from storage.releases import RETRIEVAL_METRICS
from storage.search_index import exact_knn
from tasks.logs import step_logger
from tasks.match_calibration import calibrate_match_score, calibration_rows

K_VALUES = (1, 5, 10)
DEFAULT_GATE_TOLERANCE = 0.005
GATED_METRICS = ("precision@1", "recall@5")  # a candidate may not fall below the live release on these
HEADLINE_METRICS = ("precision@1", "recall@1", "recall@5", "recall@10", "map@10")  # a run's result


@dataclass(frozen=True)
class GateDecision:
    """Whether a candidate release is published, and why (shown in the run's report and result)."""

    publish: bool
    reason: str
    tolerance: float
    candidate: dict[str, float] = field(default_factory=dict)  # the gated figures, when compared
    live: dict[str, float] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def retrieval_metrics(query_emb: np.ndarray, query_labels: np.ndarray, index_emb: np.ndarray,
                      index_labels: np.ndarray, class_names: tuple[str, ...], k_max: int = 10,
                      knn: tuple[np.ndarray, np.ndarray] | None = None) -> dict:
    """The figures above; `knn`: exact_knn(query_emb, index_emb, k_max) when the caller has it already."""
    distances, rows = knn if knn is not None else exact_knn(query_emb, index_emb, k_max)
    neighbour_labels = np.asarray(index_labels)[rows]
    relevant = neighbour_labels == np.asarray(query_labels)[:, None]
    precision_at = np.cumsum(relevant, axis=1) / np.arange(1, relevant.shape[1] + 1)
    nearest_ok = relevant[:, 0]
    query_labels = np.asarray(query_labels)
    num_classes = len(class_names)
    confusion = np.zeros((num_classes, num_classes), dtype=np.int64)
    nearest = neighbour_labels[:, 0]
    known = (nearest >= 0) & (nearest < num_classes)
    np.add.at(confusion, (query_labels[known], nearest[known]), 1)
    per_class = {class_names[c]: float(nearest_ok[query_labels == c].mean())
                 for c in range(num_classes) if (query_labels == c).any()}
    matched = distances[nearest_ok, 0]
    return {
        "queries": int(len(query_labels)),
        "indexed_items": int(len(index_labels)),
        **{f"precision@{k}": float(precision_at[:, k - 1].mean()) for k in K_VALUES if k <= k_max},
        **{f"recall@{k}": float(relevant[:, :k].any(axis=1).mean()) for k in K_VALUES if k <= k_max},
        "map@10": float((precision_at * relevant).sum(axis=1).mean() / k_max),
        "per_class_precision@1": per_class,
        "confusion": confusion.tolist(),
        "no_match_distance": float(np.percentile(matched, 99)) if matched.size else None,
    }


def pixel_vectors(images: np.ndarray) -> np.ndarray:
    flat = np.asarray(images, dtype=np.float32).reshape(len(images), -1)
    return flat / np.maximum(np.linalg.norm(flat, axis=1, keepdims=True), 1e-6)


def evaluate_release(embed: Callable[[np.ndarray], np.ndarray], query_images, query_labels, index_emb: np.ndarray,
                     items: CatalogItems, dataset: DatasetDescription, query_emb: np.ndarray | None = None) -> dict:
    """Embed the test queries with `embed` (the Embedder that embedded the index; `query_emb` when the
    flow embedded them already: tasks/shards.py), measure retrieval against the index, and the raw-pixel
    cosine kNN baseline over the same items beside it."""
    log = step_logger()
    query_emb = embed(query_images) if query_emb is None else query_emb
    knn = exact_knn(query_emb, index_emb, max(K_VALUES))
    metrics = retrieval_metrics(query_emb, query_labels, index_emb, items.labels, dataset.class_names, knn=knn)
    calibrating = calibration_rows(len(query_emb))[0]
    score = calibrate_match_score(embed, np.asarray(query_images)[calibrating], query_emb[calibrating],
                                  knn[0][calibrating, 0], index_emb, dataset)
    if score is not None:
        metrics["match_score"] = score.as_dict()
    baseline = retrieval_metrics(pixel_vectors(query_images), query_labels, pixel_vectors(items.images),
                                 items.labels, dataset.class_names)
    metrics["baseline_raw_pixels"] = {k: baseline[k] for k in RETRIEVAL_METRICS if k in baseline}
    metrics["gain_over_baseline_precision@1"] = metrics["precision@1"] - baseline["precision@1"]
    log.info("evaluate: precision@1 %.4f (raw pixels %.4f), recall@5 %.4f, MAP@10 %.4f; match score caught %s of "
             "the calibration's non-garments (out of fold)", metrics["precision@1"], baseline["precision@1"],
             metrics["recall@5"], metrics["map@10"], score.calibration["out_of_fold_caught"] if score else "none")
    return metrics


def gate(candidate: dict, live: dict | None, tolerance: float = DEFAULT_GATE_TOLERANCE,
         force: bool = False) -> GateDecision:
    """Publish only if the candidate's gated figures are not worse than live by more than `tolerance`
    (or when `force` says so, which the reason then records)."""
    if not live:
        return GateDecision(True, "no live release to compare against", tolerance)
    drops = {key: live[key] - candidate[key] for key in GATED_METRICS if key in live}
    worst = max(drops.values(), default=0.0)
    ok = worst <= tolerance
    reason = ("candidate does not regress" if ok else
              f"candidate regresses by {worst:.4f} (> tolerance {tolerance}) against the live release")
    if force and not ok:
        reason += " (published: force_publish)"
    return GateDecision(ok or force, reason, tolerance, {k: candidate[k] for k in drops}, {k: live[k] for k in drops})


def headline(metrics: dict) -> dict:
    """The figures a run prints: HEADLINE_METRICS and the raw-pixel baseline's precision@1, rounded."""
    figures = {key: round(metrics[key], 4) for key in HEADLINE_METRICS if key in metrics}
    figures["baseline_precision@1"] = round(metrics["baseline_raw_pixels"]["precision@1"], 4)
    return figures


def markdown_report(metrics: dict, title: str, gate_decision: GateDecision | None = None) -> str:
    base = metrics.get("baseline_raw_pixels", {})
    lines = [f"# {title}", "", "| metric | model | raw-pixel kNN |", "|---|---|---|"]
    for key in RETRIEVAL_METRICS:
        if key in metrics:
            lines.append(f"| {key} | {metrics[key]:.4f} | {base.get(key, float('nan')):.4f} |")
    calibration = metrics.get("match_score", {}).get("calibration")
    matching = ("" if not calibration else f"; match score: {calibration['out_of_fold_caught']:.1%} of "
                f"{calibration['out_of_distribution_pictures']} generated non-garments caught (out of fold)")
    lines += ["", f"Queries: {metrics['queries']}, indexed items: {metrics['indexed_items']}, "
              f"no-match distance: {metrics.get('no_match_distance')}{matching}", "",
              "| class | precision@1 |", "|---|---|"]
    lines += [f"| {name} | {value:.4f} |" for name, value in metrics["per_class_precision@1"].items()]
    if gate_decision:
        lines += ["", f"**Gate:** {'publish' if gate_decision.publish else 'refuse'} - {gate_decision.reason}"]
    return "\n".join(lines)


def report_artifact(key: str, markdown: str, description: str = "retrieval evaluation") -> None:
    """Record a markdown artifact on the current flow run (no-op outside one)."""
    try:
        create_markdown_artifact(key=key, markdown=markdown, description=description)
    except Exception as error:  # noqa: BLE001 - an artifact must never fail the run it reports on
        step_logger().warning("could not record artifact %s: %s", key, error)
