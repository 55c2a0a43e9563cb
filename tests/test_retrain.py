"""Incremental retrain on a copy of the tiny published release: publishes when labelled items arrived
and the candidate holds up, refuses a regressing candidate, and does nothing without new labels."""

from __future__ import annotations

import numpy as np

import tasks.train
from flows.reindex import reindex
from flows.retrain import retrain
from storage.catalog import Catalog
from storage.dataset import FASHION_MNIST
from storage.releases import complete_release_ids, latest_release_id, load_release
from tests.test_reindex import drop_labelled

SMALL_BUDGET = dict(epochs=1, steps_per_epoch=5, examples_per_class=4, replay_size=100)


def add_labelled_drops(home) -> list[int]:
    """Drop and re-index 12 labelled images; returns their item ids."""
    for label, folder in ((0, "t-shirt-top"), (4, "coat"), (8, "bag")):
        drop_labelled(home.incoming, folder, label, 4, seed=200 + label)
    result = reindex(data_home=str(home.root), settle_seconds=0)
    assert result["published"] and result["labelled"] == 12, result
    items = load_release(home).items
    return items.item_ids[items.sources == "drop"].tolist()


def test_retrain_publishes_a_warm_started_model_and_advances_trained_through(published_home):
    home = published_home
    new_ids = add_labelled_drops(home)
    live = load_release(home)
    assert live.manifest["model"]["trained_through_item_id"] < min(new_ids)

    result = retrain(data_home=str(home.root), **SMALL_BUDGET)

    assert result["published"], result
    assert result["new_labelled_items"] == 12 and result["replayed_items"] == 100
    release = load_release(home)
    assert release.release_id == result["release_id"] == latest_release_id(home) != live.release_id
    manifest = release.manifest
    assert manifest["kind"] == "retrain" and manifest["parent"] == live.release_id
    assert manifest["model"]["trained_in"] == release.release_id
    assert manifest["model"]["trained_through_item_id"] == max(new_ids)
    assert manifest["model"]["architecture"] == live.manifest["model"]["architecture"]
    assert len(release.items) == Catalog(home.catalog, FASHION_MNIST).count() == manifest["num_items"]
    assert not np.allclose(release.embeddings, live.embeddings)  # the whole catalogue was re-embedded

    again = retrain(data_home=str(home.root), **SMALL_BUDGET)
    assert not again["published"] and "no new labelled items" in again["reason"]
    assert latest_release_id(home) == release.release_id


def test_retrain_refuses_a_regressing_candidate(published_home, monkeypatch):
    home = published_home
    add_labelled_drops(home)
    live_id = latest_release_id(home)
    releases_before = complete_release_ids(home)

    def broken_training(sampler, config, num_classes, initial_model=None):
        """A 'trained' model whose weights are all zero: every item embeds to the same point."""
        from storage.runtime import load_tensorflow

        model = load_tensorflow().keras.models.clone_model(initial_model)
        model.set_weights([np.zeros_like(w) for w in initial_model.get_weights()])
        return model, {"loss": [], "train_seconds": 0.0}

    monkeypatch.setattr(tasks.train, "train_model", broken_training)
    result = retrain(data_home=str(home.root), **SMALL_BUDGET)

    assert not result["published"] and not result["gate"]["publish"]
    assert "regresses" in result["reason"]
    assert result["metrics"]["precision@1"] < load_release(home).metrics["precision@1"]
    assert latest_release_id(home) == live_id == result["release_id"]
    assert complete_release_ids(home) == releases_before
    assert not any(home.tmp.iterdir())


def test_retrain_without_new_labelled_items_does_nothing(published_home):
    live_id = latest_release_id(published_home)
    result = retrain(data_home=str(published_home.root), **SMALL_BUDGET)
    assert result == {"published": False, "release_id": live_id, "reason": result["reason"]}
    assert "no new labelled items" in result["reason"]
    assert complete_release_ids(published_home) == [live_id]
