"""Incremental retrain: fine-tune the live model on labelled items it has not seen, gated by evaluation.

Labelled catalogue items with ids above the live model's `trained_through_item_id` (labelled drops
that a re-index added) plus a class-balanced replay sample of the items it was trained on train a
warm-started copy of the live model with a small budget and a lower learning rate; the whole
catalogue is re-embedded, the test queries evaluated, and the release published only if it does not
regress against the live release by more than `gate_tolerance`. No new labelled items: nothing
happens. The full pipeline (flows/pipeline.py) stays the periodic retrain from scratch.
Run once without a server: `python -m flows.retrain --help`.
"""

from __future__ import annotations

import dataclasses

import numpy as np
from prefect import flow

from flows.pipeline import headline
from storage.embedder import make_embedder
from storage.home import DataHome
from storage.lock import DEFAULT_LOCK_TIMEOUT_S
from storage.releases import ReleaseWriter
from storage.session import writer_session
from tasks.evaluate import DEFAULT_GATE_TOLERANCE, evaluate_task, gate, markdown_report, report_artifact
from tasks.export import balanced_indices
from tasks.index import index_task
from tasks.logs import step_logger
from tasks.publish import publish_task
from tasks.reshape import Arrays
from tasks.sample import sample_task
from tasks.train import TrainConfig, train_task


def warm_start_config(live_model: dict, **budget) -> TrainConfig:
    """The live model's configuration (architecture, embedding size...) with a new training budget."""
    known = {f.name for f in dataclasses.fields(TrainConfig)}
    return dataclasses.replace(TrainConfig(**{k: v for k, v in live_model.items() if k in known}), **budget)


@flow(name="retrain")
def retrain(
    data_home: str = "",
    epochs: int = 2,
    steps_per_epoch: int = 100,
    examples_per_class: int = 16,
    learning_rate: float = 2e-4,
    replay_size: int = 6000,
    seed: int = 42,
    gate_tolerance: float = DEFAULT_GATE_TOLERANCE,
    lock_timeout_s: float = DEFAULT_LOCK_TIMEOUT_S,
) -> dict:
    """Fine-tune the live model on new labelled items plus a replay sample; publish if it does not regress.

    Args:
        data_home: where everything is stored (default: $FASHION_SIM_HOME, else ./data)
        epochs: training epochs of the fine-tuning
        steps_per_epoch: batches per epoch
        examples_per_class: images of each class per batch
        learning_rate: Adam's initial learning rate (lower than a full run: the weights start trained)
        replay_size: class-balanced sample of already-trained-on labelled items mixed with the new ones
        seed: seeds the replay sample, batches and augmentation
        gate_tolerance: largest drop in precision@1 / recall@5 against the live release still published
        lock_timeout_s: how long to wait for another run that is writing to the store before stopping
    """
    log = step_logger()
    home = DataHome.from_env(data_home or None).ensure()
    with writer_session(home, "retrain", lock_timeout_s) as session:  # NoReleaseError: run the pipeline first
        if session.recovery:
            log.warning("recovered from an interrupted run: %s", session.recovery)
        live, catalog = session.live, session.catalog
        trained_through = int(live.manifest["model"]["trained_through_item_id"])
        new = catalog.load_labelled_after(trained_through)
        if not len(new):
            reason = (f"no new labelled items since release {live.release_id} was trained "
                      f"(through item {trained_through}): nothing to train, nothing published")
            log.info("retrain: %s", reason)
            return {"published": False, "reason": reason, "release_id": live.release_id}

        items = catalog.load()
        seen = np.flatnonzero((items.labels >= 0) & (items.item_ids <= trained_through))
        replay = seen[balanced_indices(items.labels[seen], replay_size, seed)] if replay_size > 0 else seen[:0]
        images = np.concatenate([new.images, items.images[replay]])
        labels = np.concatenate([new.labels, items.labels[replay]])
        log.info("retrain: %d new labelled items + %d replayed, warm start from %s",
                 len(new), len(replay), live.release_id)
        config = warm_start_config(live.manifest["model"], epochs=epochs, steps_per_epoch=steps_per_epoch,
                                   examples_per_class=examples_per_class, learning_rate=learning_rate, seed=seed)
        sampler = sample_task(images, labels, examples_per_class, steps_per_epoch, config.classes_per_batch, seed)
        model, history = train_task(sampler, config, initial_model=live.model)

        embed = make_embedder(model)
        embeddings = index_task(embed, items)
        test_images, test_labels = Arrays(home.arrays).load("test")
        metrics = evaluate_task(embed, test_images, test_labels, embeddings, items)
        decision = gate(metrics, live.metrics, gate_tolerance)
        report_artifact("retrain-evaluation", markdown_report(metrics, "Incremental retrain candidate", decision))
        result = {"published": decision["publish"], "gate": decision, "metrics": headline(metrics),
                  "new_labelled_items": len(new), "replayed_items": len(replay),
                  "train_seconds": history["train_seconds"]}
        if not decision["publish"]:
            log.warning("retrain not published: %s", decision["reason"])
            return {**result, "reason": decision["reason"], "release_id": live.release_id}
        writer = ReleaseWriter(home)
        manifest = {
            "kind": "retrain", "parent": live.release_id, "num_items": len(items),
            "model": {**config.as_dict(), "trained_in": writer.release_id, "warm_start_from": live.release_id,
                      "trained_through_item_id": int(new.item_ids.max())},
            "history": history, "new_labelled_items": len(new), "replayed_items": len(replay),
        }
        release_id = publish_task(home, writer, manifest, metrics, new_items=items, new_embeddings=embeddings,
                                  model=model)
        return {**result, "reason": decision["reason"], "release_id": release_id}


if __name__ == "__main__":
    from flows.cli import run_flow_cli

    run_flow_cli(retrain)
