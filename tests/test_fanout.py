"""The fan-out (tasks/shards.py): embedding mapped over shards on a Dask cluster gives what the
single-process path gives (to 1e-5), on a local cluster and on an existing one (real `dask scheduler`
and `dask worker` processes on 127.0.0.1, with an S3 home), and a cluster address with a local home
is refused in one line. The thresholds are lowered here so that tiny data fans out."""

from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import pytest

from benchmarks.common import free_port
from storage.home import DataHome
from storage.releases import ReleaseWriter, latest_release_id, load_release
from storage.search_index import read_segment
from tasks import shards
from tasks.shards import DASK_ADDRESS_ENV, FanOut, RemoteClusterError, embed_catalogue, embed_images
from tests.conftest import REPO, upload_home
from tests.test_prefect_server import Processes
from tests.test_reindex import drop_labelled

TOLERANCE = 1e-5


@pytest.fixture
def tiny_shards(monkeypatch):
    """Every job of 5 images or more fans out, in shards of 7."""
    monkeypatch.setattr(shards, "FANOUT_MIN_ITEMS", 5)
    monkeypatch.setattr(shards, "SHARD_ITEMS", 7)


def test_small_jobs_stay_in_process_and_large_ones_are_cut_into_shards():
    assert FanOut.shards(shards.FANOUT_MIN_ITEMS - 1) is None
    cut = FanOut.shards(shards.FANOUT_MIN_ITEMS + 1)
    assert cut[0] == slice(0, shards.SHARD_ITEMS)
    assert cut[-1].stop == shards.FANOUT_MIN_ITEMS + 1
    assert sum(part.stop - part.start for part in cut) == shards.FANOUT_MIN_ITEMS + 1


def test_shards_on_a_local_cluster_write_the_segment_the_single_process_path_writes(published_home, tiny_shards):
    release = load_release(published_home)
    items, embed = release.items, release.embedder
    expected = embed(items.images)
    writer = ReleaseWriter(published_home)
    try:
        embedded = embed_catalogue(embed, items, writer, FanOut())
        assert embedded.segment["rows"] == len(items) and len(items) > 2 * shards.SHARD_ITEMS
        np.testing.assert_allclose(embedded.embeddings, expected, atol=TOLERANCE)
        stored_items, stored = read_segment(published_home.store, embedded.segment, release.dataset.pixel_shape)
        np.testing.assert_allclose(stored, expected, atol=TOLERANCE)
        assert (stored_items.item_ids == items.item_ids).all() and (stored_items.images == items.images).all()
        assert (stored_items.paths == items.paths).all() and (stored_items.labels == items.labels).all()
    finally:
        writer.discard()


def wait_for_workers(address: str, count: int, timeout_s: float = 120) -> None:
    from distributed import Client

    with Client(address, timeout=timeout_s) as client:
        client.wait_for_workers(count, timeout=timeout_s)


def test_an_existing_cluster_on_loopback_reindexes_a_drop_into_an_s3_home(tiny_release_home, s3_home, tiny_shards,
                                                                          tmp_path, monkeypatch):
    """A real scheduler and two 1-thread workers (their own processes, the store's AWS variables in their
    environment): a re-index of a drop fans out to them through DASK_SCHEDULER_ADDRESS, its shards write
    the new segment on S3, and the release publishes what the live model gives; the queries path too."""
    upload_home(tiny_release_home, s3_home)
    home = DataHome.from_env()
    port = free_port()
    address = f"tcp://127.0.0.1:{port}"
    processes = Processes(tmp_path, {**os.environ, "PYTHONPATH": str(REPO), "DASK_LOGGING__DISTRIBUTED": "warning",
                                       "DASK_DISTRIBUTED__WORKER__PROFILE__ENABLED": "false"})
    try:
        processes.start("scheduler", "dask", "scheduler", "--host", "127.0.0.1", "--port", str(port), "--no-dashboard")
        processes.start("workers", "dask", "worker", address, "--nworkers", "2", "--nthreads", "1", "--no-dashboard",
                        "--host", "127.0.0.1")
        wait_for_workers(address, 2)
        live = load_release(home)
        dropped = drop_labelled(home.incoming, "trouser", 1, 17, seed=1801)
        monkeypatch.setenv(DASK_ADDRESS_ENV, address)
        from flows.reindex import reindex

        result = reindex(settle_seconds=0)
        assert result["published"], result
        release = load_release(home)
        assert release.release_id == latest_release_id(home) != live.release_id
        new = ~np.isin(release.items.item_ids, live.items.item_ids)
        assert new.sum() == len(dropped)
        np.testing.assert_allclose(release.embeddings[new], live.embed(release.items.images[new]), atol=TOLERANCE)
        written = release.manifest["segments"][-1]
        assert written["rows"] == len(dropped) and written["name"].startswith(release.release_id)

        queries = release.items.images[:20]
        np.testing.assert_allclose(embed_images(release.embedder, queries, FanOut(address)),
                                   release.embed(queries), atol=TOLERANCE)
        from distributed import Client

        with Client(address) as client:  # the shards ran on this cluster's workers
            prefixes = client.run_on_scheduler(lambda dask_scheduler: sorted(dask_scheduler.task_prefixes))
        assert any("shard" in prefix for prefix in prefixes), prefixes
    finally:
        processes.stop_all()


def test_a_cluster_address_with_a_local_home_is_refused_in_one_line(home, tmp_path):
    with pytest.raises(RemoteClusterError, match="s3://"):
        FanOut.for_home(home, "tcp://127.0.0.1:8786")
    assert FanOut.for_home(home) == FanOut()
    out = subprocess.run([sys.executable, "-m", "flows.reindex", "--dask-address", "tcp://127.0.0.1:8786",
                          "--data-home", str(home.root)], cwd=REPO, capture_output=True, text=True, timeout=180)
    errors = [line for line in out.stderr.splitlines() if line.startswith("error:")]
    assert out.returncode == 1 and len(errors) == 1 and "Traceback" not in out.stderr, out.stderr[-2000:]
    assert errors[0].startswith("error: the Dask cluster at tcp://127.0.0.1:8786") and "s3://" in errors[0]
