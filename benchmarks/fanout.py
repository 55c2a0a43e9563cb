"""Embedding throughput of the fan-out (tasks/shards.py) against the flow's own process (issue 18).

Targets on the 2-core machine, as ratios within one run (the in-process embedder already uses both
cores): 2 Dask workers of 1 thread each reach >= 0.9x the in-process throughput and >= 1.6x one
1-thread worker. The images are Fashion-MNIST's training images repeated to --items; the model is the
default network (random weights: the speed of a trained one). In process: the Embedder on every core.
On a cluster: the real path, Prefect task runs mapped over shards of SHARD_ITEMS by prefect-dask's
DaskTaskRunner, each embedded by a worker's own 1-thread Embedder, the embeddings returned; the
clusters (distributed.LocalCluster: 2 workers, and 1) are started and warmed up outside the timings.
The three are timed in turn in each of --repeats rounds (the VM's speed drifts), ratios are medians
over rounds. Also measured: the fixed cost of the fan-out's default local cluster (starting it, two
tiny shards, stopping it), what FANOUT_MIN_ITEMS weighs against. Prints one JSON object.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time

import dask
import numpy as np

from benchmarks.common import load_split, machine, mirror_dir
from tasks.shards import FANOUT_MIN_ITEMS, SHARD_ITEMS, WORKER_CONFIG, FanOut, embed_shard_task, local_cluster_kwargs


def shards_of(images: np.ndarray, size: int = SHARD_ITEMS) -> list[np.ndarray]:
    return [images[start: start + size] for start in range(0, len(images), size)]


def fanned(fan_out: FanOut, embed, images: np.ndarray, size: int = SHARD_ITEMS) -> np.ndarray:
    """`images` embedded by shards on `fan_out`'s cluster (what embed_images does above the threshold)."""
    parts = fan_out.run(embed_shard_task, {"images": shards_of(images, size)}, model=embed.flatbuffer,
                        mirror_average=embed.mirror_average)
    return np.concatenate(parts)


def seconds(fn) -> float:
    started = time.perf_counter()
    fn()
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.fanout", description=__doc__.split("\n\n")[0])
    parser.add_argument("--items", type=int, default=FANOUT_MIN_ITEMS, help="images embedded per measurement")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--mirror", default=None, help="Fashion-MNIST files (default: $FASHION_MNIST_MIRROR)")
    args = parser.parse_args()

    from storage.dataset import FASHION_MNIST
    from storage.embedder import make_embedder
    from tasks.train import TrainConfig, build_model

    train, _ = load_split(mirror_dir(args.mirror), "train")
    images = np.resize(train, (args.items, *train.shape[1:]))
    config = TrainConfig()
    embed = make_embedder(build_model(config.architecture, config.embedding_size, FASHION_MNIST.input_shape))

    from distributed import LocalCluster

    with dask.config.set(WORKER_CONFIG):  # the fan-out's own local cluster, as FanOut.task_runner makes it
        two_workers, one = LocalCluster(**local_cluster_kwargs(2)), LocalCluster(**local_cluster_kwargs(1))
    with two_workers, one:
        clusters = {"two_workers_1_thread": FanOut(two_workers.scheduler_address),
                    "one_worker_1_thread": FanOut(one.scheduler_address)}
        for fan_out in clusters.values():  # each worker imports and compiles the model once, untimed
            fanned(fan_out, embed, images[:4], size=1)
        rounds = []  # this VM's speed drifts (other processes share its 2 cores): the three in turn, per round
        for _ in range(args.repeats):
            timed = {"in_process": seconds(lambda: embed(images))}
            for name, fan_out in clusters.items():
                timed[name] = seconds(lambda: fanned(fan_out, embed, images))
            rounds.append(timed)
        difference = float(np.abs(fanned(clusters["two_workers_1_thread"], embed, images[:SHARD_ITEMS])
                                  - embed(images[:SHARD_ITEMS])).max())
    started = time.perf_counter()
    fanned(FanOut(), embed, images[:4], size=2)  # the default: a local cluster started for one job
    local_cluster_fixed = time.perf_counter() - started

    def ratio(faster: str, slower: str) -> float:
        return round(statistics.median(r[slower] / r[faster] for r in rounds), 3)

    in_process = statistics.median(r["in_process"] for r in rounds)
    print(json.dumps({
        "machine": machine(), "load_average": os.getloadavg(), "items": args.items, "shard_items": SHARD_ITEMS,
        "rounds": [{name: round(value, 3) for name, value in r.items()} for r in rounds],
        "images_per_second": {name: round(args.items / statistics.median(r[name] for r in rounds))
                              for name in rounds[0]},
        "two_workers_vs_in_process": ratio("two_workers_1_thread", "in_process"),
        "two_workers_vs_one_worker": ratio("two_workers_1_thread", "one_worker_1_thread"),
        "targets": {"two_workers_vs_in_process": 0.9, "two_workers_vs_one_worker": 1.6},
        "local_cluster_fixed_seconds": round(local_cluster_fixed, 2),
        "in_process_items_in_that_time": round(local_cluster_fixed * args.items / in_process),
        "max_abs_difference_vs_in_process": difference,
    }, indent=2))


if __name__ == "__main__":
    main()
