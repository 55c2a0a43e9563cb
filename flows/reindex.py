"""Re-index the drop folder: new images become searchable without retraining.

Files dropped into incoming/ are validated, normalised, deduplicated (tasks/ingest.py states the
policy), catalogued, embedded with the live release's model, and published as a new release made
of the live release's segments and model (hard links: the cost grows with the new files, not with
the index) plus one segment of new items. The live release's evaluation is carried over unchanged
("metrics_carried_from" in metrics.json): re-running it means embedding the whole test set against
the whole index, a cost that grows with the index, on a flow scheduled every minute; the next
retrain or full pipeline run evaluates again. The scan is tasks/ingest.py's, the release is built by
tasks/publish.py's publish_drops, all inside one writer session (storage/session.py).
Run once without a server: `python -m flows.reindex --help`.
"""

from __future__ import annotations

from prefect import flow

from storage.home import DataHome
from storage.lock import DEFAULT_LOCK_TIMEOUT_S
from storage.releases import ReleaseWriter, latest_release_id, new_release_id
from storage.session import writer_session
from tasks.evaluate import report_artifact
from tasks.ingest import DEFAULT_SETTLE_SECONDS, DropScan, has_pending_files, move_rejected, reindex_report, scan_task
from tasks.logs import step_logger
from tasks.publish import drop_items, publish_drops_task
from tasks.shards import FanOut, embed_catalogue


@flow(name="reindex")
def reindex(data_home: str = "", settle_seconds: float = DEFAULT_SETTLE_SECONDS,
            lock_timeout_s: float = DEFAULT_LOCK_TIMEOUT_S, allow_new_classes: bool = False, incoming: str = "",
            dask_address: str = "") -> dict:
    """Add the images dropped into incoming/ to a new release, embedded with the live model.

    Args:
        data_home: where everything is stored: a folder or s3://bucket/prefix (default: $FASHION_SIM_HOME, else ./data)
        incoming: the local drop folder, processed/ and rejected/ beside it (default: $FASHION_SIM_INCOMING,
            else incoming/ in a local data home; required for an s3 home)
        settle_seconds: files modified less than this many seconds ago are left for the next run
        allow_new_classes: a sub-folder of incoming/ that names no class becomes a new class (indexed now,
            trained on at the next retrain) instead of being rejected; "allow_new_classes": true in the
            home's dataset.json makes this the home's setting
        lock_timeout_s: how long to wait for another run that is writing to the store before stopping
        dask_address: an existing Dask cluster's scheduler (tcp://host:8786) for embedding jobs of at least
            200,000 images, which needs an s3:// data home (default: $DASK_SCHEDULER_ADDRESS, else a local
            cluster; smaller jobs embed in this process; README "Scale out")
    """
    log = step_logger()
    home = DataHome.from_env(data_home or None, incoming or None).ensure()
    fan_out = FanOut.for_home(home, dask_address)
    if not has_pending_files(home.incoming):  # the every-minute case: no lock, no model, no artifact
        return {"published": False, "release_id": latest_release_id(home),
                "reason": f"nothing to index: {home.incoming} is empty", **DropScan().counts(), "rejections": [],
                "notes": []}
    with writer_session(home, "reindex", lock_timeout_s, log=log) as session:  # no release: run the pipeline
        scan = scan_task(home.incoming, session.catalog, session.next_item_id, session.live.dataset, settle_seconds,
                         allow_new_classes)
        counts = scan.counts()
        release_id = None
        if scan.accepted:  # embedded here, by shards on a cluster when the drop is large (tasks/shards.py)
            writer = ReleaseWriter(home)
            items = drop_items(home, scan, writer)
            embedded = embed_catalogue(session.live.embedder, items, writer, fan_out)
            release_id = publish_drops_task(session, scan, writer, items, embedded)
        reason = (f"indexed {counts['indexed']} new item(s) into release {release_id}" if release_id else
                  f"no valid new files ({counts['rejected']} rejected, {counts['waiting']} waiting): "
                  "nothing published")
        move_notes = move_rejected(home.incoming, home.rejected, release_id or new_release_id(), scan.rejected)
    log.info("reindex: %s (%s)", reason, counts)
    for note in move_notes:
        log.warning("reindex: %s", note.removeprefix("- "))
    report_artifact("reindex-report", reindex_report(scan, release_id, reason, move_notes),
                    description="drop-folder re-index")
    return {"published": release_id is not None, "release_id": release_id or session.live.release_id,
            "reason": reason, **counts, "rejections": [{"path": r.name, "reason": r.reason} for r in scan.rejected],
            "notes": move_notes}


if __name__ == "__main__":
    from flows.cli import run_flow_cli

    run_flow_cli(reindex)
