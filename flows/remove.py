"""Remove items: publish a release without them, and keep them out of every later one.

The items (by id, catalogue path, or the content of an image file) get a removal mark (when, why:
storage/removals.py) and the live release is published again without them: its other segments
referred to, the ones that held them written anew, its model and evaluation carried over (as a
re-index does). Their catalogue rows stay, so no later retrain trains on them, no re-index or
rollback brings them back, and a re-drop of the same image is rejected as "removed item N" until
`--undo ITEM_ID` lifts the mark (the item comes back in a new release). Unknown ids: one line,
nothing published. Steps: tasks/lifecycle.py, inside one writer session (storage/session.py).
Run once without a server: `python -m flows.remove --help`.
"""

from __future__ import annotations

from prefect import flow

from storage.home import DataHome
from storage.lock import DEFAULT_LOCK_TIMEOUT_S
from storage.session import writer_session
from tasks.evaluate import report_artifact
from tasks.lifecycle import markdown_lines, remove_items_task, resolve_items_task, undo_removals_task
from tasks.logs import step_logger


@flow(name="remove")
def remove(item_ids: list[int] | None = None, path: list[str] | None = None, image: list[str] | None = None,
           reason: str = "", undo: bool = False, data_home: str = "",
           lock_timeout_s: float = DEFAULT_LOCK_TIMEOUT_S) -> dict:
    """Remove catalogue items from search, the page and the API, and from every later release.

    Args:
        item_ids: catalogue item ids (as `python -m ui.search` and the page show them)
        path: remove the items with these catalogue paths (e.g. processed/<release>/<class>/<file>.png)
        image: remove the items whose content matches these image files
        reason: why, kept with each removal mark
        undo: lift the removal marks of ITEM_IDS instead; the items come back in a new release
        data_home: where everything is stored: a folder or s3://bucket/prefix (default: $FASHION_SIM_HOME, else ./data)
        lock_timeout_s: how long to wait for another run that is writing to the store before stopping
    """
    log = step_logger()
    home = DataHome.from_env(data_home or None).ensure()
    with writer_session(home, "remove", lock_timeout_s, log=log) as session:  # no release: nothing to remove from
        wanted = resolve_items_task(session, list(item_ids or []), [] if undo else list(path or []),
                                    [] if undo else list(image or []))
        done = undo_removals_task(session, wanted) if undo else remove_items_task(session, wanted, reason)
    if done is None:
        summary = f"item(s) {', '.join(map(str, wanted))} already removed: nothing published"
    elif undo:
        summary = f"restored {done.added} item(s) into release {done.release_id}"
    else:
        summary = f"removed {done.left_out} item(s): release {done.release_id} no longer holds them"
    log.info("remove: %s", summary)
    result = {"published": done is not None, "release_id": done.release_id if done else session.live.release_id,
              "items": wanted, "undo": undo, "reason": reason, "summary": summary}
    report_artifact("remove-report", markdown_lines("Undo removal" if undo else "Remove items", summary, result),
                    description="items removed or restored")
    return result


if __name__ == "__main__":
    from flows.cli import run_flow_cli

    run_flow_cli(remove, positional=("item_ids",), flags=("undo",))
