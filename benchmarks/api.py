"""The search service under load: `python -m ui.api` started on a loopback port over a copy of a
published data home, a bounded load test at several concurrencies (a fixed count of requests, cut off
after --seconds), the same while a new release is published, and, in the same run, one
`python -m ui.search` call over --cli-files PNG files as the reference. Prints one JSON object.

Each request is POST /search?k=10 with a Fashion-MNIST test image as a PNG body (from the home's
arrays/). The load generator runs in this process (threads with their own HTTP connection), on the
same machine as the service, as a shop's web server on the same host would.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import httpx
import numpy as np

from benchmarks.common import copy_home, free_port, machine, wait_until_serving
from storage.home import DataHome
from storage.images import encode_png
from storage.releases import latest_release_id
from tasks.reshape import Arrays


def load(base: str, bodies: list[bytes], concurrency: int, count: int, seconds: float,
         stop: threading.Event | None = None) -> dict:
    """`count` searches (or until `seconds`, or `stop`) from `concurrency` threads."""
    latencies, errors, releases, lock = [], [], set(), threading.Lock()
    issued = iter(range(10**9))
    deadline = time.monotonic() + seconds

    def worker():
        # TCP_NODELAY, as curl and browsers set it: without it the body waits behind the headers for the
        # server's delayed ACK, and every request takes 40 ms more (Nagle's algorithm)
        transport = httpx.HTTPTransport(socket_options=[(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)])
        with httpx.Client(base_url=base, timeout=60, transport=transport) as session:
            while time.monotonic() < deadline and not (stop and stop.is_set()):
                number = next(issued)
                if stop is None and number >= count:
                    return
                begun = time.perf_counter()
                try:
                    response = session.post("/search?k=10", content=bodies[number % len(bodies)],
                                            headers={"content-type": "image/png"})
                    ok = response.status_code == 200
                    release = response.json().get("release_id") if ok else None
                except httpx.HTTPError as error:
                    ok, release, response = False, None, error
                elapsed = time.perf_counter() - begun
                with lock:
                    if ok:
                        latencies.append(elapsed)
                        releases.add(release)
                    else:
                        errors.append(str(getattr(response, "status_code", response)))

    started = time.perf_counter()
    threads = [threading.Thread(target=worker) for _ in range(concurrency)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    wall = time.perf_counter() - started
    ms = np.array(latencies) * 1000
    return {"concurrency": concurrency, "requests": len(latencies) + len(errors), "errors": len(errors),
            "error_kinds": sorted(set(errors))[:5], "requests_per_s": round(len(latencies) / wall, 1),
            "p50_ms": round(float(np.percentile(ms, 50)), 2) if len(ms) else None,
            "p99_ms": round(float(np.percentile(ms, 99)), 2) if len(ms) else None, "releases_seen": sorted(releases)}


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.api", description=__doc__.split("\n\n")[0])
    parser.add_argument("--data-home", default="", help="a home with a published release (default $FASHION_SIM_HOME, "
                                                       "else ./data); it is copied, never changed")
    parser.add_argument("--workers", type=int, default=2, help="service processes (default 2: one per core here)")
    parser.add_argument("--concurrency", default="1,8,32")
    parser.add_argument("--count", type=int, default=2000, help="requests per concurrency level")
    parser.add_argument("--seconds", type=float, default=30, help="cut-off per level")
    parser.add_argument("--cli-files", type=int, default=2000, help="PNG files in the ui.search reference call")
    args = parser.parse_args(argv)
    source = DataHome.from_env(args.data_home or None)
    if latest_release_id(source) is None:
        raise SystemExit(f"no published release in {source.root}: run `make pipeline` first or pass --data-home")
    result = {"machine": machine(), "workers": args.workers}
    with tempfile.TemporaryDirectory(prefix="api-bench-") as scratch:
        home = copy_home(source, Path(scratch) / "home")
        test_images, _ = Arrays(home.store).load("test")
        files = []
        for index in range(args.cli_files):
            files.append(Path(scratch) / "queries" / f"q{index:05d}.png")
            files[-1].parent.mkdir(exist_ok=True)
            files[-1].write_bytes(encode_png(test_images[index % len(test_images)]))
        bodies = [file.read_bytes() for file in files[:500]]
        env = {**os.environ, "FASHION_SIM_HOME": str(home.root)}
        begun = time.perf_counter()
        subprocess.run([sys.executable, "-m", "ui.search", *map(str, files)], env=env, check=True,
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        cli_seconds = time.perf_counter() - begun
        result["ui_search_call"] = {"files": len(files), "seconds": round(cli_seconds, 2),
                                    "images_per_s": round(len(files) / cli_seconds, 1)}
        port = free_port()
        server = subprocess.Popen([sys.executable, "-m", "ui.api", "--port", str(port), "--workers", str(args.workers)],
                                  env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        base = f"http://127.0.0.1:{port}"
        try:
            wait_until_serving(base, server)
            load(base, bodies, 4, 200, 30)  # warm-up: every worker has loaded and traced
            result["levels"] = [load(base, bodies, int(c), args.count, args.seconds) for c in args.concurrency.split(",")]
            result["release_switch"] = switch_under_load(base, bodies, home, args.seconds)
        finally:
            server.terminate()
            server.wait(timeout=30)
    levels = {level["concurrency"]: level for level in result["levels"]}
    if 1 in levels and 8 in levels:
        result["c8_vs_ui_search_images_per_s"] = round(levels[8]["requests_per_s"]
                                                        / result["ui_search_call"]["images_per_s"], 2)
        result["c8_p99_vs_c1_p50"] = round(levels[8]["p99_ms"] / levels[1]["p50_ms"], 2)
    return result


def switch_under_load(base: str, bodies: list[bytes], home: DataHome, seconds: float) -> dict:
    """Concurrency 8 while the drop folder's flow publishes a new release; the service must switch to it
    without a failed request."""
    stop = threading.Event()
    outcome: dict = {}
    loader = threading.Thread(target=lambda: outcome.update(load(base, bodies, 8, 0, seconds * 4, stop)))
    loader.start()
    time.sleep(2)
    (home.incoming / "dress").mkdir(parents=True, exist_ok=True)
    for index, body in enumerate(bodies[:10]):
        (home.incoming / "dress" / f"switch-{index}.png").write_bytes(body)  # test images: not catalogued yet
    env = {**os.environ, "FASHION_SIM_HOME": str(home.root)}
    subprocess.run([sys.executable, "-m", "flows.reindex", "--settle-seconds", "0"], env=env, check=True,
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    published = latest_release_id(home)
    time.sleep(3)  # every worker looks at LATEST each second: all have switched
    stop.set()
    loader.join()
    return {**outcome, "published": published, "switched": published in outcome["releases_seen"]}


if __name__ == "__main__":
    print(json.dumps(main(), indent=2))
