"""verify: check every file of a release against what was recorded when it was written (flows/verify.py).

Every file, not only what an open reads: the files listed in the manifest (sizes and checksums), the
manifest's own checksum, and every file of each segment's Lance version (its indices and transaction
file too; storage/integrity.py). On an object store each file is streamed once; a file shared by
several releases (a segment, a model) is hashed once per run. Releases written before checksums
existed are checked for sizes only ("no checksums"); a newer release that still shares their files
lists those as unchecked.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from prefect import task
from prefect.cache_policies import NO_CACHE

from storage.home import DataHome
from storage.integrity import CHECKSUMS, DamagedFileError, has_checksums
from storage.releases import (MANIFEST, RELEASE_ID_PATTERN, RELEASES, WRONG_SIZE, DamagedReleaseError, ReleaseError,
                              read_manifest, release_key)
from storage.search_index import segment_key
from tasks.logs import step_logger

OK, DAMAGED, PARTLY_CHECKED, NO_CHECKSUMS = "ok", "damaged", "partly checked", "no checksums"


@dataclass(frozen=True)
class ReleaseCheck:
    """What verify found in one release: its status, each damaged file with why, the files it has no
    checksum for, and how many files it checked."""

    release_id: str
    status: str  # OK, DAMAGED, PARTLY_CHECKED (some files predate checksums) or NO_CHECKSUMS
    damaged: dict[str, str]  # store key -> what is wrong with it
    unchecked: tuple[str, ...] = ()
    checked_files: int = 0

    def as_dict(self) -> dict[str, Any]:
        return {"release_id": self.release_id, "status": self.status, "damaged": self.damaged,
                "unchecked": list(self.unchecked), "checked_files": self.checked_files}


def published_release_ids(home: DataHome) -> list[str]:
    """Every release with a manifest, oldest first (damaged ones included: the ones to report)."""
    return [name for name in home.store.list(RELEASES)
            if RELEASE_ID_PATTERN.match(name) and home.store.exists(release_key(name, MANIFEST))]


def expected_checksums(manifest: dict[str, Any]) -> dict[str, str | None]:
    """Every file a release owns (store key) and its recorded checksum (None: written before checksums)."""
    recorded = manifest.get(CHECKSUMS, {})
    expected: dict[str, str | None] = {key: recorded.get(key) for key in manifest["files"]}
    for record in manifest["segments"]:
        dataset = segment_key(record["name"])
        files = record.get(CHECKSUMS)
        expected.update({f"{dataset}/{path}": checksum for path, checksum in files.items()} if files else {dataset: None})
    return expected


def check_release(home: DataHome, release_id: str, hashed: dict[str, str | None]) -> ReleaseCheck:
    """Check one release; `hashed` (store key -> checksum found) carries files already hashed in this run."""
    try:
        manifest = read_manifest(home, release_id, check_sizes=False)
    except DamagedReleaseError as error:
        return ReleaseCheck(release_id, DAMAGED, {error.key: error.reason})
    except ReleaseError as error:
        return ReleaseCheck(release_id, DAMAGED, {release_key(release_id, MANIFEST): str(error)})
    damaged = {key: WRONG_SIZE for key, size in manifest["files"].items() if home.store.size(key) != size}
    expected = expected_checksums(manifest)
    for key, checksum in expected.items():
        if checksum is not None and key not in damaged:
            if key not in hashed:
                hashed[key] = home.store.checksum(key)
            if hashed[key] != checksum:
                damaged[key] = DamagedFileError.found(key, hashed[key]).reason
    unchecked = tuple(key for key, checksum in expected.items() if checksum is None)
    status = (DAMAGED if damaged else NO_CHECKSUMS if not has_checksums(manifest)
              else PARTLY_CHECKED if unchecked else OK)
    return ReleaseCheck(release_id, status, damaged, unchecked, 1 + len(expected) - len(unchecked))


@task(name="verify-release", cache_policy=NO_CACHE)
def check_release_task(home: DataHome, release_id: str, hashed: dict[str, str | None]) -> ReleaseCheck:
    check = check_release(home, release_id, hashed)
    step_logger().info("verify: release %s %s%s", release_id, check.status,
                       "".join(f"; {key} {why}" for key, why in check.damaged.items()))
    return check


def verify_report(checks: list[ReleaseCheck]) -> str:
    """The run's markdown artifact: one row per release, then each damaged file."""
    rows = [f"| {c.release_id} | {c.status} | {c.checked_files} | {len(c.unchecked)} |" for c in checks]
    damaged = [f"- `{key}` (release {c.release_id}): {why}" for c in checks for key, why in c.damaged.items()]
    return "\n".join(["# Release integrity", "", "| release | status | files checked | files without checksum |",
                      "|---|---|---|---|", *rows, "", *(["## Damaged files", "", *damaged] if damaged else [])])

