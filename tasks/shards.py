"""shards: embedding fanned out over a Dask cluster, as Prefect tasks mapped over shards.

Large jobs only: the catalogue a pipeline or retrain embeds, a large drop a re-index embeds, and the
evaluation's queries, once a job has FANOUT_MIN_ITEMS images. Each shard of SHARD_ITEMS images is one
task run on a Dask worker, with the release's compiled model (storage/embedder.py) sent along: a query
shard returns its embeddings; a catalogue shard writes its rows, embeddings included, as fragments of
the new segment's Lance dataset and returns only their metadata, so no worker holds every embedding.
The flow's process then commits every shard's fragments at once (storage/search_index.commit_segment):
the segment and its embeddings are those of the single-process path (tests/test_fanout.py, 1e-5).
Smaller jobs embed in the flow's own process and start no cluster.

The cluster is a local one by default (prefect-dask's DaskTaskRunner over distributed.LocalCluster:
one worker per core, one thread each), or an existing one at `--dask-address` / DASK_SCHEDULER_ADDRESS.
An existing cluster's workers write to the store from their own machines, so it needs an s3:// home
(FanOut.for_home refuses a local one) and workers that can import this project, reach the store (the
AWS_* variables) and reach Prefect's API. README "Scale out" has the measurements behind the constants.
"""

from __future__ import annotations

import hashlib
import logging
import os
from dataclasses import dataclass
from typing import Any

import dask
import numpy as np
from prefect import get_client, task, unmapped
from prefect.cache_policies import NO_CACHE

from storage.catalog import CatalogItems
from storage.embedder import Embedder
from storage.errors import UserError
from storage.location import is_remote
from storage.runtime import usable_cpus, verbose
from storage.search_index import commit_segment, segment_key, segment_table, write_segment_fragments
from tasks.embed import embed_task
from tasks.logs import step_logger

DASK_ADDRESS_ENV = "DASK_SCHEDULER_ADDRESS"
# Images per shard: one task run each. A task run costs about 0.25 s besides its work (Prefect's
# bookkeeping, the images sent), 8% of embedding 50,000 Fashion-MNIST images on one core (about 17,000
# a second) against 20% for 20,000. On a quiet machine 2 workers reached 0.92x the process with shards
# of 100,000 against 0.87x with 50,000 (benchmarks/fanout.py); a 1,000,000-item catalogue is 10 shards,
# and a shard of 100,000 photos at 64 px is about 1.2 GB in a worker.
SHARD_ITEMS = 100_000
# Jobs of fewer images embed in the flow's process: starting the local cluster took 3.2-11 s here (as
# long as embedding 70,000-230,000 images in process), and on 2 cores it embeds no faster than the
# process (benchmarks/fanout.py, README "Scale out"). So the pipeline's 70,000 items, its 10,000
# queries, drops and the tests start no cluster; at 1,000,000 items its start is about 7% of the job.
FANOUT_MIN_ITEMS = 200_000
# Dask workers sample their threads' stacks every 10 ms by default (the dashboard's profile): embedding
# 20,000 images in a worker then took 1.2-1.5 s against 0.8 s in a plain process, and 0.8 s with it off.
# A local cluster's workers get this; start an existing cluster's with DASK_DISTRIBUTED__WORKER__PROFILE__ENABLED=false.
WORKER_CONFIG = {"distributed.worker.profile.enabled": False}


class RemoteClusterError(UserError, ValueError):
    """An existing Dask cluster was named for a data home its workers cannot reach."""


@dataclass(frozen=True)
class FanOut:
    """Where large embedding jobs run: an existing Dask cluster's scheduler, or "" for a local cluster."""

    address: str = ""

    def __str__(self) -> str:
        return f"the Dask cluster at {self.address}" if self.address else "a local Dask cluster"

    @classmethod
    def for_home(cls, home, address: str = "") -> "FanOut":
        """The fan-out of a flow run on `home`: `address`, else $DASK_SCHEDULER_ADDRESS, else a local
        cluster. An existing cluster needs an s3:// home: its workers write the shards to the store."""
        address = address or os.environ.get(DASK_ADDRESS_ENV, "")
        if address and not is_remote(home.store.uri):
            raise RemoteClusterError(
                f"the Dask cluster at {address} cannot write to the local data home {home.store.uri}: use an s3:// "
                f"home (FASHION_SIM_HOME=s3://bucket/prefix) or leave --dask-address and {DASK_ADDRESS_ENV} unset")
        return cls(address)

    @staticmethod
    def shards(count: int) -> list[slice] | None:
        """The shards of a job of `count` images, or None when it is small enough to embed in process."""
        if count < FANOUT_MIN_ITEMS:
            return None
        return [slice(start, min(start + SHARD_ITEMS, count)) for start in range(0, count, SHARD_ITEMS)]

    def task_runner(self):
        """prefect-dask's DaskTaskRunner for this cluster (a local one starts when the first shard is sent)."""
        from prefect_dask import DaskTaskRunner

        if self.address:
            return DaskTaskRunner(address=self.address)
        return DaskTaskRunner(cluster_kwargs=local_cluster_kwargs())

    def run(self, shard_task, shards: dict[str, list], **shared) -> list:
        """`shard_task` mapped over `shards` (one argument name: its list of shards) with the `shared`
        arguments, on this cluster; the results in shard order. Called from a flow's own code: the task
        runs join its run (prefect-dask sends each one the flow run's context, which holds the flow's
        parameters, and would hold a calling task's: a subflow's parameters would be every shard) and
        report to its Prefect API, even a temporary one."""
        from prefect.context import TaskRunContext
        from prefect.settings import PREFECT_API_URL, temporary_settings

        if TaskRunContext.get() is not None:
            raise RuntimeError("fan out from a flow's code, not from inside a task: the task's parameters would "
                               "travel to every shard")
        with get_client(sync_client=True) as client:
            api_url = str(client.api_url)
        if not verbose():
            logging.getLogger("distributed").setLevel(logging.WARNING)
        arguments = {**shards, **{name: unmapped(value) for name, value in shared.items()}}
        runner = self.task_runner()  # imports distributed, whose config defaults dask.config.set's exit must keep
        with temporary_settings({PREFECT_API_URL: api_url}), dask.config.set(WORKER_CONFIG), runner:
            return [future.result() for future in runner.map(shard_task, arguments)]


