"""One odd file never stops the drop folder, the search CLI or the page: names that are not UTF-8 or
too long for a reason file, multi-picture JPEGs, FIFOs (also swapped in between the scan and the
read), and files whose decoding fails in unexpected ways. Each case was found by an adversarial run
in which it stopped every later re-index (issue 12)."""

from __future__ import annotations

import io
import json
import os

import numpy as np
import pytest
from PIL import Image

import tasks.ingest
from flows.reindex import reindex
from storage.catalog import Catalog
from storage.dataset import FASHION_MNIST
from storage.files import escape_name, read_regular_file, unescape_name
from storage.images import ImageRejected, normalise_file, normalise_image
from storage.releases import load_release
from tests import corpus
from tests.fuzz_cases import fuzz_case
from tests.watchdog import under_watchdog
from ui.search import search_files

TWO_HOURS = 7200
DAMAGED_EXIF_JPEG = (0, 42)  # fuzz_case whose EXIF made ImageOps.exif_transpose raise AttributeError


def drop(path, data: bytes) -> None:
    """Write a settled (two hours old) file, creating its folder."""
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "wb") as handle:
        handle.write(data)
    past = os.path.getmtime(path) - TWO_HOURS
    os.utime(path, (past, past))


def mpo(variant: int) -> bytes:
    """A two-picture JPEG (MPO) as phones and cameras save them: the garment, then a second picture."""
    first = corpus.garment(120, 140, variant=variant).convert("RGB")
    buffer = io.BytesIO()
    first.save(buffer, format="MPO", save_all=True, append_images=[Image.new("RGB", first.size, (9, 9, 9))])
    return buffer.getvalue()


def test_escaped_names_are_text_and_reversible():
    raw = os.fsdecode(b"robe-\xff\xfe-\\x41-\xc3\xa9t\xc3\xa9.png")  # invalid bytes, a literal "\x41", UTF-8
    shown = escape_name(raw)
    assert shown == "robe-\\xff\\xfe-\\\\x41-été.png"
    shown.encode("utf-8")  # storable in SQLite, JSON, a UTF-8 reason file
    assert unescape_name(shown) == raw and os.fsencode(unescape_name(shown)) == os.fsencode(raw)
    assert escape_name("plain name.png") == "plain name.png"


def test_multi_picture_jpeg_is_read_as_its_first_picture():
    image = normalise_image(mpo(variant=2))
    single = normalise_image(corpus.encode(corpus.garment(120, 140, variant=2).convert("RGB"), "JPEG"))
    assert image.source_format == "MPO"
    assert np.abs(image.pixels.astype(float) - single.pixels).mean() < 3


def test_a_fifo_is_rejected_without_blocking(tmp_path):
    fifo = tmp_path / "photo.png"
    os.mkfifo(fifo)
    with pytest.raises(ImageRejected, match="FIFO"):
        under_watchdog(lambda: normalise_file(fifo), seconds=30)
    with pytest.raises(OSError, match="FIFO"):
        read_regular_file(fifo, 100)


def test_search_cli_answers_every_file_when_one_is_bad(published_home, tmp_path):
    release = load_release(published_home)
    good = tmp_path / "good.png"
    good.write_bytes(corpus.encode(corpus.garment(variant=1), "PNG"))
    damaged = tmp_path / "damaged-exif.jpg"
    damaged.write_bytes(fuzz_case(*DAMAGED_EXIF_JPEG).data)
    fifo = tmp_path / "pipe.png"
    os.mkfifo(fifo)
    odd_name = tmp_path / os.fsdecode(b"caf\xe9.png")  # Latin-1, not UTF-8
    odd_name.write_bytes(corpus.encode(corpus.garment(variant=2), "PNG"))
    results = under_watchdog(lambda: search_files(release, [damaged, fifo, good, odd_name], k=3))
    assert ["neighbours" in r for r in results] == [True, False, True, True], results
    assert "FIFO" in results[1]["error"]  # the damaged EXIF is ignored: the pixels are fine
    assert results[3]["image"].endswith("caf\\xe9.png")
    json.dumps(results, ensure_ascii=False).encode("utf-8")  # what the CLI prints is valid UTF-8 JSON


