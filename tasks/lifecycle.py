"""lifecycle: the steps of removing items, rolling back and cleaning up (flows/remove.py,
flows/rollback.py, flows/cleanup.py), each inside the flow's writer session.

A removal writes its marks first (storage/removals.py), then publishes the live release less every
marked item it still holds, with a copy of the live model (storage.lifecycle.adopt_model says why)
and its evaluation carried over (as a re-index does); a removal cut short (marks written, release not) is finished by running it again. An undo
lifts the marks, embeds the items with the live model and publishes them back. A rollback is a new
release on top of the live one (kind "rollback", `rollback_to`, `rolled_back`): the target's model
and segments less the marked items, plus the items catalogued since, embedded with the target's
model, or left out and marked. Being the newest release, built on the live one, recovery's roll-forward
rule (storage/releases.py `recover`) can only finish it, never roll past it.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from prefect import task
from prefect.cache_policies import NO_CACHE

from storage.errors import UserError
from storage.images import ImageRejected, normalise_file
from storage.lifecycle import (adopt_model, carried_metrics, clean_up, items_not_in, link_without, plan_cleanup, store_bytes)
from storage.catalog import Catalog
from storage.releases import (METRICS_FILE, Release, ReleaseError, ReleaseManifest, ReleaseWriter,
                              complete_release_ids, load_release, read_manifest, release_key)
from storage.removals import Removal, now_text
from storage.session import WriterSession
from tasks.embed import embed_items
from tasks.logs import step_logger


class UnknownItemError(UserError, LookupError):
    """An id, path or image names no catalogue item; nothing was changed."""


class EmptyReleaseError(UserError, ValueError):
    """A removal that would leave the live release without items; nothing was changed."""


class NotRemovedError(UserError, ValueError):
    """`--undo` of an item that carries no removal mark; nothing was changed."""


class RollbackTargetError(UserError, ValueError):
    """The release to roll back to cannot be used; nothing was changed."""


class CleanupError(UserError, ValueError):
    """A clean-up asked for something it must not do; nothing was deleted."""


@dataclass(frozen=True)
class Published:
    release_id: str
    left_out: int  # items of the base release the new one does not hold
    added: int  # items it holds that the base did not


def publish_built(session: WriterSession, writer: ReleaseWriter, build, manifest, metrics: dict[str, Any]) -> str:
    """Run `build(writer)` (segments and model), then publish `manifest(writer)` with `metrics`; on any
    failure discard what the writer wrote (the live release stays live)."""
    try:
        build(writer)
        writer.write_json(METRICS_FILE, metrics)
        release_id = writer.publish(manifest(writer))
    except BaseException:
        writer.discard()
        raise
    step_logger().info("publish: release %s is live (%s)", release_id, session.home.store.url(release_key(release_id)))
    return release_id


# ---------------------------------------------------------------------------------------- removal


def resolve_items(session: WriterSession, item_ids: list[int], paths: list[str], images: list[str]) -> list[int]:
    """The catalogue ids named by ids, catalogue paths and image files (by content, as the catalogue
    hashes it); UnknownItemError naming every one that names nothing."""
    known = session.catalog.identities()
    by_path = {path: item_id for item_id, (path, _) in known.items()}
    found, unknown = set(), []
    for item_id in item_ids:
        (found.add(int(item_id)) if int(item_id) in known else unknown.append(f"item {item_id}"))
    for path in paths:
        (found.add(by_path[path]) if path in by_path else unknown.append(f"path {path}"))
    for image in images:
        try:
            digest = normalise_file(Path(image), session.dataset, with_display=True).content_hash
        except ImageRejected as error:
            raise UnknownItemError(f"--image {image}: {error}; nothing was removed") from None
        matches = session.catalog.find_hashes([digest])
        (found.add(matches[digest]) if digest in matches else unknown.append(f"image {image}"))
    if unknown:
        raise UnknownItemError(f"no catalogue item matches {', '.join(unknown)}; nothing was removed or published "
                               "(ids and paths are in `python -m ui.search` results and the page)")
    if not found:
        raise UnknownItemError("name the items to remove: ITEM_ID..., --path P... or --image FILE...")
    return sorted(found)


def remove_items(session: WriterSession, item_ids: list[int], reason: str) -> Published | None:
    """Mark `item_ids` removed and publish the live release without every marked item it holds; None
    when the live release holds none of them (already removed)."""
    live, catalog = session.live, session.catalog
    if np.isin(live.items.item_ids, item_ids).all():
        raise EmptyReleaseError(f"removing {len(item_ids)} item(s) would leave release {live.release_id} empty; a "
                               "release needs at least one item: nothing was removed or published")
    identities = catalog.identities()
    catalog.removals.mark([Removal(item_id, identities[item_id][1], now_text(), reason) for item_id in item_ids])
    marked = catalog.removals.item_ids()
    left_out = marked[np.isin(marked, live.items.item_ids)]
    if not len(left_out):
        return None
    writer = ReleaseWriter(session.home)
    dropped = []

    def build(writer: ReleaseWriter) -> None:
        dropped.append(link_without(writer, live, left_out))
        adopt_model(writer, live)

    def manifest(writer: ReleaseWriter) -> ReleaseManifest:
        return ReleaseManifest("remove", live.release_id, len(live.items) - dropped[0], live.manifest["model"],
                               live.dataset, {"removed_items": left_out.tolist(), "reason": reason})

    release_id = publish_built(session, writer, build, manifest, carried_metrics(live))
    return Published(release_id, dropped[0], 0)


def undo_removals(session: WriterSession, item_ids: list[int]) -> Published:
    """Lift the marks of `item_ids`; publish the live release plus them, embedded with its model."""
    live, catalog = session.live, session.catalog
    marks = catalog.removals.load()
    back = np.isin(item_ids, live.items.item_ids)
    not_removed = [item_id for item_id, served in zip(item_ids, back) if item_id not in marks and served]
    if not_removed:
        raise NotRemovedError(f"item(s) {', '.join(map(str, not_removed))} are not removed (the live release serves "
                              "them); nothing was changed")
    catalog.removals.unmark(item_ids)
    items = items_not_in(catalog, live)  # the unmarked items, and any an earlier undo cut short left out
    embeddings = embed_items(live.embed, items)

    def build(writer: ReleaseWriter) -> None:
        writer.extend(live, items, embeddings)
        writer.link_model_from(live)

    def manifest(writer: ReleaseWriter) -> ReleaseManifest:
        return ReleaseManifest("remove-undo", live.release_id, len(live.items) + len(items), live.manifest["model"],
                               live.dataset, {"restored_items": items.item_ids.tolist()})

    return Published(publish_built(session, ReleaseWriter(session.home), build, manifest, carried_metrics(live)),
                     0, len(items))


@task(name="resolve-items", cache_policy=NO_CACHE)
def resolve_items_task(session: WriterSession, item_ids: list[int], paths: list[str], images: list[str]) -> list[int]:
    return resolve_items(session, item_ids, paths, images)


@task(name="remove-items", cache_policy=NO_CACHE)
def remove_items_task(session: WriterSession, item_ids: list[int], reason: str) -> Published | None:
    return remove_items(session, item_ids, reason)


@task(name="undo-removals", cache_policy=NO_CACHE)
def undo_removals_task(session: WriterSession, item_ids: list[int]) -> Published:
    return undo_removals(session, item_ids)


# ---------------------------------------------------------------------------------------- rollback


def live_manifest(session: WriterSession) -> dict[str, Any] | None:
    """The live release's manifest, also when the release is damaged (a rollback is how to leave it);
    None when even its manifest cannot be used."""
    if session.live is not None:
        return session.live.manifest
    try:
        return read_manifest(session.home, session.live_id)
    except ReleaseError:
        return None


def rollback_target(session: WriterSession, release_id: str) -> Release:
    """The release to roll back to: `release_id`, else the live release's parent; loaded and checked."""
    live_id = session.live_id
    target_id = release_id or (live_manifest(session) or {}).get("parent")
    available = ", ".join(r for r in complete_release_ids(session.home) if r != live_id) or "none"
    if not target_id:
        raise RollbackTargetError(f"the live release {live_id} has no parent: name the release to roll back "
                                  f"to (python -m flows.rollback RELEASE_ID); complete releases: {available}")
    if target_id == live_id:
        raise RollbackTargetError(f"release {target_id} is the live release; nothing to roll back")
    try:
        return load_release(session.home, target_id)
    except ReleaseError as error:
        raise RollbackTargetError(f"cannot roll back to {target_id}: {error}. Complete releases: {available}") from None


