"""Releases are loaded only from the store's own releases/ and only when their manifest vouches for
every file (the model and index load from there), and inputs have size and pixel limits."""

from __future__ import annotations

import json
import shutil
import tomllib

import pytest

from storage.catalog import Catalog
from storage.dataset import FASHION_MNIST
from storage.images import MAX_FILE_BYTES, MAX_PIXELS, ImageRejected, normalise_image
from storage.integrity import seal
from storage.releases import MANIFEST, ReleaseError, latest_release_id, load_release, set_latest
from tasks.ingest import scan_drop_folder
from tests import corpus
from tests.conftest import REPO

FORGED_ID = "20990101T000000000000Z"


def forge_release(home, edit=None, into=None):
    """A copy of the live release under id FORGED_ID (in releases/, or in `into` and symlinked there),
    its manifest passed through `edit`; LATEST points at it."""
    live = home.releases / latest_release_id(home)
    target = (into or home.releases) / FORGED_ID
    shutil.copytree(live, target)
    manifest = json.loads((target / MANIFEST).read_text())
    manifest["release_id"] = FORGED_ID
    if edit:
        edit(manifest, target)
    (target / MANIFEST).write_text(json.dumps(seal(manifest)))  # checksums detect damage, not forgery
    if into is not None:
        (home.releases / FORGED_ID).symlink_to(target, target_is_directory=True)
    home.latest.write_text(FORGED_ID + "\n")


@pytest.mark.parametrize("pointer", ["../../etc", "/etc/passwd", "releases/../..", "", "20990101T000000000000Z/.."])
def test_latest_pointing_outside_releases_is_refused(published_home, pointer):
    published_home.latest.write_text(pointer + "\n")
    with pytest.raises(ReleaseError, match="not a release id|No release is published"):
        load_release(published_home)


def test_release_id_argument_is_checked_too(published_home):
    with pytest.raises(ReleaseError, match="not a release id"):
        load_release(published_home, "../" + latest_release_id(published_home))


def test_symlinked_release_pointing_outside_is_refused(published_home, tmp_path):
    forge_release(published_home, into=tmp_path)
    with pytest.raises(ReleaseError, match="resolves outside"):
        load_release(published_home)


def _drop_model_file(manifest, folder):
    (folder.parent / manifest["model_release"] / "model.keras").unlink()


def _grow_a_file(manifest, folder):
    metrics = next(key for key in manifest["files"] if key.endswith("metrics.json"))
    with open(folder.parent.parent / metrics, "a") as handle:
        handle.write(" ")


def _segment_outside(manifest, folder):
    manifest["segments"] = [{"name": "../../../outside", "version": 1, "rows": 1}]


def _unlisted_model(manifest, folder):
    del manifest["files"][f"releases/{manifest['model_release']}/model.keras"]


def _listed_file_outside(manifest, folder):
    manifest["files"]["../../LATEST"] = 23


@pytest.mark.parametrize("edit, message", [
    (lambda m, f: m.clear() or m.update(broken=True), "does not describe it"),
    (lambda m, f: m.update(release_id="20000101T000000000000Z"), "does not describe it"),
    (lambda m, f: m.pop("files"), "does not describe it"),
    (_drop_model_file, "missing or has the wrong size"),
    (_grow_a_file, "missing or has the wrong size"),
    (_segment_outside, "does not describe it"),
    (_unlisted_model, "does not list releases/.*/model.keras"),
    (_listed_file_outside, "missing or has the wrong size"),
], ids=["not-this-release", "wrong-release-id", "no-file-list", "file-missing", "size-mismatch",
        "segment-outside", "model-unlisted", "file-outside"])
def test_release_without_a_valid_manifest_is_refused(published_home, edit, message):
    forge_release(published_home, edit)
    with pytest.raises(ReleaseError, match=message):
        load_release(published_home)


@pytest.mark.parametrize("text, message", [(None, "no manifest.json"), ("{not json", "unreadable manifest.json")],
                         ids=["missing", "bad-json"])
def test_missing_or_unreadable_manifest_is_refused(published_home, text, message):
    forge_release(published_home)
    manifest = published_home.releases / FORGED_ID / MANIFEST
    manifest.unlink() if text is None else manifest.write_text(text)
    with pytest.raises(ReleaseError, match=message):
        load_release(published_home)


def test_latest_is_never_moved_to_an_incomplete_release(published_home):
    live = latest_release_id(published_home)
    forge_release(published_home)
    (published_home.releases / FORGED_ID / MANIFEST).unlink()
    published_home.latest.write_text(live + "\n")
    with pytest.raises(ReleaseError, match="no manifest.json"):
        set_latest(published_home, FORGED_ID)
    assert latest_release_id(published_home) == live


def test_upload_size_limit():
    with pytest.raises(ImageRejected, match="above the 20 MB limit"):
        normalise_image(b"\x89PNG\r\n\x1a\n" + bytes(MAX_FILE_BYTES))


def test_upload_pixel_limit():
    over = corpus.png_claiming(8000, 6000)  # 48 megapixels: over MAX_PIXELS, under PIL's own bomb limit
    assert 8000 * 6000 > MAX_PIXELS
    with pytest.raises(ImageRejected, match="8000x6000 pixels, above the 40-megapixel limit"):
        normalise_image(over)


def test_dropped_file_over_the_size_limit_is_rejected_without_reading_it_all(tmp_path):
    incoming = tmp_path / "incoming"
    incoming.mkdir()
    with open(incoming / "huge.png", "wb") as handle:  # sparse: no disk space used
        handle.truncate(MAX_FILE_BYTES * 4)
    scan = scan_drop_folder(incoming, Catalog(tmp_path / "catalog.lance", FASHION_MNIST), 0, FASHION_MNIST,
                            settle_seconds=0)
    assert [r.relative for r in scan.rejected] == ["huge.png"]
    assert "MB limit" in scan.rejected[0].reason


def test_page_binds_to_localhost_and_caps_uploads():
    config = tomllib.loads((REPO / ".streamlit" / "config.toml").read_text())
    assert config["server"]["address"] == "127.0.0.1"
    assert config["server"]["maxUploadSize"] * 2**20 == MAX_FILE_BYTES
