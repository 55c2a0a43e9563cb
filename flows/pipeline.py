"""The full pipeline: download -> reshape -> export -> sample -> train -> index -> evaluate -> publish.

Trains from scratch on every labelled catalogue item (the training set plus labelled drops), re-embeds
the whole catalogue and publishes if the evaluation does not regress against the live release.
The steps run inside one writer session (storage/session.py: lock, recovery, catalogue check) and end
in the evaluate-gate-publish tail every training flow shares (tasks/publish.py release_candidate).
Run once without a server: `python -m flows.pipeline --help`.
"""

from __future__ import annotations

from prefect import flow

from storage.embedder import make_embedder
from storage.home import DataHome
from storage.releases import ReleaseWriter
from storage.session import writer_session
from tasks.download import download_task
from tasks.embed import embed_task
from tasks.evaluate import DEFAULT_GATE_TOLERANCE, headline
from tasks.export import export_task
from tasks.logs import step_logger
from tasks.publish import Candidate, release_candidate_task
from tasks.reshape import catalogue_dataset, reshape_task
from tasks.sample import sample_task
from tasks.train import TrainConfig, train_task

DEFAULTS = TrainConfig()


@flow(name="pipeline")
def pipeline(
    data_home: str = "",
    mirror: str = "",
    architecture: str = DEFAULTS.architecture,
    embedding_size: int = DEFAULTS.embedding_size,
    epochs: int = DEFAULTS.epochs,
    steps_per_epoch: int = DEFAULTS.steps_per_epoch,
    classes_per_batch: int = DEFAULTS.classes_per_batch,
    examples_per_class: int = DEFAULTS.examples_per_class,
    learning_rate: float = DEFAULTS.learning_rate,
    augment: bool = DEFAULTS.augment,
    classifier_weight: float = DEFAULTS.classifier_weight,
    preset: str = "",
    gallery_size: int = 1000,
    seed: int = DEFAULTS.seed,
    gate_tolerance: float = DEFAULT_GATE_TOLERANCE,
    force_publish: bool = False,
) -> dict:
    """Train, index, evaluate and publish a release from the Fashion-MNIST files.

    Args:
        data_home: where everything is stored (default: $FASHION_SIM_HOME, else ./data)
        mirror: directory or base URL holding the four .gz files (default: $FASHION_MNIST_MIRROR,
            else the public mirrors)
        architecture: embedding network: lean (default), compact (the previous default) or article (the article's)
        embedding_size: embedding dimensions (MetricEmbedding output)
        epochs: training epochs
        steps_per_epoch: batches per epoch
        classes_per_batch: classes drawn into every batch (10 = all)
        examples_per_class: images of each class per batch (batch = classes x examples)
        learning_rate: Adam's initial learning rate (cosine decay to 5% over the run)
        augment: random horizontal flips during training
        classifier_weight: weight of the auxiliary cosine-classifier loss added to MultiSimilarityLoss
            during training (0 = MultiSimilarityLoss alone, as in the article)
        preset: "quality" for the best measured precision@1 at a cost: the compact network, 10 x 450 steps
            and mirror-averaged embeddings (0.929 against 0.918 for 1.7x the training time and 1.9x
            the cost of one query; README "Performance"); it overrides --architecture and
            --steps-per-epoch. Empty for the default
        gallery_size: test images exported to gallery/ for the page (class-balanced)
        seed: seeds sampling, initialisation and augmentation (same seed, same model)
        gate_tolerance: largest drop in precision@1 / recall@5 against the live release still published
        force_publish: publish even if the evaluation regresses against the live release
    """
    log = step_logger()
    home = DataHome.from_env(data_home or None).ensure()
    config = TrainConfig(architecture=architecture, embedding_size=embedding_size, epochs=epochs,
                         steps_per_epoch=steps_per_epoch, classes_per_batch=classes_per_batch,
                         examples_per_class=examples_per_class, learning_rate=learning_rate, augment=augment,
                         seed=seed, classifier_weight=classifier_weight).with_preset(preset)
    with writer_session(home, "pipeline", require_live=False, log=log) as session:
        download_task(home.raw, mirror or None)
        arrays = reshape_task(home.raw, home.arrays)
        train_images, train_labels = arrays.load("train")
        queries = arrays.load("test")
        export_task(*queries, home.gallery, gallery_size, seed)
        writer = ReleaseWriter(home)
        catalogue_dataset(session.catalog, train_images, train_labels, writer.release_id)
        items = session.catalog.load()
        labelled = items.labels >= 0
        sampler = sample_task(items.images[labelled], items.labels[labelled], examples_per_class,
                              steps_per_epoch, classes_per_batch, seed)
        model, history = train_task(sampler, config)
        embed = make_embedder(model, config.mirror_average)
        candidate = Candidate("full", model, embed, items, embed_task(embed, items), config.as_dict(),
                              int(items.item_ids[labelled].max()), history)
        outcome = release_candidate_task(session, writer, candidate, queries,
                                         ("pipeline-evaluation", "Pipeline release candidate"), gate_tolerance,
                                         force_publish)
    result = {"published": outcome.release_id is not None, "gate": outcome.decision.as_dict(),
              "metrics": headline(outcome.metrics), "train_seconds": history["train_seconds"]}
    if outcome.release_id is None:
        return {**result, "release_id": session.live.release_id if session.live else None}
    return {**result, "release_id": outcome.release_id, "path": str(home.release_dir(outcome.release_id))}


if __name__ == "__main__":
    from flows.cli import run_flow_cli

    run_flow_cli(pipeline)