def roll_back(session: WriterSession, target: Release, drop_newer: bool) -> tuple[Published, int]:
    """Publish a release serving `target`'s model and segments less the marked items, with the items
    catalogued since embedded by its model (or, `drop_newer`, marked removed). Returns it and how many
    items were catalogued since."""
    home, live_id = session.home, session.live_id
    parent = live_id if live_manifest(session) is not None else None  # a damaged manifest names no parent
    newer = items_not_in(Catalog(home.catalog, target.dataset), target)
    if drop_newer and len(newer):
        identities = session.catalog.identities()
        session.catalog.removals.mark([Removal(item_id, identities[item_id][1], now_text(),
                                               f"left out by rollback to {target.release_id}")
                                       for item_id in newer.item_ids.tolist()])
    kept = newer.subset(np.zeros(len(newer), bool)) if drop_newer else newer
    embeddings = embed_items(target.embed, kept) if len(kept) else None
    dropped = []

    def build(writer: ReleaseWriter) -> None:
        dropped.append(link_without(writer, target, session.catalog.removals.item_ids()))
        if len(kept):
            writer.add_segment(kept, embeddings)
        writer.link_model_from(target)

    def manifest(writer: ReleaseWriter) -> ReleaseManifest:
        return ReleaseManifest("rollback", parent, len(target.items) - dropped[0] + len(kept),
                               target.manifest["model"], target.dataset,
                               {"rollback_to": target.release_id, "rolled_back": live_id,
                                "newer_items": len(newer), "newer_items_kept": not drop_newer,
                                "removed_items_left_out": dropped[0]})

    release_id = publish_built(session, ReleaseWriter(home), build, manifest, carried_metrics(target))
    return Published(release_id, dropped[0], len(kept)), len(newer)


