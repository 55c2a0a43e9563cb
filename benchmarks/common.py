"""Helpers shared by the benchmark scripts: the real data, timing, and the machine they ran on."""

from __future__ import annotations

import multiprocessing
import os
import platform
import queue
import resource
import shutil
import socket
import statistics
import subprocess
import time
from pathlib import Path

import numpy as np

from storage.home import DataHome
from tasks.reshape import SPLITS, read_idx_images, read_idx_labels

DEFAULT_MIRROR = Path(__file__).resolve().parents[2] / "shared" / "data" / "fashion-mnist"


def mirror_dir(mirror: str | None) -> Path:
    folder = Path(mirror or os.environ.get("FASHION_MNIST_MIRROR") or DEFAULT_MIRROR)
    if not (folder / SPLITS["train"][0]).exists():
        raise SystemExit(f"real Fashion-MNIST files not found in {folder}; pass --mirror or set FASHION_MNIST_MIRROR")
    return folder


def load_split(folder: Path, split: str) -> tuple[np.ndarray, np.ndarray]:
    images_file, labels_file = SPLITS[split]
    return read_idx_images(folder / images_file), read_idx_labels(folder / labels_file)


def machine() -> dict:
    return {"cpus": os.cpu_count(), "processor": platform.processor() or platform.machine(),
            "python": platform.python_version(), "platform": platform.platform(terse=True)}


def median_ms(fn, repeats: int, warmup: int = 5) -> float:
    for _ in range(warmup):
        fn()
    samples = []
    for _ in range(repeats):
        started = time.perf_counter()
        fn()
        samples.append((time.perf_counter() - started) * 1000)
    return statistics.median(samples)


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on now (for a server a test or benchmark starts)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def wait_until_serving(base: str, server: subprocess.Popen, timeout_s: float = 180) -> None:
    """Wait until `python -m ui.api` at `base` answers /health with 200; SystemExit if it stops or never does."""
    import httpx

    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if server.poll() is not None:
            raise SystemExit("the service stopped while starting; run `python -m ui.api --verbose` to see why")
        try:
            if httpx.get(f"{base}/health", timeout=2).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.5)
    raise SystemExit(f"the service did not answer /health within {timeout_s:.0f} s")


def copy_home(source: DataHome, target: Path) -> DataHome:
    """A private copy of a data home to publish into (the home given is never changed): releases and
    segments are hard-linked where the filesystem allows (they are immutable), everything else is
    copied (the catalogue's engine may rewrite a file in place); the drop folder and scratch are left out."""
    immutable = (source.root / "releases", source.root / "segments")

    def link_or_copy(src: str, dst: str) -> str:
        if any(folder in Path(src).parents for folder in immutable):
            try:
                os.link(src, dst)
                return dst
            except OSError:  # another filesystem
                pass
        return shutil.copy2(src, dst)

    shutil.copytree(source.root, target, copy_function=link_or_copy,
                    ignore=shutil.ignore_patterns("incoming", "processed", "rejected", "tmp", "state", ".writer.*"))
    return DataHome(target).ensure()


def resident_bytes() -> int:
    """This process's resident memory now (Linux)."""
    return int(Path("/proc/self/statm").read_text().split()[1]) * resource.getpagesize()


def peak_resident_mib() -> int:
    """This process's largest resident memory so far (Linux's VmHWM: getrusage's ru_maxrss would count
    what a spawning parent held when it forked)."""
    line = next(line for line in Path("/proc/self/status").read_text().splitlines() if line.startswith("VmHWM:"))
    return round(int(line.split()[1]) / 1024)


def in_child(target, *args):
    """`target(*args, queue)` run in a fresh process; what it put in the queue."""
    context = multiprocessing.get_context("spawn")
    result = context.Queue()
    child = context.Process(target=target, args=(*args, result))
    child.start()
    while True:
        try:
            answer = result.get(timeout=5)
        except queue.Empty:
            if not child.is_alive():
                raise SystemExit(f"{target.__name__} stopped without an answer (its error is above)") from None
            continue
        child.join()
        return answer
