"""No close match, measured on held-out data only: the share of garments a release calls "no close
match" and the share of generated pictures that are not garments it catches, for Fashion-MNIST and
for a labelled folder of photos (clothing-small by default). Prints JSON.

Garments: the half of the evaluation's queries the calibration never saw
(tasks/match_calibration.py calibration_rows). Not garments: --per-kind pictures of each kind drawn
from HELD_OUT_SEED (tasks/out_of_distribution.py), encoded and normalised as uploads are; the
calibration drew its own from CALIBRATION_SEED. Beside the match score, in the same run on the same
queries: the nearest distance alone against the release's no_match_distance (what answered before).

Each dataset's data home is trained here by the pipeline with its defaults (Fashion-MNIST about
10 minutes, clothing-small about 15 on the 2-core CI machine), or an already-trained one is given
with --fashion-home / --photo-home (read only, never written). A release evaluated before the
match score existed is calibrated here with the evaluation's own function, and the JSON says so.
Targets (issue 19): garments flagged <= 2%, pictures caught >= 90%, on both datasets.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from benchmarks.common import machine, mirror_dir
from benchmarks.own_images import DEFAULT_IMAGES
from storage.home import DataHome
from storage.match_score import BANDS, NONE, WEAK
from storage.releases import load_release
from storage.search_index import exact_knn
from tasks.match_calibration import calibrate_match_score, calibration_rows
from tasks.out_of_distribution import HELD_OUT_SEED, KINDS, normalised, pictures
from tasks.reshape import Arrays

TARGET_GARMENTS_FLAGGED = 0.02
TARGET_CAUGHT = 0.90


def shares(bands: np.ndarray) -> dict:
    return {"count": int(len(bands)), **{band: round(float((bands == band).mean()), 4) for band in BANDS}}


def measure(root: Path, per_kind: int) -> dict:
    """The figures for the live release of the data home at `root`."""
    release = load_release(DataHome(root))
    dataset = release.dataset
    images, labels = Arrays(DataHome(root).store).load("test")
    images = images.reshape(len(images), *dataset.pixel_shape)
    index_embeddings = release.embeddings[release.items.evaluation_index]  # what the evaluation searched
    embeddings = release.embed(images)
    nearest = exact_knn(embeddings, index_embeddings, 1)[0][:, 0]
    calibrating, held = calibration_rows(len(labels))
    score, calibrated_by = release.match_score, "the pipeline's evaluation (stored in metrics.json)"
    if score is None:
        score = calibrate_match_score(release.embed, images[calibrating], embeddings[calibrating],
                                      nearest[calibrating], index_embeddings, dataset)
        calibrated_by = "this benchmark (the release predates the match score), with the evaluation's function"
    started = time.perf_counter()
    ood_images, kinds = normalised(pictures(HELD_OUT_SEED, per_kind), dataset)
    picture_seconds = time.perf_counter() - started
    ood_embeddings = release.embed(ood_images)
    ood_nearest = exact_knn(ood_embeddings, index_embeddings, 1)[0][:, 0]
    garment_bands = score.bands(score.scores(images[held], embeddings[held], nearest[held], dataset.side))
    ood_bands = score.bands(score.scores(ood_images, ood_embeddings, ood_nearest, dataset.side))
    flagged, caught = float((garment_bands == NONE).mean()), float((ood_bands == NONE).mean())
    limit = release.no_match_distance
    return {
        "dataset": dataset.title, "release": release.release_id, "indexed_items": int(len(index_embeddings)),
        "calibrated_by": calibrated_by, "calibration": score.calibration,
        "thresholds": {"weak_above": round(score.weak_above, 4), "none_above": round(score.none_above, 4)},
        "held_out_garments": shares(garment_bands),
        "held_out_pictures": {**shares(ood_bands), "seed": HELD_OUT_SEED, "rejected_by_normalise":
                              len(KINDS) * per_kind - len(ood_bands), "seconds_to_draw_and_normalise":
                              round(picture_seconds, 2)},
        "by_kind": {kind: shares(ood_bands[kinds == kind]) for kind in KINDS},
        "garments_flagged": round(flagged, 4), "pictures_caught": round(caught, 4),
        "pictures_weak": round(float((ood_bands == WEAK).mean()), 4),
        "targets_met": {"garments_flagged<=0.02": flagged <= TARGET_GARMENTS_FLAGGED,
                        "pictures_caught>=0.90": caught >= TARGET_CAUGHT},
        "distance_alone": None if limit is None else {
            "no_match_distance": round(limit, 4),
            "garments_flagged": round(float((nearest[held] > limit).mean()), 4),
            "pictures_caught": round(float((ood_nearest > limit).mean()), 4)},
    }


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.no_match", description=__doc__.split("\n\n")[0])
    parser.add_argument("--fashion-home", default="", help="a trained Fashion-MNIST data home (default: train one)")
    parser.add_argument("--photo-home", default="", help="a trained photo data home (default: train one on --images)")
    parser.add_argument("--mirror", default="", help="Fashion-MNIST files (default: ../shared/data/fashion-mnist)")
    parser.add_argument("--images", default=str(DEFAULT_IMAGES), help="the labelled photos (default: clothing-small)")
    parser.add_argument("--per-kind", type=int, default=200, help="held-out pictures of each kind (default 200)")
    parser.add_argument("--only", choices=("fashion-mnist", "photos"), default=None, help="measure one dataset")
    args = parser.parse_args(argv)
    result = {"machine": machine(), "targets": {"garments_flagged": TARGET_GARMENTS_FLAGGED,
                                                "pictures_caught": TARGET_CAUGHT}}
    with tempfile.TemporaryDirectory(prefix="no-match-") as scratch:
        for name, given in (("fashion-mnist", args.fashion_home), ("photos", args.photo_home)):
            if args.only not in (None, name):
                continue
            root = Path(given) if given else Path(scratch) / name
            if not given:
                from flows.pipeline import pipeline

                fashion = name == "fashion-mnist"
                pipeline(data_home=str(root), **({"mirror": str(mirror_dir(args.mirror))} if fashion else
                                                 {"images": args.images}))
            result[name] = {"home": str(root) if given else "trained by this run (defaults)",
                            **measure(root, args.per_kind)}
    return result


if __name__ == "__main__":
    with contextlib.redirect_stdout(sys.stderr):  # TF Similarity prints its progress on stdout
        figures = main()
    print(json.dumps(figures, indent=2))