@task(name="rollback-target", cache_policy=NO_CACHE)
def rollback_target_task(session: WriterSession, release_id: str) -> Release:
    return rollback_target(session, release_id)


@task(name="roll-back", cache_policy=NO_CACHE)
def roll_back_task(session: WriterSession, target: Release, drop_newer: bool) -> tuple[Published, int]:
    return roll_back(session, target, drop_newer)


# ---------------------------------------------------------------------------------------- clean-up


def cleanup_store(session: WriterSession, keep: int, recently_live_minutes: float) -> dict[str, Any]:
    """Delete what storage.lifecycle.plan_cleanup says; returns what was kept (and why), deleted, freed."""
    if keep < 1:
        raise CleanupError(f"--keep {keep}: keep at least the newest release (--keep 1 or more); nothing was deleted")
    home = session.home
    before = store_bytes(home)
    plan = plan_cleanup(home, keep, recently_live_minutes)
    clean_up(home, plan, session.catalog)
    after = store_bytes(home)
    step_logger().info("cleanup: deleted %d release(s) and %d segment(s), freed %d bytes",
                       len(plan.delete), len(plan.segments), before - after)
    return {"kept": plan.why_kept, "deleted_releases": plan.delete, "deleted_segments": plan.segments,
            "bytes_before": before, "bytes_after": after, "freed_bytes": before - after}


@task(name="clean-up", cache_policy=NO_CACHE)
def cleanup_task(session: WriterSession, keep: int, recently_live_minutes: float) -> dict[str, Any]:
    return cleanup_store(session, keep, recently_live_minutes)


def markdown_lines(title: str, summary: str, rows: dict[str, Any]) -> str:
    """A run's artifact: a title, one sentence, and a table of what it did."""
    lines = [f"# {title}", "", summary, "", "| | |", "|---|---|"]
    lines += [f"| {key} | {value} |" for key, value in rows.items()]
    return "\n".join(lines)
