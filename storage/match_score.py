"""match_score: does a query look like the catalogue's garments? Good match, weak match or no close match.

The score is a logistic regression fitted at evaluation time (tasks/match_calibration.py) on the
release's own held-out garment queries against seeded out-of-distribution pictures (drawn shapes,
noise, gradients, text, patterns, scene crops: tasks/out_of_distribution.py). Its inputs:
- the query's embedding: pictures that are not garments land in directions garments do not take,
  though often near some garment (a drawn circle's nearest "Bag" was at 0.070);
- the log distance to the nearest catalogue item;
- PIXEL_FEATURES of the normalised query: brightness, contrast, edges, left-right symmetry, the
  object's share, colour, and flatness (runs of identical pixels, few distinct colours: drawn and
  generated pictures have them, photographed garments do not).
Two thresholds on the score, from the calibration garments' out-of-fold scores, make three bands:
GOOD up to `weak_above`, WEAK up to `none_above`, NONE (no close match) beyond. The fitted numbers
are plain JSON in metrics.json ("match_score"), never pickled. Measured with `python -m
benchmarks.no_match` on held-out data, Fashion-MNIST: 1.0% of garments called no close match and
98.9% of the pictures caught, where the distance alone (`no_match_distance`, what answered before)
flagged 2.0% and caught 44% (README "No close match").
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

GOOD, WEAK, NONE = "good", "weak", "none"
BANDS = (GOOD, WEAK, NONE)
PIXEL_FEATURES = ("brightness", "contrast", "horizontal_edges", "vertical_edges", "asymmetry", "object_share",
                  "saturation", "curvature", "channel_contrast", "flat_pairs", "near_flat_pairs", "distinct_colours")
OBJECT_LEVEL = 0.1  # brightness difference from the border's median that counts as object
NEAR_FLAT_LEVELS = 2  # neighbouring pixels this close (of 255) count as near-flat
COLOUR_BINS = 16  # levels per channel when counting distinct colours
DISTANCE_FLOOR = 1e-3  # keeps the log finite for a query identical to a catalogue item


def match_fields(band: str) -> dict[str, Any]:
    """How an answer (ui.search, the service) states a band: `match`, and `no_match` as before it existed."""
    return {"no_match": band == NONE, "match": band}


def pixel_features(images: np.ndarray, side: int) -> np.ndarray:
    """PIXEL_FEATURES of normalised uint8 images, (n, side, side) grey or (n, side, side, 3) colour.
    Channels first, so each reduction runs over contiguous memory (0.7 ms channels last for one
    64x64 photo). One query's band costs 0.13 ms (28x28 grey) to 0.17 ms (64x64 colour), mostly the
    two dozen numpy calls here."""
    levels = np.asarray(images, dtype=np.int16).reshape(len(images), side, side, -1)
    levels = np.ascontiguousarray(np.moveaxis(levels, 3, 1))
    colour = levels.astype(np.float32) / 255.0  # (n, channels, side, side)
    grey = colour.mean(axis=1)
    border = np.concatenate([grey[:, 0], grey[:, -1], grey[:, :, 0], grey[:, :, -1]], axis=1)
    step_x = np.abs(np.diff(levels, axis=3)).max(axis=1)
    step_y = np.abs(np.diff(levels, axis=2)).max(axis=1)
    bins = levels // (256 // COLOUR_BINS)
    codes = np.sort(((bins[:, 0] * COLOUR_BINS + bins[:, -1]) * COLOUR_BINS + bins[:, levels.shape[1] // 2]
                     ).reshape(len(images), -1), axis=1)
    return np.column_stack([
        grey.mean(axis=(1, 2)),
        grey.std(axis=(1, 2)),
        np.abs(np.diff(grey, axis=2)).mean(axis=(1, 2)),
        np.abs(np.diff(grey, axis=1)).mean(axis=(1, 2)),
        np.abs(grey - grey[:, :, ::-1]).mean(axis=(1, 2)),
        (np.abs(grey - np.median(border, axis=1)[:, None, None]) > OBJECT_LEVEL).mean(axis=(1, 2)),
        (colour.max(axis=1) - colour.min(axis=1)).mean(axis=(1, 2)),
        np.abs(grey[:, :, 2:] - 2 * grey[:, :, 1:-1] + grey[:, :, :-2]).mean(axis=(1, 2)),
        colour.std(axis=(2, 3)).mean(axis=1),
        ((step_x == 0).mean(axis=(1, 2)) + (step_y == 0).mean(axis=(1, 2))) / 2,
        ((step_x <= NEAR_FLAT_LEVELS).mean(axis=(1, 2)) + (step_y <= NEAR_FLAT_LEVELS).mean(axis=(1, 2))) / 2,
        ((np.diff(codes, axis=1) != 0).sum(axis=1) + 1) / codes.shape[1],
    ]).astype(np.float64)


def score_features(images: np.ndarray, embeddings: np.ndarray, nearest: np.ndarray, side: int) -> np.ndarray:
    """What the score reads, one row per query: embedding, log nearest distance, pixel features."""
    distance = np.log(np.maximum(np.asarray(nearest, dtype=np.float64), DISTANCE_FLOOR))
    return np.column_stack([np.asarray(embeddings, dtype=np.float64), distance, pixel_features(images, side)])


@dataclass(frozen=True)
class MatchScore:
    """A fitted score: standardise the features, then a linear logit (higher: less like a garment)."""

    mean: np.ndarray
    scale: np.ndarray
    weights: np.ndarray
    bias: float
    weak_above: float
    none_above: float
    calibration: dict[str, Any]  # what it was fitted on, and the figures it reached there

    def scores(self, images: np.ndarray, embeddings: np.ndarray, nearest: np.ndarray, side: int) -> np.ndarray:
        features = score_features(images, embeddings, nearest, side)
        return (features - self.mean) / self.scale @ self.weights + self.bias

    def bands(self, scores: np.ndarray) -> np.ndarray:
        return np.where(scores > self.none_above, NONE, np.where(scores > self.weak_above, WEAK, GOOD))

    def as_dict(self) -> dict[str, Any]:
        return {"mean": self.mean.tolist(), "scale": self.scale.tolist(), "weights": self.weights.tolist(),
                "bias": float(self.bias), "weak_above": float(self.weak_above),
                "none_above": float(self.none_above), "calibration": self.calibration}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "MatchScore":
        return cls(*(np.asarray(data[key], dtype=np.float64) for key in ("mean", "scale", "weights")),
                   float(data["bias"]), float(data["weak_above"]), float(data["none_above"]),
                   dict(data.get("calibration", {})))
