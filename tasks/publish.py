"""publish: write a release (model, segments, metrics, manifest) and move LATEST to it, atomically.

The two ways a flow ends: `release_candidate` (pipeline, retrain) evaluates a newly trained
candidate, gates it, reports, and publishes or discards it; `publish_drops` (re-index) adds the drop
folder's accepted files to a release built on the live one, with its evaluation carried over. Both
build the release's manifest here, so no flow spells its keys.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np
from prefect import task
from prefect.cache_policies import NO_CACHE

from storage.catalog import CatalogItems
from storage.dataset import DatasetDescription, read_home_dataset, write_home_dataset
from storage.home import DataHome
from storage.releases import (METRICS_FILE, ModelRecord, Release, ReleaseManifest, ReleaseWriter, complete_release_ids,
                              delete_segment, release_key, retired_through)
from storage.lifecycle import carried_metrics
from storage.session import WriterSession
from tasks.evaluate import GateDecision, evaluate_release, gate, markdown_report, report_artifact
from tasks.ingest import DropScan, move_processed
from tasks.logs import step_logger
from tasks.shards import Embedded


def publish_release(home: DataHome, writer: ReleaseWriter, manifest: ReleaseManifest, metrics: dict[str, Any],
                    new_items: CatalogItems | None = None, new_embeddings: np.ndarray | None = None,
                    model=None, base: Release | None = None, segment: dict[str, Any] | None = None) -> str:
    """Publish `writer`'s release: `base`'s segments and model (hard-linked) plus what is new.

    A retrain passes the new model and every item; a re-index passes `base` and only the new items.
    `segment`: the new items' segment when the fan-out's shards wrote it (tasks/shards.py), else it is written here.
    """
    try:
        if base is not None:
            writer.extend(base, None if segment else new_items, None if segment else new_embeddings)
        elif new_items is not None and len(new_items) and segment is None:
            writer.add_segment(new_items, new_embeddings)
        if segment is not None:
            writer.adopt_segment(segment, new_items)
        if model is not None:
            writer.save_model(model)
        else:
            writer.link_model_from(base)
        writer.write_json(METRICS_FILE, metrics)
        release_id = writer.publish(manifest)
    except BaseException:
        writer.discard()
        raise
    step_logger().info("publish: release %s is live (%s)", release_id, home.store.url(release_key(release_id)))
    return release_id


@dataclass(frozen=True)
class Candidate:
    """A newly trained network, the whole catalogue embedded with it, and how it was trained."""

    kind: str  # "full" (pipeline) or "retrain"
    model: Any  # the Keras model, saved into the release
    embed: Callable[[np.ndarray], np.ndarray]  # its compiled Embedder, which embedded `items`
    items: CatalogItems
    embeddings: np.ndarray
    config: dict[str, Any]  # tasks.train.TrainConfig.as_dict()
    dataset: DatasetDescription  # what `items` are (shape, classes)
    trained_through_item_id: int
    history: dict[str, Any]
    warm_start_from: str | None = None
    details: dict[str, Any] = field(default_factory=dict)  # counts the run adds to the manifest
    segment: dict[str, Any] | None = None  # the segment of `items` the fan-out's shards wrote (tasks/shards.py)
    query_embeddings: np.ndarray | None = None  # the test queries embedded by the flow (tasks/shards.py)

    def manifest(self, release_id: str, parent: str | None) -> ReleaseManifest:
        model = ModelRecord(self.config, release_id, self.trained_through_item_id, self.warm_start_from)
        return ReleaseManifest(self.kind, parent, len(self.items), model.as_dict(), self.dataset,
                               {"history": self.history, **self.details})


@dataclass(frozen=True)
class Outcome:
    release_id: str | None  # None when the gate refused the candidate
    metrics: dict[str, Any]
    decision: GateDecision


def release_candidate(session: WriterSession, writer: ReleaseWriter, candidate: Candidate,
                      queries: tuple[np.ndarray, np.ndarray], report: tuple[str, str], tolerance: float,
                      force: bool = False) -> Outcome:
    """Evaluate `candidate` on the test `queries`, gate it against the live release, record the report
    (artifact key, title), then publish it, or discard it and forget its catalogue rows. The evaluation
    searches every item but held-out queries (CatalogItems.evaluation_index); the release indexes all."""
    searched = candidate.items.evaluation_index
    metrics = evaluate_release(candidate.embed, *queries, candidate.embeddings[searched],
                               candidate.items.subset(searched), candidate.dataset, candidate.query_embeddings)
    live = session.live
    decision = gate(metrics, live.metrics if live else None, tolerance, force)
    report_artifact(report[0], markdown_report(metrics, report[1], decision))
    if not decision.publish:
        writer.discard()
        if candidate.segment:
            delete_segment(session.home, candidate.segment["name"])
        session.catalog.forget_unpublished(set(complete_release_ids(session.home)), retired_through(session.home))
        step_logger().warning("not published: %s", decision.reason)
        return Outcome(None, metrics, decision)
    manifest = candidate.manifest(writer.release_id, live.release_id if live else None)
    release_id = publish_release(session.home, writer, manifest, metrics, candidate.items, candidate.embeddings,
                                 model=candidate.model, segment=candidate.segment)
    if live and live.dataset.side != candidate.dataset.side:  # the catalogue keeps what the live release searched
        session.catalog.store_inputs(candidate.items)
    return Outcome(release_id, metrics, decision)


@task(name="evaluate-and-publish", cache_policy=NO_CACHE)
def release_candidate_task(session: WriterSession, writer: ReleaseWriter, candidate: Candidate,
                           queries: tuple[np.ndarray, np.ndarray], report: tuple[str, str], tolerance: float,
                           force: bool = False) -> Outcome:
    return release_candidate(session, writer, candidate, queries, report, tolerance, force)


def drop_items(home: DataHome, scan: DropScan, writer: ReleaseWriter) -> CatalogItems:
    """The scan's accepted files as the catalogue items of `writer`'s release (their paths in processed/)."""
    return scan.catalogue_items(home.relative(home.processed / writer.release_id))


def publish_drops(session: WriterSession, scan: DropScan, writer: ReleaseWriter, items: CatalogItems,
                  embedded: Embedded) -> str:
    """Catalogue the scan's accepted files (`drop_items`, embedded with the live model by the flow:
    tasks/shards.py), publish them as `writer`'s release built on the live one (its segments and model
    hard-linked, its evaluation carried over: `metrics_carried_from`), then move the files to
    processed/<release>/. Returns the release id."""
    home, live = session.home, session.live
    session.catalog.add(items, writer.release_id)  # before the release: recover() drops them if it never comes
    manifest = ReleaseManifest("reindex", live.release_id, len(live.items) + len(items), live.manifest["model"],
                               scan.dataset, {"added_items": len(items)})
    release_id = publish_release(home, writer, manifest, carried_metrics(live), new_items=items, new_embeddings=embedded.embeddings,
                                 base=live, segment=embedded.segment)
    recorded = read_home_dataset(home)
    if recorded and scan.dataset.num_classes > live.dataset.num_classes:  # new classes: the next run keeps their index
        write_home_dataset(home, recorded.with_classes(scan.dataset.class_names))
    move_processed(home.incoming, home.processed, release_id, scan.accepted)
    return release_id


@task(name="publish-drops", cache_policy=NO_CACHE)
def publish_drops_task(session: WriterSession, scan: DropScan, writer: ReleaseWriter, items: CatalogItems,
                       embedded: Embedded) -> str:
    return publish_drops(session, scan, writer, items, embedded)
