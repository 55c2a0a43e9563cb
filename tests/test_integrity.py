"""Integrity (issue 17 item 4): every file a release owns has a checksum recorded when it is written; one
flipped byte (same size) in any kind of file is found by `flows.verify`, which names it, and refused when
a release reads it, with the releases that do not read it; on S3 an open downloads only what it reads."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys

import numpy as np
import pytest

from flows.cli import build_parser
from flows.verify import DamageFoundError, verify
from storage.catalog import Catalog, CatalogItems
from storage.dataset import FASHION_MNIST
from storage.embedder import EMBEDDER_FILE
from storage.integrity import CHECKSUMS, GRAPH_CHECKSUM, READ_WHOLE, SEAL, checksum_file, dataset_checksums
from storage.lock import writer_lock
from storage.releases import (MANIFEST, METRICS_FILE, MODEL_FILE, ReleaseError, ReleaseManifest, ReleaseWriter,
                              latest_release_id, load_release, read_manifest, release_key)
from storage.search_index import ANN_MIN_ITEMS, IN_MEMORY_LIMIT_VARIABLE, graph_key, is_on_demand, segment_key
from tasks.verify import NO_CHECKSUMS, OK, PARTLY_CHECKED
from tests.conftest import REPO, upload_home
from tests.test_storage import make_items, publish

KINDS = ["manifest", "model", "embedder", "metrics", "graph", "lance-data", "lance-version-manifest"]


def flip_byte(home, key: str, at: int | None = None) -> None:
    """Flip one bit of the store's object at `key` in place, its size unchanged (on disk or on S3)."""
    data = bytearray(home.store.read_bytes(key))
    at = len(data) // 2 if at is None else at
    data[at] ^= 0x01
    if home.is_remote:
        home.store.write_bytes(key, bytes(data))
    else:
        with open(home.store.path(key), "r+b") as handle:  # the same file, as a disk would damage it
            handle.seek(at)
            handle.write(data[at:at + 1])


def build_releases(home) -> tuple[str, str, str]:
    """Three releases: `tiny` (the pipeline's: model, embedder, metrics, one segment), `unrelated` (its
    own files only), and `newest`, built on `tiny` like a re-index (its model and segment) plus a
    segment large enough for a graph."""
    tiny = latest_release_id(home)
    base = load_release(home, tiny)
    with writer_lock(home):
        unrelated = publish(home, 5, first_id=10_000)
        writer = ReleaseWriter(home)
        writer.link_model_from(base)
        writer.link_segments_from(base)
        rng = np.random.default_rng(0)
        count, first = ANN_MIN_ITEMS, int(base.items.item_ids.max()) + 1
        ids = np.arange(first, first + count)
        items = CatalogItems(item_ids=ids, labels=(ids % 10).astype(np.int16),
                             images=rng.integers(0, 256, (count, *base.dataset.pixel_shape), dtype=np.uint8),
                             paths=np.array([f"items/{i}.png" for i in ids]), sources=np.array(["drop"] * count))
        vectors = rng.standard_normal((count, base.embeddings.shape[1])).astype(np.float32)
        writer.add_segment(items, vectors / np.linalg.norm(vectors, axis=1, keepdims=True))
        writer.write_json(METRICS_FILE, base.metrics)
        newest = writer.publish(ReleaseManifest("reindex", tiny, len(base.items) + count, base.manifest["model"],
                                                base.dataset))
    return tiny, unrelated, newest


def damaged_key(home, kind: str, tiny: str, newest: str) -> str:
    """The store key of the file of kind `kind` that release `newest` reads."""
    record = read_manifest(home, newest)["segments"][-1]
    dataset_file = {"lance-data": "data/", "lance-version-manifest": "_versions/"}.get(kind)
    if dataset_file:
        return f"{segment_key(record['name'])}/{next(p for p in record[CHECKSUMS] if p.startswith(dataset_file))}"
    return {"manifest": release_key(newest, MANIFEST), "model": release_key(tiny, MODEL_FILE),
            "embedder": release_key(tiny, EMBEDDER_FILE), "metrics": release_key(newest, METRICS_FILE),
            "graph": graph_key(record["name"])}[kind]


def read_as_a_page_does(home, release_id: str):
    """Open a release and use everything a query reads: the embedder, and the model file it came from."""
    release = load_release(home, release_id)
    release.embed(np.zeros((1, *release.dataset.pixel_shape), np.uint8))
    release.local_file(MODEL_FILE)
    return release


def test_every_file_a_release_owns_has_a_checksum(any_published_home):
    home = any_published_home
    _, _, newest = build_releases(home)
    manifest = load_release(home, newest).manifest
    assert SEAL in manifest and manifest[CHECKSUMS].keys() == manifest["files"].keys()
    for record in manifest["segments"]:
        paths = record[CHECKSUMS]
        assert any(p.startswith("_versions/") for p in paths) and any(p.startswith("data/") for p in paths)
        assert not any("latest" in p for p in paths)  # what Lance rewrites is Lance's
    assert GRAPH_CHECKSUM in manifest["segments"][-1]


