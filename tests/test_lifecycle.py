"""Remove, roll back, clean up (flows/remove.py, flows/rollback.py, flows/cleanup.py) on a copy of the
tiny published release, on a local and an S3 home, while a reader follows LATEST and searches."""

from __future__ import annotations

import subprocess
import sys
import threading
from contextlib import contextmanager

import numpy as np
import pytest

from flows.cleanup import cleanup
from flows.cli import build_parser
from flows.reindex import reindex
from flows.remove import remove
from flows.rollback import rollback
from storage.catalog import Catalog
from storage.dataset import FASHION_MNIST
from storage.errors import UserError
from storage.home import LATEST
from storage.images import encode_png
from storage.lifecycle import RECENTLY_LIVE_MINUTES, store_bytes
from storage.location import open_lance
from storage.releases import complete_release_ids, latest_release_id, load_release, read_manifest, release_key
from storage.removals import Removal
from storage.search_index import SEGMENTS
from storage.session import writer_session
from tasks.sample import retrain_set
from tests.conftest import REPO
from tests.test_reindex import drop_labelled
from ui.views import gallery_items


@contextmanager
def reader_loop(home):
    """A reader that, until the block ends, opens whatever LATEST names and searches it; the block
    then checks it searched at least once and never failed."""
    stop, errors, searches = threading.Event(), [], [0]

    def read() -> None:
        while not stop.is_set():
            try:
                release = load_release(home)
                found = release.search(release.items.images[:2], k=3)
                assert len(found) == 2
                searches[0] += 1
            except Exception as error:  # noqa: BLE001 - every failure is the test's finding
                errors.append(repr(error))

    thread = threading.Thread(target=read, daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join(timeout=120)
    assert errors == [] and searches[0] > 0


def reindexed(home, label: int, count: int, seed: int) -> tuple[str, list[int]]:
    """Drop `count` labelled images and re-index: (the new release, the new items' ids)."""
    drop_labelled(home.incoming, str(label), label, count, seed)
    before = set(load_release(home).items.item_ids.tolist())
    result = reindex(data_home=home.location, settle_seconds=0)
    assert result["published"], result
    return result["release_id"], sorted(set(load_release(home).items.item_ids.tolist()) - before)


def catalogued(home) -> np.ndarray:
    """Ids of the items the catalogue loads for training and indexing (removed ones never load)."""
    return Catalog(home.catalog, FASHION_MNIST).load().item_ids


def test_remove_takes_items_out_at_once_and_undo_brings_them_back(any_published_home):
    home = any_published_home
    live = load_release(home)
    gone = live.items.item_ids[:3].tolist()
    with reader_loop(home):
        result = remove(item_ids=gone[:2], path=[str(live.items.paths[2])], reason="sold out", data_home=home.location)
    assert result["published"] and result["items"] == gone
    new = load_release(home)
    assert new.release_id == result["release_id"] == latest_release_id(home) != live.release_id
    assert not np.isin(gone, new.items.item_ids).any() and len(new.items) == len(live.items) - 3
    assert not np.isin(new.search(live.items.images[:3], k=10).item_ids, gone).any()  # not even their own pictures
    with pytest.raises(KeyError):
        new.similar(gone[0])
    assert new.metrics["metrics_carried_from"] == live.release_id
    assert new.metrics["precision@1"] == live.metrics["precision@1"]
    assert new.manifest["kind"] == "remove" and new.manifest["removed_items"] == gone
    assert new.manifest["model_release"] == new.release_id  # its own copy: the old owner can be cleaned up
    assert np.array_equal(new.embed(live.items.images[3:5]), live.embed(live.items.images[3:5]))
    marks = Catalog(home.catalog).removals.load()
    assert sorted(marks) == gone and marks[gone[0]].reason == "sold out"
    assert set(gone) <= set(Catalog(home.catalog).item_ids().tolist())  # the rows stay
    assert not np.isin(gone, catalogued(home)).any()

    again = remove(item_ids=gone[:1], data_home=home.location)
    assert not again["published"] and latest_release_id(home) == new.release_id

    with reader_loop(home):
        back = remove(item_ids=[gone[0]], undo=True, data_home=home.location)
    restored = load_release(home)
    assert back["published"] and restored.release_id == back["release_id"]
    assert gone[0] in restored.items.item_ids and not np.isin(gone[1:], restored.items.item_ids).any()
    row = restored.row_of(gone[0])
    assert np.array_equal(restored.items.images[row], live.items.images[live.row_of(gone[0])])
    assert restored.search(restored.items.images[row][None], k=1).item_ids[0, 0] == gone[0]
    assert sorted(Catalog(home.catalog).removals.load()) == gone[1:]


def test_unknown_ids_change_nothing(published_home):
    home = published_home
    releases = complete_release_ids(home)
    with pytest.raises(UserError, match="no catalogue item matches item 999999, path nowhere.png"):
        remove(item_ids=[999999, 0], path=["nowhere.png"], data_home=str(home.root))
    with pytest.raises(UserError, match="not removed"):
        remove(item_ids=[0], undo=True, data_home=str(home.root))
    assert complete_release_ids(home) == releases and Catalog(home.catalog).removals.load() == {}
    out = subprocess.run([sys.executable, "-m", "flows.remove", "999999", "--data-home", str(home.root)], cwd=REPO,
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 1 and out.stderr.strip().splitlines()[-1].startswith(
        "error: no catalogue item matches item 999999")
    assert "Traceback" not in out.stderr and complete_release_ids(home) == releases


def test_a_removal_cut_short_after_its_marks_is_finished_by_running_it_again(published_home):
    home = published_home
    live = load_release(home)
    item_id, digest = 7, Catalog(home.catalog).identities()[7][1]
    Catalog(home.catalog).removals.mark([Removal(item_id, digest, "2026-01-01T00:00:00+00:00", "sold out")])
    assert item_id in load_release(home).items.item_ids  # marked, but its release never came
    result = remove(item_ids=[item_id], reason="again", data_home=str(home.root))
    assert result["published"] and item_id not in load_release(home).items.item_ids
    assert len(load_release(home).items) == len(live.items) - 1
    assert Catalog(home.catalog).removals.load()[item_id].reason == "sold out"  # the first mark stays


def test_command_lines_take_positional_arguments_and_flags():
    parsed = build_parser(remove, ("item_ids",), ("undo",)).parse_args(
        ["5", "7", "--path", "a", "b", "--image", "x.png", "--reason", "sold out"])
    assert (parsed.item_ids, parsed.path, parsed.image, parsed.reason, parsed.undo) == (
        [5, 7], ["a", "b"], ["x.png"], "sold out", False)
    assert build_parser(remove, ("item_ids",), ("undo",)).parse_args(["--undo", "5"]).item_ids == [5]
    parser = build_parser(rollback, ("release_id",), ("drop_newer",))
    assert parser.parse_args([]).release_id == "" and parser.parse_args(["R", "--drop-newer"]).drop_newer


def test_a_removed_item_stays_removed_across_redrop_rollback_and_retrain(published_home):
    home = published_home
    first = load_release(home)
    _, drops = reindexed(home, 3, 3, seed=301)
    dropped = load_release(home)
    picture = home.root / "taken-down.png"
    picture.write_bytes(encode_png(dropped.items.images[dropped.row_of(drops[0])]))
    remove(image=[str(picture)], reason="photo taken down", data_home=str(home.root))
    assert drops[0] not in load_release(home).items.item_ids
    gallery = {item.item_id for item in gallery_items(home, load_release(home))}
    assert drops[0] not in gallery and drops[1] in gallery

    (home.incoming / "dress").mkdir(parents=True, exist_ok=True)
    (home.incoming / "dress" / "again.png").write_bytes(picture.read_bytes())
    result = reindex(data_home=str(home.root), settle_seconds=0)
    assert not result["published"] and result["rejected"] == 1
    assert result["rejections"][0]["reason"].startswith(f"removed item {drops[0]} (on ")
    assert "photo taken down" in result["rejections"][0]["reason"]
    reasons = list(home.rejected.rglob("again.png.reason.txt"))
    assert len(reasons) == 1 and f"removed item {drops[0]}" in reasons[0].read_text()

    rolled = rollback(release_id=first.release_id, data_home=str(home.root))
    after = load_release(home)
    assert rolled["newer_items"] == 2 and drops[0] not in after.items.item_ids
    assert set(drops[1:]) <= set(after.items.item_ids.tolist())

    live = load_release(home)  # what a retrain trains on: new labelled items + a replay of the others
    new = Catalog(home.catalog, FASHION_MNIST).load_labelled_after(live.model_record.trained_through_item_id)
    items = Catalog(home.catalog, FASHION_MNIST).load()
    images, _, _ = retrain_set(new, items, live.model_record.trained_through_item_id, replay_size=10_000, seed=0)
    assert drops[0] not in new.item_ids and drops[0] not in items.item_ids
    pixels = picture_pixels(picture)
    assert not any(np.array_equal(image, pixels) for image in images)

    remove(item_ids=[drops[0]], undo=True, data_home=str(home.root))
    assert drops[0] in load_release(home).items.item_ids and drops[0] in catalogued(home)


def picture_pixels(path) -> np.ndarray:
    from storage.images import normalise_file

    return normalise_file(path, FASHION_MNIST).pixels


def test_rollback_serves_the_target_and_keeps_or_drops_newer_items(any_published_home):
    home = any_published_home
    first = load_release(home)
    second, drops = reindexed(home, 5, 3, seed=401)
    remove(item_ids=[int(first.items.item_ids[0])], data_home=home.location)
    removed_release = latest_release_id(home)
    with reader_loop(home):
        result = rollback(release_id=first.release_id, data_home=home.location)
    live = load_release(home)
    assert live.release_id == result["release_id"] and result["rollback_to"] == first.release_id
    assert live.manifest["kind"] == "rollback" and live.manifest["rollback_to"] == first.release_id
    assert live.manifest["rolled_back"] == removed_release and live.manifest["parent"] == removed_release
    assert live.manifest["model_release"] == first.manifest["model_release"]
    assert result["newer_items"] == 3 and "re-embedded with its model and kept" in result["summary"]
    expected = sorted(set(first.items.item_ids.tolist()) - {int(first.items.item_ids[0])} | set(drops))
    assert sorted(live.items.item_ids.tolist()) == expected
    assert live.metrics["metrics_carried_from"] == first.release_id

    # the rollback's LATEST move lost: recovery finishes it, never rolls back past it
    home.store.write_bytes(LATEST, (removed_release + "\n").encode())
    with writer_session(home, "test") as session:
        assert session.recovery.rolled_forward == live.release_id
    assert latest_release_id(home) == live.release_id

    with reader_loop(home):
        dropped = rollback(release_id=first.release_id, drop_newer=True, data_home=home.location)
    assert sorted(load_release(home).items.item_ids.tolist()) == sorted(set(expected) - set(drops))
    assert "left out and marked removed" in dropped["summary"]
    assert set(drops) <= set(Catalog(home.catalog).removals.load())
    with pytest.raises(UserError, match="cannot roll back to 20000101T000000000000Z"):
        rollback(release_id="20000101T000000000000Z", data_home=home.location)


def test_cleanup_keeps_live_recent_and_model_releases_and_frees_the_rest(any_published_home):
    home = any_published_home
    first = load_release(home)
    second, drops_a = reindexed(home, 1, 2, seed=501)
    third, drops_b = reindexed(home, 2, 2, seed=502)
    remove(item_ids=[drops_b[0]], data_home=home.location)  # the third release's segment is written anew
    live = latest_release_id(home)
    segments = [record["name"] for record in read_manifest(home, third)["segments"]]
    written_by_third = [name for name in segments if name.startswith(third)]
    rows = len(Catalog(home.catalog).item_ids())

    recent = cleanup(keep=1, data_home=home.location)  # every release was live a moment ago
    assert recent["deleted_releases"] == [] and RECENTLY_LIVE_MINUTES > 0
    assert len(complete_release_ids(home)) == 4

    before, versions = store_bytes(home), len(open_lance(str(home.catalog)).versions())
    with reader_loop(home):
        result = cleanup(keep=1, recently_live_minutes=0, data_home=home.location)
    assert len(open_lance(str(home.catalog)).versions()) < versions  # older than the live release: gone
    assert result["deleted_releases"] == [first.release_id, second, third]  # the removal serves its own model
    assert result["kept"] == {live: "live"}
    assert complete_release_ids(home) == [live]
    assert not any(home.store.exists(release_key(r)) for r in (first.release_id, second, third))
    assert written_by_third and set(result["deleted_segments"]) == set(written_by_third)
    assert not any(entry.startswith(third) for entry in home.store.list(SEGMENTS))
    assert result["freed_bytes"] > 0 and store_bytes(home) < before

    # the next writer takes nothing the deleted releases wrote and the live one uses for a leftover
    with writer_session(home, "test") as session:
        assert not session.recovery
    assert len(Catalog(home.catalog).item_ids()) == rows
    served = load_release(home)
    assert served.release_id == live and set(drops_a) <= set(served.items.item_ids.tolist())
    for writer in (first.release_id, second):  # segments of deleted releases the live one still searches
        assert any(entry.startswith(writer) for entry in home.store.list(SEGMENTS))
    assert read_manifest(home, live)["next_item_id"] == max(drops_b) + 1
    with pytest.raises(UserError, match="--keep 0"):
        cleanup(keep=0, data_home=home.location)