def test_drop_folder_survives_odd_names_formats_and_fifos(published_home, monkeypatch):
    home = published_home
    incoming = home.incoming
    live = load_release(home)
    garment_png = lambda variant: corpus.encode(corpus.garment(variant=variant), "PNG")  # noqa: E731
    latin1 = os.fsdecode(b"chemise-\xe9t\xe9.png")
    long_cjk = "长" * 78 + ".png"  # 78 x 3 bytes + 4: a legal name, too long to take ".reason.txt"
    long_ascii = "x" * 246 + ".png"  # 250 bytes
    drop(incoming / latin1, garment_png(20))
    drop(incoming / "dress" / os.fsdecode(b"robe-\xff.png"), garment_png(21))
    drop(incoming / os.fsdecode(b"caf\xe9-folder") / "in-odd-folder.png", garment_png(22))
    drop(incoming / long_cjk, b"not an image at all")
    drop(incoming / long_ascii, b"")
    drop(incoming / "camera.jpg", mpo(variant=23))
    drop(incoming / "damaged-exif.jpg", fuzz_case(*DAMAGED_EXIF_JPEG).data)
    drop(incoming / "zz-after-the-long-ones.png", b"also not an image")
    os.mkfifo(incoming / "pipe.png")
    drop(incoming / "swapped.png", garment_png(24))

    real_walk = tasks.ingest._walk

    def walk_then_swap(*args):
        """The file is a PNG when listed, and a FIFO by the time it is read."""
        for entry in real_walk(*args):
            if entry[0] == "swapped.png":
                (incoming / "swapped.png").unlink()
                os.mkfifo(incoming / "swapped.png")
            yield entry

    monkeypatch.setattr(tasks.ingest, "_walk", walk_then_swap)
    result = under_watchdog(lambda: reindex(data_home=str(home.root), settle_seconds=0))

    rejections = {r["path"]: r["reason"] for r in result["rejections"]}
    assert result["published"] and result["seen"] == 10 and result["waiting"] == 0, result
    assert {"pipe.png", "swapped.png", long_cjk, long_ascii, "zz-after-the-long-ones.png",
            "caf\\xe9-folder/in-odd-folder.png"} <= set(rejections), rejections
    assert "FIFO" in rejections["pipe.png"] and "FIFO" in rejections["swapped.png"]
    assert "caf\\xe9-folder" in rejections["caf\\xe9-folder/in-odd-folder.png"]
    assert not corpus.accounted(home)[2]  # nothing left waiting in incoming/

    release = load_release(home)
    added = {str(path).split("/", 2)[2]: int(label) for path, label in zip(release.items.paths, release.items.labels)
             if str(path).startswith("processed/")}
    assert added.keys() == {"chemise-\\xe9t\\xe9.png", "dress/robe-\\xff.png", "camera.jpg", "damaged-exif.jpg"}
    assert added["dress/robe-\\xff.png"] == 3
    # moved with their exact bytes, and the catalogue (SQLite) holds the escaped text
    assert (home.processed / release.release_id / latin1).read_bytes() == garment_png(20)
    assert os.path.exists(os.fsencode(home.processed / release.release_id / "dress") + b"/robe-\xff.png")
    catalogued = set(Catalog(home.catalog, FASHION_MNIST).load().paths.tolist())
    assert f"processed/{release.release_id}/chemise-\\xe9t\\xe9.png" in catalogued
    assert len(release.items) == len(live.items) + 4

    # every rejected file moved beside its reason; the long names' reasons have short derived names
    run_folder = next(home.rejected.iterdir())
    for name in (long_cjk, long_ascii):
        assert (run_folder / name).exists()
        [reason] = [p for p in run_folder.iterdir() if p.name.startswith(name[:30]) and p.name.endswith(".reason.txt")]
        assert len(os.fsencode(reason.name)) < 200
        assert any(name in note and reason.name in note for note in result["notes"])
    assert (run_folder / "zz-after-the-long-ones.png").exists()
    assert not [p for p in home.root.rglob("*.part")]