@pytest.mark.parametrize("kind", KINDS)
def test_a_flipped_byte_in_any_file_is_found_by_verify_and_refused_on_open(any_published_home, kind):
    home = any_published_home
    tiny, unrelated, newest = build_releases(home)
    key = damaged_key(home, kind, tiny, newest)
    at = home.store.read_bytes(key).index(b'"published_at": "') + 17 if kind == "manifest" else None
    flip_byte(home, key, at)  # a manifest keeps valid JSON: a digit of its date changes
    shutil.rmtree(home.state / "cache", ignore_errors=True)  # S3: opened by a machine with no copy yet

    with pytest.raises(DamageFoundError) as found:
        verify(all=True, data_home=home.location)
    message = str(found.value)
    assert key in message and "\n" not in message
    assert unrelated in message.split("Intact releases:")[1]

    with pytest.raises(ReleaseError) as refused:
        read_as_a_page_does(home, newest)
    message = str(refused.value)
    assert f"release {newest} is damaged: {key}" in message and "refusing it" in message
    assert unrelated in message.split("do not read that file:")[1]
    load_release(home, unrelated).local_file(MODEL_FILE)  # the others still open (its model is a placeholder)


def test_an_s3_open_downloads_only_what_it_reads_checks_it_and_heals_a_damaged_copy(tiny_release_home, s3_home):
    upload_home(tiny_release_home, s3_home)
    release = load_release(s3_home)
    record = release.manifest["segments"][0]
    cache = s3_home.store.cache
    cached = {p.relative_to(cache).as_posix() for p in (cache / "segments").rglob("*") if p.is_file()}
    assert cached == {f"{segment_key(record['name'])}/{p}" for p in record[CHECKSUMS] if p.startswith(READ_WHOLE)}
    assert not any("_transactions" in p for p in cached)  # a whole read does not open it: not downloaded

    data = next(p for p in cached if "/data/" in p)
    copy = bytearray((cache / data).read_bytes())  # this machine's copy damaged, the store intact
    copy[len(copy) // 2] ^= 0x01
    (cache / data).write_bytes(bytes(copy))
    again = load_release(s3_home)
    np.testing.assert_array_equal(again.embeddings, release.embeddings)
    assert checksum_file(cache / data) == record[CHECKSUMS][data.split(".lance/", 1)[1]]


def test_index_files_are_checked_by_verify_and_not_read_by_an_open(home):
    import lance

    writer = ReleaseWriter(home)
    (writer.path / MODEL_FILE).write_bytes(b"placeholder model")
    name = writer.add_segment(*make_items(300))
    record = writer.segments[-1]
    dataset = lance.dataset(home.store.url(segment_key(name)))
    dataset.create_scalar_index("item_id", index_type="BTREE")  # a new version, as a vector index makes one
    record["version"] = lance.dataset(home.store.url(segment_key(name))).version
    record[CHECKSUMS] = dataset_checksums(home.store, segment_key(name), record["version"])
    writer.write_json(METRICS_FILE, {})
    writer.publish(ReleaseManifest("test", None, 300, {}, FASHION_MNIST))
    index_file = next(p for p in record[CHECKSUMS] if p.startswith("_indices/"))
    flip_byte(home, f"{segment_key(name)}/{index_file}")

    assert len(load_release(home).items) == 300  # a whole read opens no index
    with pytest.raises(DamageFoundError, match=f"{segment_key(name)}/{index_file}"):
        verify(data_home=str(home.root))


def strip_checksums(home, release_id: str) -> None:
    """Make a release look written before checksums existed (format 2, no checksum fields)."""
    path = home.releases / release_id / MANIFEST
    manifest = json.loads(path.read_text())
    for record in manifest["segments"]:
        record.pop(CHECKSUMS)
        record.pop(GRAPH_CHECKSUM, None)
    manifest.pop(CHECKSUMS)
    manifest.pop(SEAL)
    path.write_text(json.dumps(manifest, indent=2))


def test_releases_written_before_checksums_still_open_and_verify_says_so(home):
    old = publish(home, 30)
    strip_checksums(home, old)
    assert len(load_release(home).items) == 30
    newer = publish(home, 3, first_id=30, base=load_release(home), parent=old)  # shares the old segment

    result = verify(all=True, data_home=str(home.root))

    statuses = {check["release_id"]: check for check in result["releases"]}
    assert statuses[old]["status"] == NO_CHECKSUMS and statuses[newer]["status"] == PARTLY_CHECKED
    assert statuses[newer]["unchecked"] == [segment_key(f"{old}-0")] and result["intact"] == []
    assert verify(release_id=newer, data_home=str(home.root))["releases"][0]["status"] == PARTLY_CHECKED


def test_an_intact_store_verifies_ok(home):
    first = publish(home, 1200)  # with a graph
    second = publish(home, 3, first_id=1200, base=load_release(home), parent=first)
    result = verify(all=True, data_home=str(home.root))
    assert [check["status"] for check in result["releases"]] == [OK, OK] and result["intact"] == [first, second]
    assert verify(data_home=str(home.root))["releases"][0]["release_id"] == second  # default: the live one


def test_verify_takes_a_release_id_or_all(published_home):
    parser = build_parser(verify, positional=("release_id",), flags=("all",))
    assert parser.parse_args(["--all"]).all is True and parser.parse_args([]).all is False
    assert parser.parse_args(["20260101T000000000000Z"]).release_id == "20260101T000000000000Z"
    with pytest.raises(Exception, match="not both"):
        verify(release_id=latest_release_id(published_home), all=True, data_home=str(published_home.root))


def test_the_cli_and_ui_search_name_the_damaged_file(published_home, capsys):
    home = published_home
    live = latest_release_id(home)
    key = release_key(live, METRICS_FILE)
    flip_byte(home, key)
    command = [sys.executable, "-m", "flows.verify", live, "--data-home", str(home.root)]
    run = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=300)
    assert run.returncode == 1, run.stderr
    errors = [line for line in run.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and key in errors[0] and "damaged" in errors[0]

    from ui.search import main

    assert main(["--item", "0", "--data-home", str(home.root)]) == 2
    assert f"is damaged: {key}" in capsys.readouterr().err


def test_a_damaged_live_release_stops_a_reindex_and_a_pipeline_run_replaces_it(published_home, tiny_mirror):
    from flows.pipeline import pipeline
    from flows.reindex import reindex
    from tests.conftest import TINY_TRAINING
    from tests.test_store_damage import drop_garments

    home = published_home
    damaged = latest_release_id(home)
    record = read_manifest(home, damaged)["segments"][0]
    flip_byte(home, f"{segment_key(record['name'])}/{next(p for p in record[CHECKSUMS] if p.startswith('data/'))}")
    drop_garments(home, [40])
    with pytest.raises(ReleaseError, match=f"release {damaged} is damaged"):
        reindex(data_home=str(home.root), settle_seconds=0)  # never built on: its items could be wrong

    result = pipeline(data_home=str(home.root), mirror=str(tiny_mirror), **TINY_TRAINING)
    assert result["published"] and latest_release_id(home) == result["release_id"] != damaged
    assert len(load_release(home).items) == len(Catalog(home.catalog, FASHION_MNIST).load())


def test_an_on_demand_segment_checks_what_its_open_reads_whole_and_verify_checks_the_rest(home, monkeypatch):
    monkeypatch.setenv(IN_MEMORY_LIMIT_VARIABLE, "1")  # 600 items take the path of a catalogue of millions
    release_id = publish(home, 600)
    record = read_manifest(home, release_id)["segments"][0]
    assert is_on_demand(record)
    dataset = segment_key(record["name"])
    paths = {kind: next(p for p in record[CHECKSUMS] if p.startswith(kind)) for kind in ("_versions/", "data/", "_indices/")}

    flip_byte(home, f"{dataset}/{paths['_indices/']}")  # read in pieces by a query: verify's to check
    assert len(load_release(home).items) == 600
    with pytest.raises(DamageFoundError, match=f"{dataset}/{paths['_indices/']}"):
        verify(data_home=str(home.root))

    flip_byte(home, f"{dataset}/{paths['_versions/']}")  # read whole by every open
    with pytest.raises(ReleaseError, match=f"is damaged: {dataset}/{paths['_versions/']}"):
        load_release(home)


def test_a_file_damaged_after_this_process_checked_it_is_checked_again(home):
    release_id = publish(home, ANN_MIN_ITEMS)  # with a graph
    load_release(home, release_id)  # its files hashed once, remembered while unchanged
    for key in (graph_key(f"{release_id}-0"), release_key(release_id, MODEL_FILE)):
        load_release(home, release_id).local_file(MODEL_FILE)
        flip_byte(home, key)  # written in place: its change time moves
        with pytest.raises(ReleaseError, match=f"is damaged: {key}"):
            load_release(home, release_id).local_file(MODEL_FILE)
        flip_byte(home, key)  # flipped back: intact again


def test_a_rollback_leaves_a_damaged_live_release(published_home):
    from flows.rollback import rollback

    home = published_home
    tiny, _, newest = build_releases(home)
    flip_byte(home, damaged_key(home, "graph", tiny, newest))  # only the live release reads it
    with pytest.raises(ReleaseError, match=f"release {newest} is damaged"):
        load_release(home)

    result = rollback(data_home=str(home.root))  # to its parent, named by its manifest (intact)

    assert result["rolled_back"] == newest and result["rollback_to"] == tiny
    assert latest_release_id(home) == result["release_id"]
    release = read_as_a_page_does(home, result["release_id"])
    assert release.manifest["parent"] == newest and len(release.items) == len(load_release(home, tiny).items)
