"""Clean up: delete old releases and store versions and free their disk.

Keeps the newest `keep` releases, the live one, every one live in the last RECENTLY_LIVE_MINUTES (a
page or service that still has it open keeps answering until it switches), and the release whose
model a kept one serves; deletes the other releases, the segments (.lance + .hnsw) no kept release
refers to, and the catalogue's and removal marks' Lance versions older than the oldest release kept
for itself (storage/lifecycle.py says how "recently live" is derived). prefect.yaml runs it daily. Inside one
writer session (storage/session.py). Run once without a server: `python -m flows.cleanup --help`.
"""

from __future__ import annotations

from prefect import flow

from storage.home import DataHome
from storage.lifecycle import RECENTLY_LIVE_MINUTES
from storage.lock import DEFAULT_LOCK_TIMEOUT_S
from storage.session import writer_session
from tasks.evaluate import report_artifact
from tasks.lifecycle import cleanup_task, markdown_lines
from tasks.logs import step_logger

DEFAULT_KEEP = 3  # the daily deployment's: a bad release and two to roll back to


@flow(name="cleanup")
def cleanup(keep: int = DEFAULT_KEEP, recently_live_minutes: float = RECENTLY_LIVE_MINUTES, data_home: str = "",
            lock_timeout_s: float = DEFAULT_LOCK_TIMEOUT_S) -> dict:
    """Delete releases older than the newest KEEP (never the live one nor one live recently) and free their disk.

    Args:
        keep: how many of the newest releases to keep (rollback targets)
        recently_live_minutes: releases live within this many minutes are kept too, for the pages and
            services that may still have them open; lower it only when none can
        data_home: where everything is stored: a folder or s3://bucket/prefix (default: $FASHION_SIM_HOME, else ./data)
        lock_timeout_s: how long to wait for another run that is writing to the store before stopping
    """
    log = step_logger()
    home = DataHome.from_env(data_home or None).ensure()
    with writer_session(home, "cleanup", lock_timeout_s, log=log) as session:
        done = cleanup_task(session, keep, recently_live_minutes)
    summary = (f"deleted {len(done['deleted_releases'])} release(s) and {len(done['deleted_segments'])} segment(s), "
               f"freed {done['freed_bytes'] / 2**20:.1f} MiB; kept {len(done['kept'])} release(s)")
    log.info("cleanup: %s", summary)
    report_artifact("cleanup-report", markdown_lines("Clean up", summary, {
        **{f"kept {release}": why for release, why in sorted(done["kept"].items())},
        "deleted releases": ", ".join(done["deleted_releases"]) or "none", "freed bytes": done["freed_bytes"]}),
        description="clean-up")
    return {**done, "summary": summary}


if __name__ == "__main__":
    from flows.cli import run_flow_cli

    run_flow_cli(cleanup)
