"""The Streamlit page, driven headless by streamlit.testing's AppTest against a tiny published release."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image
from streamlit.testing.v1 import AppTest

from flows.reindex import reindex
from storage.dataset import FASHION_MNIST
from storage.home import HOME_ENV, DataHome
from storage.releases import latest_release_id, load_release
from tests.conftest import REPO
from tests.corpus import drawn_circle, encode, garment
from tests.fuzz_cases import fuzz_case
from ui import views

APP = str(REPO / "ui" / "app.py")
TIMEOUT_S = 120  # the first run of a test loads the release's model


@pytest.fixture(scope="module")
def live_home(tiny_release_home) -> DataHome:
    """The session's tiny release, shared read-only by the tests that only browse it: the page never
    writes, and its cached release then loads once for all of them."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv(HOME_ENV, str(tiny_release_home))
        yield DataHome.from_env(tiny_release_home)


def open_page() -> AppTest:
    at = AppTest.from_file(APP, default_timeout=TIMEOUT_S)
    at.run()
    assert not at.exception, at.exception
    return at


def texts(elements) -> list[str]:
    return [element.value for element in elements]


def image_captions(at: AppTest) -> list[str]:
    return [caption for image in at.image for caption in image.captions]


def neighbour_captions(at: AppTest) -> list[str]:
    """Captions of the neighbours grid's images ("#1 Trouser · d=0.012", marked when same class)."""
    return [caption for caption in image_captions(at) if " · d=" in caption]


def drop_and_reindex(home: DataHome, files: dict[str, bytes]) -> dict:
    """Drop `files` (path under incoming/ -> bytes) and run the real re-index flow, which publishes them."""
    for relative, data in files.items():
        (home.incoming / relative).parent.mkdir(parents=True, exist_ok=True)
        (home.incoming / relative).write_bytes(data)
    result = reindex(data_home=str(home.root), settle_seconds=0)
    assert result["published"] and result["indexed"] == len(files), result
    return result


def publish_reindex(home: DataHome) -> str:
    """Publish a second release the way the drop folder does: one photo dropped, the re-index flow run.
    Returns the new release id (also used by tests/test_browser.py)."""
    return drop_and_reindex(home, {"new-arrival.jpg": product_photo()})["release_id"]


def product_photo() -> bytes:
    """A dark garment-like shape on a white 640x480 backdrop, as a JPEG (the common upload)."""
    image = Image.new("RGB", (640, 480), "white")
    image.paste((60, 60, 90), (220, 60, 420, 420))
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG", quality=90)
    return buffer.getvalue()


def test_page_shows_the_live_release_and_its_evaluation(live_home):
    release = load_release(live_home)
    at = open_page()
    assert any(release.release_id in text and "lean" in text for text in texts(at.caption))
    headline = next(text for text in texts(at.markdown) if "precision@1" in text)  # one compact line
    assert all(name in headline for name in (f"{len(release.items):,}", "raw pixels", "recall@5", "MAP@10"))
    assert [tab.label for tab in at.tabs] == ["Search", "Evaluation"]
    assert not at.get("vega_lite_chart")  # only the open view is drawn

    at.session_state["view"] = "Evaluation"
    at.run()
    assert not at.exception, at.exception
    assert len(at.get("vega_lite_chart")) == 4  # baseline, per class, confusion, history
    assert any(f"{len(release.items)} indexed items" in text for text in texts(at.caption))


def test_picking_a_gallery_image_shows_its_neighbours(live_home):
    at = open_page()
    first = at.button[0]
    query_label = FASHION_MNIST.label_name(next(i.label for i in views.gallery_items(live_home, load_release(live_home))
                                  if f"pick-{i.key}" == first.key))
    first.click().run()
    assert not at.exception, at.exception
    assert f"Query: {query_label}" in texts(at.subheader)
    captions = neighbour_captions(at)
    assert len(captions) == 8  # the default k
    assert captions[0].startswith(f"✓ #1 {query_label}")  # same class marked; tiny classes are separable
    assert not at.warning  # a test image of a known class is a close match

    at.slider(key="k").set_value(3).run()
    assert len(neighbour_captions(at)) == 3


def test_gallery_filters_by_class_and_pages(live_home):
    at = open_page()
    assert "Images 1-20 of 50" in texts(at.caption)
    at.selectbox(key="class_filter").set_value("Trouser").run()
    gallery = [c for c in image_captions(at) if " · test #" in c]
    assert gallery and all(c.startswith("Trouser · ") for c in gallery)
    everything = at.selectbox(key="class_filter").options[0]
    at.selectbox(key="class_filter").set_value(everything).run()
    at.number_input[0].set_value(3).run()
    assert "Images 41-50 of 50" in texts(at.caption)


