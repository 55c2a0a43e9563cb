"""Fuzzing (tests/fuzz_cases.py): ten thousand damaged PNGs and JPEGs through normalise_image, and a few
hundred through the drop folder. Whatever the damage, a file is normalised or rejected with a reason;
any other exception would be a traceback on the page or a failed re-index run that leaves every file
of the drop folder waiting. `python -m benchmarks.fuzz` runs the same cases for longer."""

from __future__ import annotations

import os
import time

import numpy as np
import pytest

from storage.images import ImageRejected, normalise_image
from tests.corpus import accounted
from tests.fuzz_cases import mutations, seed_files
from tests.watchdog import under_watchdog

UPLOAD_SEED, UPLOAD_CASES = 12, 10_000  # about 4 s on 2 cores: most are rejected at the header
DROP_SEED, DROP_CASES = 13, 300
CLASS_FOLDERS = ("dress", "3", "Ankle Boot", "sneakers")  # every fourth dropped file goes in one of these

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")  # PIL warns about the corrupt EXIF it skips


@pytest.mark.parametrize("kind", sorted(seed_files()))
def test_seed_files_are_accepted(kind):
    """Mutations start from files normalise_image accepts, so they probe the decoding paths too, not
    only the rejection of files that were never valid."""
    image = normalise_image(seed_files()[kind])
    assert image.pixels.shape == (28, 28) and image.pixels.max() > 150


def test_damaged_files_are_normalised_or_rejected():
    progress = {"case": None}

    def run_cases():
        outcomes, unexpected = {"accepted": 0, "rejected": 0}, []
        for case in mutations(UPLOAD_SEED, UPLOAD_CASES):
            progress["case"] = case.name
            try:
                pixels = normalise_image(case.data).pixels
            except ImageRejected:
                outcomes["rejected"] += 1
                continue
            except Exception as error:  # noqa: BLE001 - exactly what this test looks for
                unexpected.append(f"{case.name}: {type(error).__name__}: {error}")
                continue
            if pixels.shape != (28, 28) or pixels.dtype != np.uint8:
                unexpected.append(f"{case.name}: pixels {pixels.shape} {pixels.dtype}")
            outcomes["accepted"] += 1
        return outcomes, unexpected

    outcomes, unexpected = under_watchdog(run_cases, progress)
    assert not unexpected, (f"{len(unexpected)} of {UPLOAD_CASES} cases (fuzz_case({UPLOAD_SEED}, index)) "
                            "neither normalised nor rejected:\n" + "\n".join(unexpected))
    assert min(outcomes.values()) > 0, outcomes  # the damage exercised both paths


def test_damaged_files_through_the_drop_folder(published_home):
    from flows.reindex import reindex

    home = published_home
    two_hours_ago = time.time() - 7200
    dropped = set()
    for number, case in enumerate(mutations(DROP_SEED, DROP_CASES)):
        folder = CLASS_FOLDERS[number // 4 % len(CLASS_FOLDERS)] + "/" if number % 4 == 0 else ""
        relative = f"{folder}{case.name}{case.suffix}"
        (home.incoming / relative).parent.mkdir(parents=True, exist_ok=True)
        (home.incoming / relative).write_bytes(case.data)
        os.utime(home.incoming / relative, (two_hours_ago, two_hours_ago))
        dropped.add(relative)

    result = under_watchdog(lambda: reindex(data_home=str(home.root), settle_seconds=0),
                            {"drop folder": str(home.incoming)})

    assert result["seen"] == len(dropped) and result["published"], result  # some files are intact enough
    assert result["indexed"] + result["rejected"] == result["seen"] and result["waiting"] == 0, result
    processed, rejected, waiting = accounted(home)
    assert not waiting, sorted(waiting)
    assert (len(processed), len(rejected)) == (result["indexed"], result["rejected"]), result
    assert processed | rejected == dropped and not processed & rejected
