"""Incremental retrain: fine-tune the live model on labelled items it has not seen, gated by evaluation.

Labelled catalogue items with ids above the live model's `trained_through_item_id` (labelled drops
that a re-index added) plus a class-balanced replay sample of the items it was trained on train a
warm-started copy of the live model with a small budget and a lower learning rate; the whole
catalogue is re-embedded, the test queries evaluated, and the release published only if it does not
regress against the live release by more than `gate_tolerance`. No new labelled items: nothing
happens. The full pipeline (flows/pipeline.py) stays the periodic retrain from scratch. Like it, this
runs inside one writer session (storage/session.py) and ends in tasks/publish.py's release_candidate.
Run once without a server: `python -m flows.retrain --help`.
"""

from __future__ import annotations

from prefect import flow

from storage.embedder import make_embedder
from storage.home import DataHome
from storage.lock import DEFAULT_LOCK_TIMEOUT_S
from storage.releases import ReleaseWriter
from storage.session import writer_session
from tasks.evaluate import DEFAULT_GATE_TOLERANCE, headline
from tasks.logs import step_logger
from tasks.publish import Candidate, release_candidate_task
from tasks.reshape import Arrays
from tasks.sample import retrain_set_task, sample_task
from tasks.shards import FanOut, embed_catalogue, embed_images
from tasks.train import TrainConfig, train_task


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
    dask_address: str = "",
) -> dict:
    """Fine-tune the live model on new labelled items plus a replay sample; publish if it does not regress.

    Args:
        data_home: where everything is stored: a folder or s3://bucket/prefix (default: $FASHION_SIM_HOME, else ./data)
        epochs: training epochs of the fine-tuning
        steps_per_epoch: batches per epoch
        examples_per_class: images of each class per batch
        learning_rate: Adam's initial learning rate (lower than a full run: the weights start trained)
        replay_size: class-balanced sample of already-trained-on labelled items mixed with the new ones
        seed: seeds the replay sample, batches and augmentation
        gate_tolerance: largest drop in precision@1 / recall@5 against the live release still published
        lock_timeout_s: how long to wait for another run that is writing to the store before stopping
        dask_address: an existing Dask cluster's scheduler (tcp://host:8786) for embedding jobs of at least
            200,000 images, which needs an s3:// data home (default: $DASK_SCHEDULER_ADDRESS, else a local
            cluster; smaller jobs embed in this process; README "Scale out")
    """
    log = step_logger()
    home = DataHome.from_env(data_home or None).ensure()
    fan_out = FanOut.for_home(home, dask_address)
    with writer_session(home, "retrain", lock_timeout_s, log=log) as session:  # no release: run the pipeline
        live, live_model = session.live, session.live.model_record
        new = session.catalog.load_labelled_after(live_model.trained_through_item_id)
        if not len(new):
            reason = (f"no new labelled items since release {live.release_id} was trained "
                      f"(through item {live_model.trained_through_item_id}): nothing to train, nothing published")
            log.info("retrain: %s", reason)
            return {"published": False, "reason": reason, "release_id": live.release_id}
        items = session.catalog.load()
        images, labels, replayed = retrain_set_task(new, items, live_model.trained_through_item_id, replay_size, seed)
        config = TrainConfig.warm_start(live_model.config, epochs=epochs, steps_per_epoch=steps_per_epoch,
                                        examples_per_class=examples_per_class, learning_rate=learning_rate, seed=seed)
        sampler = sample_task(images, labels, examples_per_class, steps_per_epoch, config.classes_per_batch, seed)
        model, history = train_task(sampler, config, live.dataset.num_classes, initial_model=live.model)
        embed, writer = make_embedder(model, config.mirror_average), ReleaseWriter(home)
        embedded, queries = embed_catalogue(embed, items, writer, fan_out), Arrays(home.store).load("test")
        candidate = Candidate("retrain", model, embed, items, embedded.embeddings, config.as_dict(), live.dataset,
                              int(new.item_ids.max()), history, live.release_id,
                              {"new_labelled_items": len(new), "replayed_items": replayed}, embedded.segment,
                              embed_images(embed, queries[0], fan_out))
        outcome = release_candidate_task(session, writer, candidate, queries,
                                         ("retrain-evaluation", "Incremental retrain candidate"), gate_tolerance)
    return {"published": outcome.release_id is not None, "gate": outcome.decision.as_dict(),
            "metrics": headline(outcome.metrics), "new_labelled_items": len(new), "replayed_items": replayed,
            "train_seconds": history["train_seconds"], "reason": outcome.decision.reason,
            "release_id": outcome.release_id or live.release_id}


if __name__ == "__main__":
    from flows.cli import run_flow_cli

    run_flow_cli(retrain)
