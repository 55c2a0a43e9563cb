"""No close match: the generated non-garment pictures, the match score's features and JSON, and the
bands a published release gives a drawn circle, a noise image, text and a garment."""

from __future__ import annotations

import io
import json

import numpy as np
import pytest
from PIL import Image

from storage.dataset import FASHION_MNIST, DatasetDescription
from storage.images import encode_png
from storage.match_score import GOOD, NONE, PIXEL_FEATURES, WEAK, MatchScore, pixel_features
from storage.releases import Neighbour, load_release
from tasks.match_calibration import calibration_rows
from tasks.out_of_distribution import CALIBRATION_SEED, HELD_OUT_SEED, KINDS, normalised, picture, pictures
from tests.corpus import drawn_circle, noise_image, text_image
from tests.tiny_data import class_images
from ui.search import search_files

PHOTOS = DatasetDescription(name="photos", side=64, channels=3, class_names=("a", "b"), conventions="photo")


# ---------------------------------------------------------------------------------- the generator


def test_pictures_are_the_same_for_a_seed_and_differ_between_seeds():
    for kind in KINDS:
        assert picture(CALIBRATION_SEED, kind, 3) == picture(CALIBRATION_SEED, kind, 3)
        assert picture(CALIBRATION_SEED, kind, 3).data != picture(HELD_OUT_SEED, kind, 3).data
        assert picture(CALIBRATION_SEED, kind, 3).data != picture(CALIBRATION_SEED, kind, 4).data
    calibration = {image.data for image in pictures(CALIBRATION_SEED, 5)}
    held_out = {image.data for image in pictures(HELD_OUT_SEED, 5)}
    assert len(calibration) == len(held_out) == 5 * len(KINDS) and not calibration & held_out


def test_pictures_are_uploads_of_every_kind_size_and_format():
    images = pictures(HELD_OUT_SEED, 8)
    assert [image.kind for image in images] == [kind for kind in KINDS for _ in range(8)]
    opened = [Image.open(io.BytesIO(image.data)) for image in images]
    assert {picture.format for picture in opened} == {"PNG", "JPEG"}
    assert len({picture.size for picture in opened}) > len(images) // 2  # sizes vary, not only squares
    assert all(min(picture.size) >= 200 for picture, image in zip(opened, images) if image.kind == "noise")
    for dataset in (FASHION_MNIST, PHOTOS):
        pixels, kinds = normalised(images, dataset)
        assert pixels.shape[1:] == dataset.pixel_shape and pixels.dtype == np.uint8
        assert len(pixels) == len(kinds) >= 0.7 * len(images)  # some look flat in grey: "no object found"
        assert set(kinds) == set(KINDS)


def test_calibration_and_reported_queries_are_halves_that_never_overlap():
    calibrating, held = calibration_rows(101)
    assert len(calibrating) == 50 and len(held) == 51
    assert not set(calibrating) & set(held) and set(calibrating) | set(held) == set(range(101))
    assert np.array_equal(calibration_rows(101)[0], calibrating)


# ------------------------------------------------------------------------------------- the score


def test_pixel_features_of_grey_and_colour_images():
    grey = normalised(pictures(CALIBRATION_SEED, 2), FASHION_MNIST)[0]
    colour = normalised(pictures(CALIBRATION_SEED, 2), PHOTOS)[0]
    for pixels, side in ((grey, FASHION_MNIST.side), (colour, PHOTOS.side)):
        features = pixel_features(pixels, side)
        assert features.shape == (len(pixels), len(PIXEL_FEATURES)) and np.isfinite(features).all()
        np.testing.assert_allclose(pixel_features(pixels[:1], side), features[:1])  # one at a time, the same
    flat = np.zeros((1, 28, 28), np.uint8)
    flat[0, 4:24, 4:24] = 200
    features = dict(zip(PIXEL_FEATURES, pixel_features(flat, 28)[0]))
    assert features["flat_pairs"] > 0.9 and features["distinct_colours"] == pytest.approx(2 / 784)
    assert features["asymmetry"] == 0 and features["saturation"] == 0


def test_match_score_is_plain_json_and_bands_by_its_two_thresholds():
    score = MatchScore(np.zeros(3), np.ones(3), np.array([1.0, 0.0, 0.0]), 0.0, weak_above=1.0, none_above=2.0,
                       calibration={"garment_queries": 10})
    again = MatchScore.from_dict(json.loads(json.dumps(score.as_dict())))
    assert again.as_dict() == score.as_dict()
    assert list(score.bands(np.array([0.5, 1.0, 1.5, 2.0, 2.5]))) == [GOOD, GOOD, WEAK, WEAK, NONE]


def test_a_release_from_before_the_score_bands_by_its_no_match_distance(published_home):
    release = load_release(published_home)
    release.metrics = {"no_match_distance": 0.2}  # what older releases' metrics.json held
    pixels, embedding = np.zeros((28, 28), np.uint8), np.zeros(64, np.float32)

    def at(distance: float) -> list[Neighbour]:
        return [Neighbour(1, 0, "T-shirt/top", distance, "p", 1)]

    assert release.match_score is None
    assert release.match_band(pixels, embedding, at(0.1)) == GOOD
    assert release.match_band(pixels, embedding, at(0.3)) == NONE
    assert release.match_band(pixels, embedding, []) == GOOD


# ----------------------------------------------------------------------- a published release


def test_circle_noise_and_text_are_no_close_match_and_a_garment_is_a_good_one(published_home, tmp_path):
    release = load_release(published_home)
    calibration = release.metrics["match_score"]["calibration"]
    assert calibration["garment_queries"] == 50 and calibration["out_of_distribution_seed"] == CALIBRATION_SEED
    files = {"circle.png": drawn_circle(), "noise.png": noise_image(), "text.jpg": text_image(),
             "garment.png": encode_png(class_images(np.array([3]), np.random.default_rng(11))[0])}
    for name, data in files.items():
        (tmp_path / name).write_bytes(data)
    results = {result["image"].rsplit("/", 1)[-1]: result
               for result in search_files(release, [tmp_path / name for name in files], 5)}
    for name in ("circle.png", "noise.png", "text.jpg"):
        assert results[name]["match"] == NONE and results[name]["no_match"], (name, results[name]["match"])
    assert results["garment.png"]["match"] == GOOD and not results["garment.png"]["no_match"]
    assert results["garment.png"]["neighbours"][0]["label"] == 3


def test_most_held_out_pictures_are_caught_and_garments_are_not(published_home):
    """The benchmark's measurement in small: tiny garments are easy, so the margins are wide."""
    release = load_release(published_home)
    ood_pixels, _ = normalised(pictures(HELD_OUT_SEED, 6), release.dataset)
    bands = [release.match_band(pixels, embedding, neighbours) for pixels, embedding, neighbours
             in zip(ood_pixels, release.embed(ood_pixels), release.search(ood_pixels, 3))]
    assert np.mean(np.array(bands) == NONE) >= 0.8, bands
    garments = class_images(np.arange(40) % 10, np.random.default_rng(12))
    bands = np.array([release.match_band(pixels, embedding, neighbours) for pixels, embedding, neighbours
                      in zip(garments, release.embed(garments), release.search(garments, 3))])
    assert np.mean(bands == GOOD) >= 0.8 and np.mean(bands == NONE) <= 0.1, bands
