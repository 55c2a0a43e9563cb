"""Wall time and peak memory of the full pipeline from an empty data home, files from a local mirror.
Runs `python -m flows.pipeline` as a child process (so its memory is measured alone); prints one JSON object.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from benchmarks.common import machine, mirror_dir


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.pipeline", description=__doc__.split("\n")[0])
    parser.add_argument("--mirror", default="", help="folder with the four .gz files")
    parser.add_argument("--keep", default="", help="data home to use (kept); default: a temporary one")
    parser.add_argument("pipeline_args", nargs="*", help="extra flow parameters after --, e.g. -- --epochs 2")
    args = parser.parse_args(argv)
    folder = mirror_dir(args.mirror)
    with tempfile.TemporaryDirectory() as scratch:
        home = Path(args.keep or Path(scratch) / "home")
        command = [sys.executable, "-m", "flows.pipeline", "--data-home", str(home), "--mirror", str(folder),
                   *args.pipeline_args]
        started = time.perf_counter()
        done = subprocess.run(command, capture_output=True, text=True, env=os.environ.copy())
        wall = time.perf_counter() - started
        if done.returncode != 0:
            raise SystemExit(f"pipeline failed:\n{done.stderr[-3000:]}")
        peak_kib = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
        output = "\n" + done.stdout
        summary = json.loads(output[output.rindex("\n{") + 1:])
    result = {"machine": machine(), "wall_seconds": round(wall, 1), "peak_rss_gib": round(peak_kib / 2**20, 2),
              "train_seconds": summary.get("train_seconds"), "metrics": summary.get("metrics"),
              "published": summary.get("published")}
    print(json.dumps(result, indent=2))
    return result


if __name__ == "__main__":
    main()
