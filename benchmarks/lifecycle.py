"""What the lifecycle commands cost on a real Fashion-MNIST home (60,000 items, built by the pipeline
with a short training: what is measured does not depend on what the model learned):

- disk: the store (releases, segments, catalogue, removal marks: storage.lifecycle.store_bytes) after
  --runs drop-folder re-index runs of --new images each, on two copies of the home: one never cleaned,
  one cleaned with `cleanup --keep 3` after every run (recently_live_minutes=0: the runs come faster
  than any G, so with G every release of the benchmark would still be recently live);
- removal: wall time of `python -m flows.remove` of --remove random items (the flow in this process,
  Prefect and TensorFlow already started), and of one re-index run of --new images for comparison.

Local home only. Prints one JSON object.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np

from benchmarks.common import machine, mirror_dir
from benchmarks.reindex import drop_pngs
from storage.home import DataHome
from storage.lifecycle import store_bytes
from storage.releases import complete_release_ids, load_release


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.lifecycle", description=__doc__.split("\n\n")[0])
    parser.add_argument("--mirror", default="", help="Fashion-MNIST files (default: $FASHION_MNIST_MIRROR)")
    parser.add_argument("--runs", type=int, default=100, help="drop-folder re-index runs on each copy")
    parser.add_argument("--new", type=int, default=10, help="images dropped per run")
    parser.add_argument("--keep", type=int, default=3, help="cleanup --keep")
    parser.add_argument("--remove", type=int, default=1000, help="items removed at once")
    parser.add_argument("--epochs", type=int, default=1, help="pipeline training epochs (short: not measured)")
    parser.add_argument("--steps-per-epoch", type=int, default=50)
    parser.add_argument("--workdir", default="", help="where to build the homes (kept); default: a temporary dir")
    args = parser.parse_args(argv)
    from flows.cleanup import cleanup
    from flows.pipeline import pipeline
    from flows.reindex import reindex
    from flows.remove import remove

    with tempfile.TemporaryDirectory() as scratch:
        workdir = Path(args.workdir or scratch)
        base = workdir / "base"
        started = time.perf_counter()
        pipeline(data_home=str(base), mirror=str(mirror_dir(args.mirror)), epochs=args.epochs,
                 steps_per_epoch=args.steps_per_epoch, gallery_size=50, force_publish=True)
        pipeline_seconds = time.perf_counter() - started
        homes = {}
        for name in ("without_cleanup", "with_cleanup", "removal"):
            shutil.copytree(base, workdir / name)
            homes[name] = DataHome(workdir / name).ensure()
        items = len(load_release(homes["removal"]).items)
        start_bytes = store_bytes(homes["with_cleanup"])

        disk = {}
        for name in ("without_cleanup", "with_cleanup"):
            home = homes[name]
            started = time.perf_counter()
            for run in range(args.runs):
                drop_pngs(home.incoming, args.new, seed=10_000 + run)
                outcome = reindex(data_home=str(home.root), settle_seconds=0)
                if outcome["indexed"] != args.new:
                    raise SystemExit(f"expected {args.new} indexed, got {outcome}")
                if name == "with_cleanup":
                    cleanup(keep=args.keep, recently_live_minutes=0, data_home=str(home.root))
            disk[name] = {"store_bytes": store_bytes(home), "releases": len(complete_release_ids(home)),
                          "segments": len({entry.split(".")[0] for entry in home.store.list("segments")}),
                          "seconds": round(time.perf_counter() - started, 1)}

        home = homes["removal"]
        drop_pngs(home.incoming, args.new, seed=1)
        started = time.perf_counter()
        reindex(data_home=str(home.root), settle_seconds=0)
        reindex_seconds = time.perf_counter() - started
        live = load_release(home)
        chosen = np.random.default_rng(0).choice(live.items.item_ids, size=args.remove, replace=False)
        before = store_bytes(home)
        started = time.perf_counter()
        removed = remove(item_ids=sorted(chosen.tolist()), reason="benchmark", data_home=str(home.root))
        remove_seconds = time.perf_counter() - started
        after = load_release(home)
        rewritten = [record for record in after.manifest["segments"] if record["name"].startswith(after.release_id)]
        after_bytes = store_bytes(home)

    result = {
        "machine": machine(), "load_average_1min": round(os.getloadavg()[0], 2),
        "catalogue_items": items, "pipeline_seconds": round(pipeline_seconds, 1),
        "disk": {"runs": args.runs, "images_per_run": args.new, "keep": args.keep,
                 "store_bytes_before_runs": start_bytes, **disk},
        "removal": {"items_removed": args.remove, "seconds": round(remove_seconds, 2),
                    "one_reindex_run_seconds": round(reindex_seconds, 2), "published": removed["published"],
                    "release_items": len(after.items),
                    "rewritten_segments": [{"rows": r["rows"], "graph": "graph_bytes" in r} for r in rewritten],
                    "store_bytes_before": before, "store_bytes_after": after_bytes},
    }
    print(json.dumps(result, indent=2))
    return result


if __name__ == "__main__":
    main()
