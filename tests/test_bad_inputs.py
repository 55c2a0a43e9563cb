"""Broken and awkward inputs (tests/corpus.py) through the upload path (normalise_image, what the page
and `python -m ui.search` call) and through the drop folder (the reindex flow): each one is accepted and
normalised, or rejected with a reason a user can act on, or left waiting; none is lost."""

from __future__ import annotations

import numpy as np
import pytest

from storage.dataset import UNLABELLED
from storage.images import ImageRejected, normalise_image
from storage.releases import load_release
from tests import corpus

# Upload path: case -> ("accepted", the plain image it must normalise like) or ("rejected", reason words).
UPLOAD_TABLE = {
    "zero-byte": ("rejected", "empty file"),
    "text-named-png": ("rejected", "not an image"),
    "truncated-png": ("rejected", "damaged or truncated"),
    "truncated-jpeg": ("rejected", "damaged or truncated"),
    "bomb-30000x30000-png": ("rejected", "too large in pixels"),
    "animated-gif": ("rejected", "unsupported format GIF"),
    "animated-png": ("rejected", "animated PNG"),
    "tiny-3x3-png": ("rejected", "only 3x3 pixels"),
    "blank-white-png": ("rejected", "no object found"),
    "16-bit-png": ("accepted", corpus.eight_bit_twin_of_sixteen_bit),
    "cmyk-jpeg": ("accepted", corpus.gray_twin_of_cmyk),
    "rgba-transparent-png": ("accepted", corpus.white_twin_of_rgba),
    "exif-rotated-jpeg": ("accepted", corpus.upright_jpeg),
    "huge-photo-4000x3000-jpeg": ("accepted", corpus.small_twin_of_huge_photo),
    "non-ascii-name-png": ("accepted", None),
}

# Drop folder: path under incoming/ -> (outcome, label when processed or reason words when rejected).
DROP_TABLE = {
    "empty.png": ("rejected", "empty file"),
    "price list.png": ("rejected", "not an image"),
    "truncated.png": ("rejected", "damaged or truncated"),
    "shirt/truncated.jpg": ("rejected", "damaged or truncated"),
    "bomb.png": ("rejected", "too large in pixels"),
    "animated.gif": ("rejected", "unsupported file type .gif"),
    "animated.png": ("rejected", "animated PNG"),
    "tiny.png": ("rejected", "only 3x3 pixels"),
    "blank.png": ("rejected", "no object found"),
    "dress/16-bit.png": ("processed", 3),
    "coat/cmyk.JPG": ("processed", 4),
    "rgba.png": ("processed", UNLABELLED),
    "0/exif-rotated.jpeg": ("processed", 0),
    "huge photo.jpg": ("processed", UNLABELLED),
    "Ankle Boot/robe d'été №2 (copie).png": ("processed", 9),
    ".hidden.png": ("waiting", None),
    "dress/new.png.crdownload": ("waiting", None),
    "bag/just-dropped.png": ("waiting", None),  # newer than settle_seconds; the second run takes it
    "hats/cap.png": ("rejected", "'hats' is not a class name"),
    "dress/summer/deep.png": ("rejected", "nested too deep"),
    "link.png": ("rejected", "symbolic links are not followed"),
    "zz-same-as-rgba.png": ("rejected", "duplicate of catalogue item"),
    "notes.txt": ("rejected", "unsupported file type .txt"),
}


def test_tables_cover_the_whole_corpus():
    assert set(UPLOAD_TABLE) == set(corpus.IMAGES)
    assert set(DROP_TABLE) == set(corpus.DROP_PATHS.values()) | set(corpus.DROP_ONLY.values())


@pytest.mark.parametrize("case", sorted(UPLOAD_TABLE))
def test_upload_path(case):
    outcome, expected = UPLOAD_TABLE[case]
    data = corpus.IMAGES[case]()
    if outcome == "rejected":
        with pytest.raises(ImageRejected, match=expected):
            normalise_image(data)
        return
    image = normalise_image(data)
    assert image.pixels.shape == (28, 28) and image.pixels.dtype == np.uint8
    border = np.concatenate([image.pixels[0], image.pixels[-1], image.pixels[:, 0], image.pixels[:, -1]])
    assert np.median(border) < 16 and image.pixels.max() > 150  # a light garment on black, as in the dataset
    if expected is not None:  # the awkward encoding normalises like the plain image of the same garment
        plain = normalise_image(expected()).pixels.astype(float)
        assert np.abs(image.pixels - plain).mean() < 3, case


def test_exif_orientation_is_applied():
    upright = normalise_image(corpus.upright_jpeg()).pixels.astype(float)
    untagged = normalise_image(corpus.exif_rotated_jpeg(orientation=None)).pixels.astype(float)
    tagged = normalise_image(corpus.exif_rotated_jpeg()).pixels.astype(float)
    assert np.abs(tagged - upright).mean() < 3
    assert np.abs(untagged - upright).mean() > 30  # the tag matters: without it the garment lies on its side


def test_drop_folder_corpus(any_published_home, tmp_path):
    from flows.reindex import reindex

    home = any_published_home
    layout = corpus.build_drop_corpus(home.incoming, tmp_path / "outside")
    symlink_target = tmp_path / "outside" / "elsewhere.png"
    target_bytes = symlink_target.read_bytes()
    files_in = set(layout.values())
    assert files_in == set(DROP_TABLE)

    result = reindex(data_home=home.location, settle_seconds=600)

    assert result["published"], result
    assert result["seen"] == len(files_in) == result["indexed"] + result["rejected"] + result["waiting"]
    processed, rejected, waiting = corpus.accounted(home)
    assert processed | rejected | waiting == files_in and len(processed) + len(rejected) + len(waiting) == len(files_in)
    for relative, (outcome, detail) in DROP_TABLE.items():
        placed = {"processed": processed, "rejected": rejected, "waiting": waiting}
        assert relative in placed[outcome], (relative, outcome, result.get("rejections"))
        if outcome == "rejected":
            [moved] = home.rejected.glob(f"*/{relative}")
            reason = (moved.parent / (moved.name + ".reason.txt")).read_text()
            assert detail in reason, (relative, reason)
    assert symlink_target.read_bytes() == target_bytes  # the link was moved, its target left alone

    release = load_release(home)
    assert release.release_id == result["release_id"]
    labels = {path.split("/", 2)[2]: int(label) for path, label in zip(release.items.paths, release.items.labels)
              if path.startswith("processed/")}
    assert labels == {relative: detail for relative, (outcome, detail) in DROP_TABLE.items() if outcome == "processed"}
    huge = home.processed / release.release_id / "huge photo.jpg"
    nearest = release.search(normalise_image(huge.read_bytes()).pixels[None], k=1)[0][0]
    assert nearest.path.endswith("huge photo.jpg") and nearest.distance < 1e-3

    # a later run takes the file that has settled since; hidden and partial files keep waiting
    second = reindex(data_home=home.location, settle_seconds=0)
    assert (second["seen"], second["indexed"], second["waiting"]) == (3, 1, 2), second
    processed, rejected, waiting = corpus.accounted(home)
    assert "bag/just-dropped.png" in processed
    assert waiting == {".hidden.png", "dress/new.png.crdownload"}
    assert len(processed) + len(rejected) + len(waiting) == len(files_in)
