"""A data home on object storage (s3://), against a real S3 server (SeaweedFS, started for the session):
every flow and the CLI work on it, one writer at a time holds a lease, a writer whose lease lapsed
cannot move the live release, and what a cut-short publish leaves is cleaned up."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time

import pytest

from storage.home import DataHome, NoDropFolderError
from storage.lease import Lease, LeaseLostError
from storage.location import StoreLocationError, lance_storage_options
from storage.lock import writer_lock
from storage.releases import MANIFEST, latest_release_id, load_release, recover
from tests import corpus
from tests.conftest import REPO, TINY_TRAINING, upload_home


def test_plain_http_is_refused_for_an_endpoint_on_another_machine(monkeypatch):
    monkeypatch.setenv("AWS_ENDPOINT_URL", "http://storage.example.com:8333")
    with pytest.raises(StoreLocationError, match="use https"):
        lance_storage_options("s3://bucket/home")


def test_the_pipeline_reindex_and_search_work_on_an_s3_home(s3_home, tiny_mirror, tmp_path, monkeypatch):
    from flows.pipeline import pipeline
    from flows.reindex import reindex

    monkeypatch.chdir(tmp_path)
    result = pipeline(data_home=s3_home.uri, mirror=str(tiny_mirror), **TINY_TRAINING)
    assert result["published"] and result["path"].startswith(s3_home.uri)
    assert not (tmp_path / "s3:").exists()  # nothing lands in a local folder named after the URI
    live = load_release(s3_home)
    assert live.release_id == result["release_id"] and len(live.items) == 400
    assert {"LATEST", "catalog.lance", "dataset.json", "releases", "segments", "gallery", "arrays"} <= set(
        s3_home.store.list(""))

    incoming = s3_home.incoming
    (incoming / "dress").mkdir(parents=True)
    (incoming / "dress" / "one.png").write_bytes(corpus.encode(corpus.garment(variant=1), "PNG"))
    (incoming / "two.png").write_bytes(corpus.encode(corpus.garment(variant=2), "PNG"))
    (incoming / "notes.txt").write_bytes(b"not an image")
    outcome = reindex(data_home=s3_home.uri, settle_seconds=0)
    assert (outcome["published"], outcome["indexed"], outcome["rejected"]) == (True, 2, 1)
    assert (incoming.parent / "processed" / outcome["release_id"] / "dress" / "one.png").is_file()
    assert (incoming.parent / "rejected").is_dir()
    release = load_release(s3_home)
    assert len(release.items) == 402 and release.manifest["segments"][:-1] == live.manifest["segments"]

    found = subprocess.run([sys.executable, "-m", "ui.search", "--item", "3", "--k", "2"], cwd=REPO,
                           capture_output=True, text=True, timeout=300, env=os.environ.copy())
    assert found.returncode == 0, found.stderr
    answer = json.loads(found.stdout)
    assert answer["release_id"] == release.release_id and len(answer["neighbours"]) == 2


def test_an_s3_home_needs_a_local_drop_folder(s3_server, monkeypatch):
    monkeypatch.delenv("FASHION_SIM_INCOMING", raising=False)
    home = DataHome.from_env(f"s3://{s3_server['S3_BUCKET']}/no-drops")
    with pytest.raises(NoDropFolderError, match="--incoming DIR or FASHION_SIM_INCOMING"):
        _ = home.incoming


def test_a_dead_writer_blocks_no_longer_than_its_lease(s3_home):
    dead = Lease(s3_home.store, "a run that was killed", seconds=3)
    dead.acquire(5)
    dead._stop.set()  # killed: it never renews nor releases
    started = time.monotonic()
    Lease(s3_home.store, "the next run", seconds=30).acquire(timeout_s=20)
    assert time.monotonic() - started < 10


def test_a_writer_whose_lease_lapsed_cannot_move_the_live_release(s3_home):
    s3_home.store.write_bytes("LATEST", b"20260101T000000000000Z\n")
    paused = Lease(s3_home.store, "a paused run", seconds=3)
    paused.acquire(5)
    paused._stop.set()  # paused past its lease (a stopped VM): no renewal
    time.sleep(3.5)
    newer = Lease(s3_home.store, "the next run", seconds=30)
    newer.acquire(10)
    newer.replace_pointer(b"20260102T000000000000Z\n")
    with pytest.raises(LeaseLostError, match="it lapsed"):
        paused.replace_pointer(b"20260103T000000000000Z\n")
    # even with a clock that believes the lease still runs, the conditional writes refuse it
    paused.lost, paused.expires_at = None, time.time() + 60
    with pytest.raises(LeaseLostError, match="moved by another writer"):
        paused.replace_pointer(b"20260103T000000000000Z\n")
    paused.renew()
    assert paused.lost == "another writer took it over"
    assert s3_home.store.read_bytes("LATEST") == b"20260102T000000000000Z\n"
    newer.release()


def test_the_pointer_is_not_overwritten_when_someone_moved_it_meanwhile(s3_home):
    lease = Lease(s3_home.store, "a run", seconds=30)
    lease.acquire(5)
    s3_home.store.write_bytes("LATEST", b"20260102T000000000000Z\n")  # moved behind the lease's back
    with pytest.raises(LeaseLostError, match="moved by another writer"):
        lease.replace_pointer(b"20260103T000000000000Z\n")
    assert s3_home.store.read_bytes("LATEST") == b"20260102T000000000000Z\n"
    lease.release()


def test_a_publish_cut_short_is_removed_by_the_next_writer(s3_home, tiny_release_home):
    upload_home(tiny_release_home, s3_home)
    live = latest_release_id(s3_home)
    cut = "20991231T000000000000Z"  # newer than the live release, as a run killed mid-upload leaves it
    s3_home.store.write_bytes(f"releases/{cut}/model.keras", b"half")
    s3_home.store.write_bytes(f"segments/{cut}-0.lance/data/part", b"half")
    with writer_lock(s3_home, holder="test"):
        report = recover(s3_home)
    assert f"releases/{cut}" in report.removed_tmp and f"segments/{cut}-0.lance" in report.removed_tmp
    assert not s3_home.store.exists(f"releases/{cut}/model.keras") and latest_release_id(s3_home) == live
    assert load_release(s3_home).release_id == live
    assert s3_home.store.exists(f"releases/{live}/{MANIFEST}")
