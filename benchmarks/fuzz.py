"""Fuzzing normalise_image for a while: the seeded damaged PNGs and JPEGs of tests/fuzz_cases.py, case
after case, until --seconds have passed. Counts what was normalised, rejected (ImageRejected) or
escaped as another exception (the first few named, to reproduce with `fuzz_case(seed, index)`), and
lists the slowest cases. The test suite runs the first 10,000 cases of one seed; this goes further.
Prints one JSON object.
"""

from __future__ import annotations

import argparse
import heapq
import itertools
import json
import time
import warnings
from collections import Counter

from benchmarks.common import machine
from storage.images import ImageRejected, normalise_image
from tests.fuzz_cases import fuzz_case

EXAMPLES_KEPT = 5
SLOWEST_KEPT = 10


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.fuzz", description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=60, help="how long to keep generating cases")
    parser.add_argument("--seed", type=int, default=0, help="fuzz seed: the same seed gives the same cases")
    args = parser.parse_args(argv)
    warnings.simplefilter("ignore", UserWarning)  # PIL warns about every corrupt EXIF block it skips

    outcomes, escaped_by_kind, examples, slowest = Counter(), Counter(), [], []
    started = time.perf_counter()
    for index in itertools.count():
        if time.perf_counter() - started >= args.seconds:
            break
        case = fuzz_case(args.seed, index)
        began = time.perf_counter()
        try:
            normalise_image(case.data)
            outcomes["accepted"] += 1
        except ImageRejected:
            outcomes["rejected"] += 1
        except Exception as error:  # noqa: BLE001 - what the fuzzing looks for
            outcomes["unexpected"] += 1
            escaped_by_kind[f"{case.kind}: {type(error).__name__}"] += 1
            if len(examples) < EXAMPLES_KEPT:
                examples.append({"case": case.name, "index": index, "type": type(error).__name__,
                                 "message": str(error)[:300]})
        milliseconds = (time.perf_counter() - began) * 1000
        heapq.heappush(slowest, (milliseconds, case.name, case.kind))
        if len(slowest) > SLOWEST_KEPT:
            heapq.heappop(slowest)
    elapsed = time.perf_counter() - started

    cases = sum(outcomes.values())
    return {
        "machine": machine(), "seed": args.seed, "seconds": round(elapsed, 1), "cases": cases,
        "cases_per_second": round(cases / elapsed, 1),
        "accepted": outcomes["accepted"], "rejected": outcomes["rejected"],
        "unexpected_exceptions": {"count": outcomes["unexpected"], "by_kind_and_type": dict(escaped_by_kind),
                                  "first": examples},
        "slowest_cases": [{"case": name, "kind": kind, "ms": round(ms, 1)}
                          for ms, name, kind in sorted(slowest, reverse=True)],
    }


if __name__ == "__main__":
    print(json.dumps(main(), indent=2))
