"""A catalogue's lifecycle in the store: releases without removed items, rollbacks, and clean-up.

Segments are immutable and shared, and an HNSW graph is labelled by row position, so a release that
leaves items out cannot mask rows of a segment it shares: `link_without` refers to every segment
that holds none of the left-out items as it is and writes each one that does anew without them (its
graph rebuilt when it is large, small drop-folder segments stay exact). Only the affected segments
cost anything (benchmarks/lifecycle.py measures a removal from a 60,000-item catalogue).

Clean-up (`plan_cleanup`, `clean_up`) keeps the newest N complete releases, the live one, every one
that was live in the last RECENTLY_LIVE_MINUTES, and the release whose model a kept one serves (its
manifest names the model's files, so it stays whole); it deletes the other releases, the segments no
kept release refers to, and the catalogue's and marks' Lance versions older than the oldest release kept
for itself (no release reads them). When a release was live is derived from the manifests: every publish moves LATEST to the
release it publishes (a rollback too: it is a new release), so release i was live from its
`published_at` until the next release's. Nothing extra to record, keep consistent or recover after
a crash; a LATEST moved by hand is the one case it misreads, and the live release is kept whatever
the manifests say.
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from typing import Any

import numpy as np

from storage.catalog import Catalog, CatalogItems
from storage.home import CATALOG, DataHome
from storage.removals import REMOVALS
from storage.embedder import EMBEDDER_FILE
from storage.releases import (MANIFEST, MODEL_FILE, RELEASE_ID_FORMAT, RELEASES, RETIRED_THROUGH, SEGMENT_NAME_PATTERN, Release,
                              ReleaseWriter, complete_release_ids, latest_release_id, model_key, read_manifest,
                              release_key, retired_through)
from storage.search_index import SEGMENTS, open_segment, read_segment, segment_key

# readers never write, so "in use" means "recently live": a page or service follows LATEST every
# second or so and a query takes milliseconds, so a release not live for 15 minutes has no reader
# left, with a wide margin for a slow S3 open or a long batch of `ui.search` queries
RECENTLY_LIVE_MINUTES = 15.0


def segment_item_ids(store, record: dict[str, Any]) -> np.ndarray:
    """The item ids of a segment (its one small column, read at the version its record names)."""
    dataset = open_segment(store, record, whole=False)
    return dataset.to_table(columns=["item_id"]).column("item_id").to_numpy().astype(np.int64)


def link_without(writer: ReleaseWriter, release: Release, left_out: np.ndarray) -> int:
    """Make `writer`'s release search `release`'s segments less the items `left_out`: untouched segments
    referred to, the others written anew without those rows. Returns how many rows were left out."""
    store, shape = writer.home.store, release.dataset.pixel_shape
    untouched, dropped = [], 0
    for record in release.manifest["segments"]:
        ids = segment_item_ids(store, record)
        gone = np.isin(ids, left_out)
        if not gone.any():
            untouched.append(record["name"])
            continue
        items, embeddings = read_segment(store, record, shape)
        kept = ~np.isin(items.item_ids, left_out)
        dropped += int((~kept).sum())
        if kept.any():
            writer.add_segment(items.subset(kept), embeddings[kept])
    writer.link_segments_from(release, untouched)
    return dropped


def adopt_model(writer: ReleaseWriter, release: Release) -> None:
    """Make `writer`'s release serve its own copy of `release`'s model files (2.3 MB for Fashion-MNIST)
    instead of referring to their owner: a removal rewrites the owner's large segment, and only once no
    kept release serves the owner's model can a clean-up delete the owner and that segment (87 MB)."""
    for name in (MODEL_FILE, EMBEDDER_FILE):
        if model_key(release.manifest, name) in release.manifest["files"]:
            shutil.copyfile(release.local_file(name), writer.path / name)


def carried_metrics(release: Release) -> dict[str, Any]:
    """`release`'s evaluation, marked as carried over (as a re-index does: same model, the score of a
    few items more or less is not worth re-evaluating the whole test set)."""
    return {**release.metrics, "metrics_carried_from": release.metrics.get("metrics_carried_from", release.release_id)}


def items_not_in(catalog: Catalog, release: Release) -> CatalogItems:
    """The catalogue's items (removed ones never load) that `release` does not hold."""
    items = catalog.load()
    return items.subset(~np.isin(items.item_ids, release.items.item_ids))


