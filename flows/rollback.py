"""Roll back: publish a new release that serves an earlier release's model and embeddings.

The target (default: the live release's parent) must still be complete (flows/cleanup.py keeps the
newest N). Removal marks still apply; items catalogued after the target are embedded with its model
and kept (`--drop-newer`: left out, and marked removed so that no retrain brings them back; `python -m
flows.remove --undo ID` does). The new release records `rollback_to` and `rolled_back` in its
manifest and, being newer than and built on the live release, is never rolled past by recovery. The
page and the service switch to it as to any release. Steps: tasks/lifecycle.py, inside one writer
session (storage/session.py). Run once without a server: `python -m flows.rollback --help`.
"""

from __future__ import annotations

from prefect import flow

from storage.home import DataHome
from storage.releases import NoReleaseError
from storage.lock import DEFAULT_LOCK_TIMEOUT_S
from storage.session import writer_session
from tasks.evaluate import report_artifact
from tasks.lifecycle import markdown_lines, roll_back_task, rollback_target_task
from tasks.logs import step_logger


@flow(name="rollback")
def rollback(release_id: str = "", drop_newer: bool = False, data_home: str = "",
             lock_timeout_s: float = DEFAULT_LOCK_TIMEOUT_S) -> dict:
    """Publish a new release serving an earlier release's model and embeddings (default: the live one's parent).

    Args:
        release_id: the release to roll back to (default: the live release's parent)
        drop_newer: leave out the items catalogued after that release (marked removed) instead of
            embedding them with its model
        data_home: where everything is stored: a folder or s3://bucket/prefix (default: $FASHION_SIM_HOME, else ./data)
        lock_timeout_s: how long to wait for another run that is writing to the store before stopping
    """
    log = step_logger()
    home = DataHome.from_env(data_home or None).ensure()
    with writer_session(home, "rollback", lock_timeout_s, require_live=False, log=log) as session:  # a damaged one too
        if session.live_id is None:
            raise NoReleaseError(f"No release is published in {home.location}: nothing to roll back")
        rolled_back = session.live_id
        target = rollback_target_task(session, release_id)
        done, newer = roll_back_task(session, target, drop_newer)
    newer_note = (f"{newer} item(s) catalogued after it " + (
        "were left out and marked removed (`python -m flows.remove --undo ID` brings one back)" if drop_newer else
        "were re-embedded with its model and kept (--drop-newer leaves them out)")) if newer else \
        "no item was catalogued after it"
    summary = (f"release {done.release_id} serves release {target.release_id}'s model and embeddings in place of "
               f"{rolled_back}; {newer_note}; {done.left_out} removed item(s) stay out")
    log.info("rollback: %s", summary)
    result = {"published": True, "release_id": done.release_id, "rollback_to": target.release_id,
              "rolled_back": rolled_back, "newer_items": newer, "newer_items_kept": 0 if drop_newer else newer,
              "removed_items_left_out": done.left_out, "summary": summary}
    report_artifact("rollback-report", markdown_lines("Roll back", summary, result), description="rollback")
    return result


if __name__ == "__main__":
    from flows.cli import run_flow_cli

    run_flow_cli(rollback, positional=("release_id",), flags=("drop_newer",))
