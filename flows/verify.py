"""Verify releases: every file checked against the size and checksum recorded when it was written.

`python -m flows.verify` checks the live release, `python -m flows.verify RELEASE_ID` that one,
`--all` every release in the store. It names each damaged file and exits non-zero when it finds one;
the run's artifact holds the table. It only reads (no lock): a release that `flows.cleanup` deletes
while it runs is reported with its files missing. Opening a release checks what the open reads
(storage/integrity.py); this checks everything, indices and files shared with other releases included.
"""

from __future__ import annotations

from prefect import flow

from storage.errors import UserError
from storage.home import DataHome
from storage.releases import NoReleaseError, latest_release_id, restore_latest_hint
from tasks.evaluate import report_artifact
from tasks.logs import step_logger
from tasks.verify import OK, check_release_task, published_release_ids, verify_report


class DamageFoundError(UserError, RuntimeError):
    """verify found damaged files; the message names each one."""


@flow(name="verify")
def verify(release_id: str = "", all: bool = False, data_home: str = "") -> dict:
    """Check every file of a release against the checksums recorded when it was written.

    Args:
        release_id: the release to check (default: the live one)
        all: check every release in the store instead
        data_home: where everything is stored: a folder or s3://bucket/prefix (default: $FASHION_SIM_HOME, else ./data)
    """
    if release_id and all:
        raise UserError("give a release id or --all, not both")
    home = DataHome.from_env(data_home or None)
    release_ids = published_release_ids(home) if all else [release_id or latest_release_id(home)]
    if not release_ids or release_ids == [None]:
        raise NoReleaseError(f"No release is published in {home.location}: {restore_latest_hint(home)}")
    hashed: dict[str, str | None] = {}  # files shared by releases are hashed once
    checks = [check_release_task(home, one, hashed) for one in release_ids]
    report_artifact("verify-report", verify_report(checks), description="release integrity")
    intact = [check.release_id for check in checks if check.status == OK]
    damaged: dict[str, tuple[str, list[str]]] = {}  # key -> (what is wrong, the releases that read it)
    for check in checks:
        for key, why in check.damaged.items():
            damaged.setdefault(key, (why, []))[1].append(check.release_id)
    if damaged:
        named = "; ".join(f"{key} {why} (release {', '.join(ids)})" for key, (why, ids) in damaged.items())
        raise DamageFoundError(f"{len(damaged)} damaged file(s): {named}. Intact releases: {', '.join(intact) or 'none'}")
    step_logger().info("verify: %d release(s) checked, %d intact", len(checks), len(intact))
    return {"releases": [check.as_dict() for check in checks], "intact": intact}


if __name__ == "__main__":
    from flows.cli import run_flow_cli

    run_flow_cli(verify, positional=("release_id",), flags=("all",))