def test_upload_searches_a_photo_and_explains_bad_files(live_home):
    at = open_page()
    uploader = at.file_uploader(key="upload")

    uploader.set_value(("notes.png", b"this is not an image", "image/png")).run()
    assert not at.exception, at.exception
    assert len(at.error) == 1 and "notes.png" in at.error[0].value and "not an image" in at.error[0].value

    good = product_photo()
    at.file_uploader(key="upload").set_value(("cut.jpg", good[: len(good) // 2], "image/jpeg")).run()
    assert not at.exception, at.exception
    assert "truncated" in at.error[0].value

    at.file_uploader(key="upload").set_value(("shirt.jpg", good, "image/jpeg")).run()
    assert not at.exception, at.exception
    assert not at.error
    assert "Your photo" in texts(at.subheader)
    assert "searched as 28x28" in image_captions(at)
    captions = neighbour_captions(at)
    assert len(captions) == 8 and not any(c.startswith(("✓", "✗")) for c in captions)  # no class to compare

    at.file_uploader(key="upload").set_value(("circle.png", drawn_circle(), "image/png")).run()
    assert not at.exception, at.exception
    assert len(at.warning) == 1 and "No close match" in at.warning[0].value  # the neighbours are still shown
    assert len(neighbour_captions(at)) == 8


def test_upload_with_damaged_exif_is_searched_by_its_pixels(live_home):
    """A fuzzed JPEG whose EXIF entry has the wrong type: PIL's exif_transpose raises AttributeError on it
    (the page used to show that traceback). Its pixels are fine, so the page searches with them."""
    case = fuzz_case(0, 42)
    at = open_page()
    at.file_uploader(key="upload").set_value((f"{case.name}.jpg", case.data, "image/jpeg")).run()
    assert not at.exception, at.exception
    assert not at.error, texts(at.error)
    assert "Your photo" in texts(at.subheader)
    assert "searched as 28x28" in image_captions(at)
    assert len(neighbour_captions(at)) == 8


def test_without_a_release_the_page_says_how_to_make_one(home):
    at = open_page()
    assert len(at.info) == 1 and "No release is published" in at.info[0].value
    assert "make demo" in at.info[0].value and "python -m flows.pipeline" in at.info[0].value


def test_a_broken_latest_pointer_is_reported(home):
    home.latest.write_text("../../etc\n")
    at = open_page()
    assert len(at.error) == 1 and "not a release id" in at.error[0].value


def test_page_switches_to_a_newly_published_release(published_home):
    old = load_release(published_home)
    at = open_page()
    assert any(old.release_id in text for text in texts(at.caption))

    new_id = publish_reindex(published_home)
    assert latest_release_id(published_home) == new_id != old.release_id

    at.run()
    assert not at.exception, at.exception
    assert any(new_id in text for text in texts(at.caption))
    assert not any(old.release_id in text for text in texts(at.caption))


def test_drop_folder_items_are_in_the_gallery_and_do_not_find_themselves(published_home):
    before = len(load_release(published_home).items)
    result = drop_and_reindex(published_home, {"trouser/first.png": encode(garment(variant=1), "PNG"),
                                               "second.png": encode(garment(variant=2), "PNG")})
    live = views.LiveRelease.load(published_home, result["release_id"])
    dropped = [item for item in views.gallery_items(published_home, live.release) if item.row is not None]
    assert [item.row for item in dropped] == [before, before + 1]  # the re-index appended them
    assert sorted(item.caption for item in dropped) == ["dropped: first.png", "dropped: second.png"]
    first = dropped[0]
    result = views.search_item(live, first, k=5)
    np.testing.assert_array_equal(result.pixels, live.release.items.images[first.row].reshape(28, 28))
    assert len(result.neighbours) == 5 and first.item_id not in [n.item_id for n in result.neighbours]
    np.testing.assert_array_equal(live.release.items.item_ids[result.rows], [n.item_id for n in result.neighbours])


@pytest.mark.parametrize("scale", [1, 4])
def test_enlarge_keeps_pixels_crisp_and_frames_in_colour(scale):
    pixels = np.arange(28 * 28, dtype=np.uint16).reshape(28, 28).astype(np.uint8)
    big = views.enlarge(pixels, scale)
    assert big.shape == (28 * scale, 28 * scale)
    np.testing.assert_array_equal(big[::scale, ::scale], pixels)
    framed = views.enlarge(pixels, scale, frame=views.SAME_CLASS)
    assert framed.shape == (28 * scale, 28 * scale, 3) and tuple(framed[0, 0]) == views.SAME_CLASS
