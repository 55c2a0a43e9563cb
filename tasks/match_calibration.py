"""match_calibration: fit the match score (storage/match_score.py) while a release is evaluated.

Garments: a seeded half of the evaluation's queries (calibration_rows); the other half is never
seen here, so benchmarks/no_match.py reports on it. Not garments: OUT_OF_DISTRIBUTION_PER_KIND
pictures of each kind from tasks/out_of_distribution.py's CALIBRATION_SEED, encoded and normalised as
uploads are. A class-balanced logistic regression (L2, Newton's method, numpy) separates the two;
the thresholds come from out-of-fold scores of the calibration garments (FOLDS folds), so they are
not flattered by the fit: no close match above the score of all but GARMENTS_NO_MATCH of them, weak
above all but GARMENTS_WEAK. Costs about 3 s a run on the 2-core CI machine, most of it drawing and
normalising the pictures (drawn once a process).
"""

from __future__ import annotations

import time
from functools import lru_cache
from typing import Callable

import numpy as np

from storage.dataset import DatasetDescription
from storage.match_score import MatchScore, score_features
from storage.search_index import exact_knn
from tasks.out_of_distribution import CALIBRATION_SEED, KINDS, OutOfDistributionImage, normalised, pictures

QUERY_SPLIT_SEED = 0  # which half of the evaluation's queries calibrates (the other half is reported)
OUT_OF_DISTRIBUTION_PER_KIND = 40  # 280 pictures: 40 a kind caught as many held-out ones as 100 did
FOLDS = 5
GARMENTS_NO_MATCH = 0.01  # share of calibration garments (out of fold) called "no close match"
GARMENTS_WEAK = 0.05  # share of calibration garments (out of fold) called a weak match or worse
L2_PENALTY = 1.0  # on standardised features; 0.1 to 10 measured within a point of each other
MIN_GARMENTS = 2 * FOLDS  # fewer calibration garments than this: no score (the distance alone is kept)
NEWTON_STEPS = 50


def calibration_rows(num_queries: int) -> tuple[np.ndarray, np.ndarray]:
    """(calibration rows, held-out rows) of the evaluation's queries: a seeded half each, sorted."""
    order = np.random.default_rng(QUERY_SPLIT_SEED).permutation(num_queries)
    return np.sort(order[: num_queries // 2]), np.sort(order[num_queries // 2:])


@lru_cache(maxsize=1)
def calibration_pictures() -> tuple[OutOfDistributionImage, ...]:
    return tuple(pictures(CALIBRATION_SEED, OUT_OF_DISTRIBUTION_PER_KIND))


def fit_logistic(features: np.ndarray, targets: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, float]:
    """(mean, scale, weights, bias) of a class-balanced, L2-penalised logistic regression of `targets` (0/1)."""
    mean, scale = features.mean(axis=0), np.maximum(features.std(axis=0), 1e-9)
    design = np.column_stack([(features - mean) / scale, np.ones(len(features))])
    counts = np.bincount(targets.astype(int), minlength=2)
    sample_weight = len(targets) / (2.0 * counts[targets.astype(int)])
    penalty = L2_PENALTY * np.diag(np.r_[np.ones(design.shape[1] - 1), 0.0])  # the bias is not penalised
    beta = np.zeros(design.shape[1])
    for _ in range(NEWTON_STEPS):
        p = 1.0 / (1.0 + np.exp(-design @ beta))
        gradient = design.T @ (sample_weight * (p - targets)) + penalty @ beta
        hessian = (design * (sample_weight * p * (1 - p))[:, None]).T @ design + penalty
        step = np.linalg.solve(hessian, gradient)
        beta -= step
        if np.abs(step).max() < 1e-8:
            break
    return mean, scale, beta[:-1], float(beta[-1])


def _linear(fit: tuple[np.ndarray, np.ndarray, np.ndarray, float], features: np.ndarray) -> np.ndarray:
    mean, scale, weights, bias = fit
    return (features - mean) / scale @ weights + bias


def out_of_fold_scores(features: np.ndarray, targets: np.ndarray) -> np.ndarray:
    """Each row's score from a model fitted without its fold (folds drawn per class, seeded)."""
    rng = np.random.default_rng(QUERY_SPLIT_SEED)
    folds = np.empty(len(targets), dtype=int)
    for value in (0, 1):
        rows = np.flatnonzero(targets == value)
        folds[rows] = rng.permutation(np.arange(len(rows)) % FOLDS)
    scores = np.empty(len(targets))
    for fold in range(FOLDS):
        held = folds == fold
        scores[held] = _linear(fit_logistic(features[~held], targets[~held]), features[held])
    return scores


def calibrate_match_score(embed: Callable[[np.ndarray], np.ndarray], garments: np.ndarray,
                          garment_embeddings: np.ndarray, garment_nearest: np.ndarray, index_embeddings: np.ndarray,
                          dataset: DatasetDescription) -> MatchScore | None:
    """Fit the match score on calibration `garments` (normalised images, their embeddings and nearest
    distances to `index_embeddings`) against the calibration pictures; None with too few garments."""
    if len(garments) < MIN_GARMENTS:
        return None
    started = time.perf_counter()
    ood_images, ood_kinds = normalised(list(calibration_pictures()), dataset)
    ood_embeddings = embed(ood_images)
    ood_nearest = exact_knn(ood_embeddings, index_embeddings, 1)[0][:, 0]
    features = np.vstack([score_features(garments, garment_embeddings, garment_nearest, dataset.side),
                          score_features(ood_images, ood_embeddings, ood_nearest, dataset.side)])
    targets = np.r_[np.zeros(len(garments)), np.ones(len(ood_images))]
    held_scores = out_of_fold_scores(features, targets)
    garment_scores = held_scores[targets == 0]
    none_above = float(np.quantile(garment_scores, 1 - GARMENTS_NO_MATCH))
    weak_above = float(np.quantile(garment_scores, 1 - GARMENTS_WEAK))
    mean, scale, weights, bias = fit_logistic(features, targets)
    ood_scores = held_scores[targets == 1]
    calibration = {
        "garment_queries": int(len(garments)), "query_split_seed": QUERY_SPLIT_SEED,
        "out_of_distribution_seed": CALIBRATION_SEED, "out_of_distribution_pictures": int(len(ood_images)),
        "kinds": list(KINDS), "folds": FOLDS,
        "out_of_fold_caught": round(float((ood_scores > none_above).mean()), 4),
        "out_of_fold_weak": round(float(((ood_scores > weak_above) & (ood_scores <= none_above)).mean()), 4),
        "seconds": round(time.perf_counter() - started, 2),
    }
    return MatchScore(mean, scale, weights, bias, weak_above, none_above, calibration)
