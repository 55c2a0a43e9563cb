"""Opening a release with its checksums checked against without, in one run, on the same files; and
verifying every file (flows.verify's work per release). Prints one JSON object.

"Without" is the same release published beside it under another id with its checksum fields removed
(as a release written before checksums: it opens unchecked) and every file shared, so both read the
same bytes; the two are opened alternately (a fresh load_release and one embedded query each: what a
page or the service does before answering) and the medians compared: as a process's first open (every
file it reads hashed) and as a reopen (a service following LATEST: files it hashed before and that did
not change are not hashed again). With --s3 the home is also uploaded to a SeaweedFS server this
starts, and opened there with a cold cache too (nothing downloaded yet: each open downloads what it
reads; afterwards checked opens read their checked local copy, unchecked ones read the segments from
S3 again).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import tempfile
import time
from pathlib import Path

from benchmarks.common import machine
from storage.home import DataHome
from storage.integrity import CHECKSUMS, GRAPH_CHECKSUM, READ_WHOLE, SEAL, forget_hashed_files
from storage.releases import METRICS_FILE, latest_release_id, load_release, new_release_id, read_manifest, release_key
from tasks.verify import check_release


def unchecked_twin(home: DataHome, release_id: str) -> str:
    """A release that reads the same files as `release_id` but records no checksums; returns its id."""
    twin = new_release_id()
    manifest = read_manifest(home, release_id)
    for record in manifest["segments"]:
        record.pop(CHECKSUMS, None)
        record.pop(GRAPH_CHECKSUM, None)
    for field in (CHECKSUMS, SEAL):
        manifest.pop(field, None)
    metrics = release_key(release_id, METRICS_FILE)
    if metrics in manifest["files"]:  # its own metrics.json, copied: a release reads its own
        manifest["files"][release_key(twin, METRICS_FILE)] = manifest["files"].pop(metrics)
        home.store.write_bytes(release_key(twin, METRICS_FILE), home.store.read_bytes(metrics))
    manifest.update(release_id=twin, model_release=manifest.get("model_release", release_id))
    home.store.write_bytes(release_key(twin, "manifest.json"), json.dumps(manifest, indent=2, sort_keys=True).encode())
    return twin


def open_once(home: DataHome, release_id: str) -> tuple[float, float]:
    """Seconds to open a release and embed one query: wall clock, and CPU time of all this process's threads."""
    started, cpu = time.perf_counter(), time.process_time()
    release = load_release(home, release_id)
    release.embed(release.items.images[:1])
    return time.perf_counter() - started, time.process_time() - cpu


def compare_opens(home: DataHome, checked: str, unchecked: str, rounds: int, cold: bool, reopen: bool = False) -> dict:
    """Median open time of each, wall clock and CPU, opened alternately (which goes first alternates
    too): as a process's first open (every file hashed), or, `reopen`, as a process that opened them
    before (unchanged files not hashed again); `cold` empties this machine's download cache before every
    open. The CPU time is the steadier figure on a shared machine: the wall clock also counts waiting
    for a core."""
    times: dict[str, list[tuple[float, float]]] = {checked: [], unchecked: []}
    for round_ in range(rounds):
        for release_id in (checked, unchecked) if round_ % 2 else (unchecked, checked):
            if cold:
                shutil.rmtree(home.store.cache, ignore_errors=True)
            if not reopen:
                forget_hashed_files()
            times[release_id].append(open_once(home, release_id))
    figures = {"rounds": rounds}
    for which, index in (("", 0), ("cpu_", 1)):
        with_s = statistics.median(sample[index] for sample in times[checked])
        without_s = statistics.median(sample[index] for sample in times[unchecked])
        figures.update({f"open_{which}with_checksums_s": round(with_s, 4), f"open_{which}without_s": round(without_s, 4),
                        f"{which}overhead_percent": round(100 * (with_s / without_s - 1), 1)})
    return figures


def checked_bytes(home: DataHome, release_id: str) -> dict:
    """How many bytes an open hashes (the files it reads) and how many flows.verify hashes."""
    manifest = read_manifest(home, release_id)
    opened = sum(size for key, size in manifest["files"].items() if not key.endswith("model.keras"))
    segments = [(f"segments/{r['name']}.lance/{path}", path) for r in manifest["segments"] for path in r[CHECKSUMS]]
    sizes = {key: home.store.size(key) or 0 for key, _ in segments}
    return {"open_checks_bytes": opened + sum(sizes[key] for key, path in segments if path.startswith(READ_WHOLE)),
            "verify_checks_bytes": sum(manifest["files"].values()) + sum(sizes.values())}


def measure(home: DataHome, rounds: int, cold: bool = False) -> dict:
    checked = latest_release_id(home)
    unchecked = unchecked_twin(home, checked)
    open_once(home, checked), open_once(home, unchecked)  # page cache / download cache warm, imports done
    figures = {"release": checked, "items": len(load_release(home, checked).items),
               **checked_bytes(home, checked), "first_open": compare_opens(home, checked, unchecked, rounds, cold=False),
               "reopen": compare_opens(home, checked, unchecked, rounds, cold=False, reopen=True)}
    if cold:
        figures["first_open_cold_cache"] = compare_opens(home, checked, unchecked, max(3, rounds // 4), cold=True)
    started = time.perf_counter()
    check = check_release(home, checked, {})
    figures["verify_s"] = round(time.perf_counter() - started, 3)
    figures["verify_status"] = check.status
    home.store.delete(release_key(unchecked))
    return figures


def build_home(folder: Path) -> DataHome:
    from flows.pipeline import pipeline

    result = pipeline(data_home=str(folder))
    if not result["published"]:
        raise SystemExit(f"the pipeline did not publish: {result}")
    return DataHome.from_env(folder)


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.integrity", description=__doc__.split("\n\n")[0])
    parser.add_argument("--data-home", default="", help="a local home with a published release (default: the "
                        "pipeline builds one on Fashion-MNIST in a temporary folder; needs FASHION_MNIST_MIRROR)")
    parser.add_argument("--rounds", type=int, default=20, help="opens of each release (median reported)")
    parser.add_argument("--s3", action="store_true", help="the same on a SeaweedFS copy of the home")
    args = parser.parse_args(argv)
    result = {"machine": machine()}
    with tempfile.TemporaryDirectory(prefix="benchmark-integrity-") as scratch:
        workdir = Path(scratch)
        home = DataHome.from_env(args.data_home) if args.data_home else build_home(workdir / "home")
        result["local"] = measure(home, args.rounds)
        if args.s3:
            from tests.conftest import upload_home
            from tests.seaweedfs import seaweedfs

            (workdir / "seaweedfs").mkdir()
            with seaweedfs(workdir / "seaweedfs") as variables:
                os.environ.update(variables, FASHION_SIM_CACHE=str(workdir / "cache"))
                remote = DataHome.from_env(f"s3://{variables['S3_BUCKET']}/integrity")
                upload_home(home.root, remote)
                result["s3"] = measure(remote, max(5, args.rounds // 2), cold=True)
    result["load_average_1min"] = round(os.getloadavg()[0], 2)
    print(json.dumps(result, indent=2))
    return result


if __name__ == "__main__":
    main()