def local_cluster_kwargs(workers: int | None = None) -> dict[str, Any]:
    """distributed.LocalCluster's arguments for the default cluster: `workers` (default: one per core) of one
    thread each, no dashboard, workers that print only warnings unless FASHION_SIM_VERBOSE is set. Create it
    within dask.config.set(WORKER_CONFIG), which its workers inherit."""
    return {"n_workers": workers or usable_cpus(), "threads_per_worker": 1, "processes": True,
            "dashboard_address": None, "env": {} if verbose() else {"DASK_LOGGING__DISTRIBUTED": "warning"}}


_worker_embedders: dict[tuple[str, bool], Embedder] = {}


def worker_embedder(model: bytes, mirror_average: bool) -> Embedder:
    """The Embedder of `model` in this worker process (compiled once, the last one kept), on the worker's
    own threads."""
    key = (hashlib.sha256(model).hexdigest(), mirror_average)
    if key not in _worker_embedders:
        _worker_embedders.clear()
        try:
            from distributed import get_worker

            threads = get_worker().state.nthreads
        except (ImportError, ValueError):  # not on a Dask worker
            threads = None
        _worker_embedders[key] = Embedder(model, mirror_average, threads)
    return _worker_embedders[key]


@task(name="embed-shard", cache_policy=NO_CACHE)
def embed_shard_task(images: np.ndarray, model: bytes, mirror_average: bool) -> np.ndarray:
    return worker_embedder(model, mirror_average)(images)


@task(name="write-shard", cache_policy=NO_CACHE)
def write_shard_task(items: CatalogItems, model: bytes, mirror_average: bool, url: str) -> list:
    """Embed one shard of a segment's items and write them as fragments of its dataset at `url`."""
    return write_segment_fragments(url, items, worker_embedder(model, mirror_average)(items.images))


def embed_images(embed, images: np.ndarray, fan_out: FanOut | None) -> np.ndarray:
    """`embed(images)`, by shards on the cluster when there are enough of them (the evaluation's queries)."""
    shards = fan_out.shards(len(images)) if fan_out else None
    if shards is None:
        return embed(images)
    step_logger().info("embed: %d images in %d shards on %s", len(images), len(shards), fan_out)
    parts = fan_out.run(embed_shard_task, {"images": [images[rows] for rows in shards]}, model=embed.flatbuffer,
                        mirror_average=embed.mirror_average)
    return np.concatenate(parts)


@dataclass(frozen=True)
class Embedded:
    """A job's embeddings, and the segment its shards wrote when it fanned out (ReleaseWriter.adopt_segment)."""

    embeddings: np.ndarray
    segment: dict[str, Any] | None = None


def embed_catalogue(embed: Embedder, items: CatalogItems, writer, fan_out: FanOut | None) -> Embedded:
    """The embeddings of `items` for a new segment of `writer`'s release: in process (the caller writes the
    segment), or by shards that write it; then it is committed here, not yet adopted by the release."""
    shards = fan_out.shards(len(items)) if fan_out else None
    if shards is None:
        return Embedded(embed_task(embed, items))
    name = writer.new_segment_name()
    step_logger().info("embed: %d items in %d shards on %s, into segment %s", len(items), len(shards), fan_out, name)
    fragments = fan_out.run(write_shard_task, {"items": [items.subset(np.arange(len(items))[rows]) for rows in shards]},
                            model=embed.flatbuffer, mirror_average=embed.mirror_average,
                            url=writer.home.store.url(segment_key(name)))
    schema = segment_table(items.subset(np.arange(1)), np.zeros((1, embed.width), np.float32)).schema  # the shards'
    record, embeddings = commit_segment(writer.home.store, name, [f for part in fragments for f in part], schema,
                                        writer.path, items)
    return Embedded(embeddings, record)
