"""publish: write a release (model, segments, metrics, manifest) and move LATEST to it, atomically;
and the one tail of every training flow: evaluate a candidate, gate it, report, publish or discard."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

import numpy as np
from prefect import task
from prefect.cache_policies import NO_CACHE

from storage.catalog import CatalogItems
from storage.home import DataHome
from storage.releases import METRICS_FILE, Release, ReleaseManifest, ReleaseWriter, complete_release_ids
from storage.session import WriterSession
from tasks.evaluate import GateDecision, evaluate_release, gate, markdown_report, report_artifact
from tasks.logs import step_logger


def publish_release(home: DataHome, writer: ReleaseWriter, manifest: ReleaseManifest, metrics: dict[str, Any],
                    new_items: CatalogItems | None = None, new_embeddings: np.ndarray | None = None,
                    model=None, base: Release | None = None) -> str:
    """Publish `writer`'s release: `base`'s segments and model (hard-linked) plus what is new.

    A retrain passes the new model and every item; a re-index passes `base` and only the new items.
    """
    try:
        if base is not None:
            writer.extend(base, new_items, new_embeddings)
        elif new_items is not None and len(new_items):
            writer.add_segment(new_items, new_embeddings)
        if model is not None:
            writer.save_model(model)
        else:
            writer.link_model_from(base)
        writer.write_json(METRICS_FILE, metrics)
        release_id = writer.publish(manifest)
    except BaseException:
        writer.discard()
        raise
    step_logger().info("publish: release %s is live (%s)", release_id, home.releases / release_id)
    return release_id


@task(name="publish", cache_policy=NO_CACHE)
def publish_task(home: DataHome, writer: ReleaseWriter, manifest: ReleaseManifest, metrics: dict[str, Any],
                 new_items: CatalogItems | None = None, new_embeddings=None, model=None,
                 base: Release | None = None) -> str:
    return publish_release(home, writer, manifest, metrics, new_items, new_embeddings, model, base)


@dataclass(frozen=True)
class Candidate:
    """A newly trained network and the whole catalogue embedded with it, offered to the gate."""

    model: Any  # the Keras model, saved into the release
    embed: Callable[[np.ndarray], np.ndarray]  # its compiled Embedder, which embedded `items`
    items: CatalogItems
    embeddings: np.ndarray


@dataclass(frozen=True)
class Outcome:
    release_id: str | None  # None when the gate refused the candidate
    metrics: dict[str, Any]
    decision: GateDecision


def release_candidate(session: WriterSession, writer: ReleaseWriter, candidate: Candidate, manifest: ReleaseManifest,
                      queries: tuple[np.ndarray, np.ndarray], report: tuple[str, str], tolerance: float,
                      force: bool = False) -> Outcome:
    """Evaluate `candidate` on the test `queries`, gate it against the live release, record the report
    (artifact key, title), then publish it, or discard it and forget its catalogue rows."""
    metrics = evaluate_release(candidate.embed, *queries, candidate.embeddings, candidate.items)
    decision = gate(metrics, session.live.metrics if session.live else None, tolerance, force)
    report_artifact(report[0], markdown_report(metrics, report[1], decision))
    if not decision.publish:
        writer.discard()
        session.catalog.forget_unpublished(set(complete_release_ids(session.home)))
        step_logger().warning("not published: %s", decision.reason)
        return Outcome(None, metrics, decision)
    release_id = publish_release(session.home, writer, manifest, metrics, candidate.items, candidate.embeddings,
                                 model=candidate.model)
    return Outcome(release_id, metrics, decision)


@task(name="evaluate-and-publish", cache_policy=NO_CACHE)
def release_candidate_task(session: WriterSession, writer: ReleaseWriter, candidate: Candidate,
                           manifest: ReleaseManifest, queries: tuple[np.ndarray, np.ndarray], report: tuple[str, str],
                           tolerance: float, force: bool = False) -> Outcome:
    return release_candidate(session, writer, candidate, manifest, queries, report, tolerance, force)
