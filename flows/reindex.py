"""Re-index the drop folder: new images become searchable without retraining.

Files dropped into incoming/ are validated, normalised, deduplicated (tasks/ingest.py states the
policy), catalogued, embedded with the live release's model, and published as a new release made
of the live release's segments and model (hard links: the cost grows with the new files, not with
the index) plus one segment of new items. The live release's evaluation is carried over unchanged
("metrics_carried_from" in metrics.json): re-running it means embedding the whole test set against
the whole index, a cost that grows with the index, on a flow scheduled every minute; the next
retrain or full pipeline run evaluates again.
Run once without a server: `python -m flows.reindex --help`.
"""

from __future__ import annotations

from prefect import flow

from storage.home import DataHome
from storage.lock import DEFAULT_LOCK_TIMEOUT_S
from storage.releases import ReleaseManifest, ReleaseWriter, latest_release_id, new_release_id
from storage.session import writer_session
from tasks.evaluate import report_artifact
from tasks.index import index_task
from tasks.ingest import (DEFAULT_SETTLE_SECONDS, DropScan, has_pending_files, move_processed, move_rejected,
                          rejection_lines, rows_to_items, scan_task)
from tasks.logs import step_logger
from tasks.publish import publish_task


def report(counts: dict, release_id: str | None, reason: str, rejections: list[str], move_notes: list[str]) -> str:
    lines = ["# Drop-folder re-index", "", reason, "", "| files | count |", "|---|---|"]
    lines += [f"| {key} | {value} |" for key, value in counts.items()]
    if rejections:
        lines += ["", "## Rejected", "", *rejections]
    if move_notes:
        lines += ["", "## Notes on rejected/", "", *move_notes]
    if release_id:
        lines += ["", f"Release: `{release_id}`"]
    return "\n".join(lines)


@flow(name="reindex")
def reindex(data_home: str = "", settle_seconds: float = DEFAULT_SETTLE_SECONDS,
            lock_timeout_s: float = DEFAULT_LOCK_TIMEOUT_S) -> dict:
    """Add the images dropped into incoming/ to a new release, embedded with the live model.

    Args:
        data_home: where everything is stored (default: $FASHION_SIM_HOME, else ./data)
        settle_seconds: files modified less than this many seconds ago are left for the next run
        lock_timeout_s: how long to wait for another run that is writing to the store before stopping
    """
    log = step_logger()
    home = DataHome.from_env(data_home or None).ensure()
    if not has_pending_files(home.incoming):  # the every-minute case: no lock, no model, no artifact
        return {"published": False, "release_id": latest_release_id(home),
                "reason": f"nothing to index: {home.incoming} is empty", **DropScan().counts(), "rejections": [],
                "notes": []}
    with writer_session(home, "reindex", lock_timeout_s, log=log) as session:  # no release: run the pipeline
        live, catalog = session.live, session.catalog
        scan = scan_task(home.incoming, catalog, session.next_item_id, settle_seconds)
        counts = scan.counts()
        release_id = None
        if scan.accepted:
            writer = ReleaseWriter(home)
            rows = scan.catalogue_rows(home.relative(home.processed / writer.release_id))
            items = rows_to_items(rows)
            embeddings = index_task(live.embed, items)
            # rows before the release, tagged with it: recover() drops them if it is never published
            catalog.add(rows, writer.release_id)
            manifest = ReleaseManifest("reindex", live.release_id, len(live.items) + len(items), live.manifest["model"],
                                       {"added_items": len(items)})
            metrics = {**live.metrics,
                       "metrics_carried_from": live.metrics.get("metrics_carried_from", live.release_id)}
            release_id = publish_task(home, writer, manifest, metrics, new_items=items, new_embeddings=embeddings,
                                      base=live)
            move_processed(home.incoming, home.processed, release_id, scan.accepted)
            reason = f"indexed {len(items)} new item(s) into release {release_id}"
        else:
            reason = (f"no valid new files ({counts['rejected']} rejected, {counts['waiting']} waiting): "
                      "nothing published")
        move_notes = move_rejected(home.incoming, home.rejected, release_id or new_release_id(), scan.rejected)
    log.info("reindex: %s (%s)", reason, counts)
    for note in move_notes:
        log.warning("reindex: %s", note.removeprefix("- "))
    report_artifact("reindex-report", report(counts, release_id, reason, rejection_lines(scan), move_notes),
                    description="drop-folder re-index")
    return {"published": release_id is not None, "release_id": release_id or live.release_id, "reason": reason,
            **counts, "rejections": [{"path": r.name, "reason": r.reason} for r in scan.rejected],
            "notes": move_notes}


if __name__ == "__main__":
    from flows.cli import run_flow_cli

    run_flow_cli(reindex)