# ----------------------------------------------------------------------------------------- clean-up


@dataclass(frozen=True)
class CleanupPlan:
    keep: list[str]  # complete releases kept, oldest first
    delete: list[str]  # complete releases to delete, oldest first
    why_kept: dict[str, str]  # release -> "newest N" | "live" | "recently live" | "serves model"
    segments: list[str]  # segment names (store entries without suffix) no kept release refers to
    versions_since: datetime | None = None  # Lance versions of the catalogue and marks older than this go
    manifests: dict[str, dict[str, Any]] = field(default_factory=dict, repr=False)


def published_at(manifest: dict[str, Any]) -> datetime:
    """When a release was published; for a manifest that does not say, when its writer started (its id)."""
    if "published_at" in manifest:
        return datetime.fromisoformat(manifest["published_at"])
    return datetime.strptime(manifest["release_id"], RELEASE_ID_FORMAT).replace(tzinfo=timezone.utc)


def live_until(manifests: dict[str, dict[str, Any]], now: datetime) -> dict[str, datetime]:
    """When each release stopped being live: the next release's publish time (now for the newest)."""
    ordered = sorted(manifests)
    return {release_id: published_at(manifests[ordered[i + 1]]) if i + 1 < len(ordered) else now
            for i, release_id in enumerate(ordered)}


def plan_cleanup(home: DataHome, keep: int, recently_live_minutes: float = RECENTLY_LIVE_MINUTES,
                 now: datetime | None = None) -> CleanupPlan:
    """What `clean_up` deletes (see the module docstring); reads only, so it is safe to show first."""
    now = now or datetime.now(timezone.utc)
    manifests = {release_id: read_manifest(home, release_id) for release_id in complete_release_ids(home)}
    live = latest_release_id(home)
    why: dict[str, str] = {release_id: "newest N" for release_id in sorted(manifests)[-keep:]} if keep > 0 else {}
    recent_since = now - timedelta(minutes=recently_live_minutes)
    for release_id, until in live_until(manifests, now).items():
        if until > recent_since and release_id not in why:
            why[release_id] = "recently live"
    if live in manifests:
        why[live] = "live"
    for release_id in list(why):
        owner = manifests[release_id].get("model_release", release_id)
        if owner in manifests and owner not in why:
            why[owner] = "serves model"
    kept = sorted(why)
    used = {record["name"] for release_id in kept for record in manifests[release_id]["segments"]}
    segments = sorted({entry.removesuffix(".lance").removesuffix(".hnsw") for entry in home.store.list(SEGMENTS)
                       if SEGMENT_NAME_PATTERN.match(entry.removesuffix(".lance").removesuffix(".hnsw"))} - used)
    # the catalogue's versions are read by no release: keep those of the newest N, live and recent ones
    versions_since = min((published_at(manifests[r]) for r in kept if why[r] != "serves model"), default=None)
    return CleanupPlan(kept, sorted(set(manifests) - set(kept)), why, segments, versions_since, manifests)


def clean_up(home: DataHome, plan: CleanupPlan, catalog: Catalog) -> None:
    """Delete what `plan` says, under the writer lock: first RETIRED_THROUGH (so recovery never takes a
    deleted release's rows or shared segments for leftovers), then each release's manifest (a folder
    cut short is then one that recovery deletes), its folder, the unused segments, and the Lance
    versions of the catalogue and the removal marks older than the oldest release kept for itself
    (not only for its model)."""
    if plan.delete and plan.delete[-1] > retired_through(home):
        home.store.write_bytes(RETIRED_THROUGH, (plan.delete[-1] + "\n").encode())
    for release_id in plan.delete:
        home.store.delete(release_key(release_id, MANIFEST))
        home.store.delete(release_key(release_id))
    for name in plan.segments:
        home.store.delete(f"{SEGMENTS}/{name}.hnsw")
        home.store.delete(segment_key(name))
    if plan.versions_since is not None:
        # segments are written once (one Lance version each) and deleted whole: nothing to clean in them
        older_than = max(timedelta(0), datetime.now(timezone.utc) - plan.versions_since)
        catalog.cleanup_old_versions(older_than)


def store_bytes(home: DataHome) -> int:
    """Bytes of what clean-up frees: releases, segments, the catalogue and the removal marks."""
    return sum(home.store.used_bytes(key) for key in (RELEASES, SEGMENTS, CATALOG, REMOVALS))
