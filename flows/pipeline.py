"""The full pipeline: source -> export -> sample -> train -> index -> evaluate -> publish.

The source is Fashion-MNIST (download -> reshape) or a labelled folder of your own photos (`--images
DIR`, tasks/folder.py), whichever the data home holds (tasks/source.py). Trains from scratch on every
labelled catalogue item it may train on (the training images plus labelled drops), re-embeds the whole
catalogue and publishes if the evaluation does not regress against the live release.
The steps run inside one writer session (storage/session.py: lock, recovery, catalogue check) and end
in the evaluate-gate-publish tail every training flow shares (tasks/publish.py release_candidate).
Run once without a server: `python -m flows.pipeline --help`.
"""

from __future__ import annotations

from prefect import flow

from storage.embedder import make_embedder
from storage.home import DataHome
from storage.releases import ReleaseWriter, release_key
from storage.session import writer_session
from tasks.evaluate import DEFAULT_GATE_TOLERANCE, headline
from tasks.logs import step_logger
from tasks.publish import Candidate, release_candidate_task
from tasks.sample import sample_task
from tasks.shards import FanOut, embed_catalogue, embed_images
from tasks.source import prepare_source, settle_dataset
from tasks.train import ARCHITECTURE_SIDES, TrainConfig, train_task

DEFAULTS = TrainConfig()


@flow(name="pipeline")
def pipeline(
    data_home: str = "",
    mirror: str = "",
    images: str = "",
    image_size: int = 0,
    architecture: str | None = None,
    weights: str = "",
    embedding_size: int = DEFAULTS.embedding_size,
    epochs: int = DEFAULTS.epochs,
    steps_per_epoch: int | None = None,
    classes_per_batch: int = DEFAULTS.classes_per_batch,
    examples_per_class: int | None = None,
    learning_rate: float = DEFAULTS.learning_rate,
    augment: bool = DEFAULTS.augment,
    classifier_weight: float = DEFAULTS.classifier_weight,
    preset: str = "",
    gallery_size: int = 1000,
    seed: int = DEFAULTS.seed,
    gate_tolerance: float = DEFAULT_GATE_TOLERANCE,
    force_publish: bool = False,
    dask_address: str = "",
) -> dict:
    """Train, index, evaluate and publish a release from Fashion-MNIST or from a folder of your own images.

    Args:
        data_home: where everything is stored: a folder or s3://bucket/prefix (default: $FASHION_SIM_HOME, else ./data)
        mirror: directory or base URL holding the four Fashion-MNIST .gz files (default:
            $FASHION_MNIST_MIRROR, else the public mirrors)
        images: a labelled folder of your own photos, <class>/<image> or train/<class>/<image> with an optional
            test/, validation/ or val/ split (README "Your own images"); the data home records it, so later
            runs use it again without this (default: what the home holds, else Fashion-MNIST)
        image_size: side in pixels of the square the network sees for your own images (default: 64, or
            the backbone's 224; what the home last used). Fashion-MNIST stays 28
        architecture: embedding network. Fashion-MNIST: lean (default), compact or article (the article's);
            your own images: photo (default, from scratch), or the ImageNet-pretrained backbones
            mobilenet_v3_small or efficientnet_b0 (224 px input; --weights)
        weights: the backbone's no-top ImageNet weights, the .h5 file Keras' applications module downloads
            (weights_mobilenet_v3_small_224_1.0_float_no_top_v2.h5, efficientnetb0_notop.h5); without
            it Keras fetches the file when the machine is online
        embedding_size: embedding dimensions (MetricEmbedding output)
        epochs: training epochs
        steps_per_epoch: batches per epoch (default: 400 for Fashion-MNIST, 300 for your own images)
        classes_per_batch: classes drawn into every batch (at most the number of classes)
        examples_per_class: images of each class per batch, batch = classes x examples (default: 16 for
            Fashion-MNIST, 8 for your own images)
        learning_rate: Adam's initial learning rate (cosine decay to 5% over the run)
        augment: random flips during training (your own images: also shifts and colour jitter)
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
        dask_address: an existing Dask cluster's scheduler (tcp://host:8786) for embedding jobs of at least
            200,000 images, which needs an s3:// data home (default: $DASK_SCHEDULER_ADDRESS, else a local
            cluster; smaller jobs embed in this process; README "Scale out")
    """
    log = step_logger()
    home = DataHome.from_env(data_home or None).ensure()
    fan_out = FanOut.for_home(home, dask_address)
    dataset = settle_dataset(home, images, image_size, ARCHITECTURE_SIDES.get(architecture or "", 0))
    config = TrainConfig.for_dataset(
        dataset, architecture=architecture, weights=weights, embedding_size=embedding_size, epochs=epochs,
        steps_per_epoch=steps_per_epoch, classes_per_batch=classes_per_batch, examples_per_class=examples_per_class,
        learning_rate=learning_rate, augment=augment, seed=seed, classifier_weight=classifier_weight,
    ).with_preset(preset)
    with writer_session(home, "pipeline", require_live=False, log=log, dataset=dataset) as session:
        writer = ReleaseWriter(home)
        source = prepare_source(session, dataset, mirror, gallery_size, seed, writer.release_id)
        items = session.catalog.load()
        trainable = items.trainable
        sampler = sample_task(items.images[trainable], items.labels[trainable], config.examples_per_class,
                              config.steps_per_epoch, config.classes_per_batch, seed)
        model, history = train_task(sampler, config, dataset.num_classes)
        embed = make_embedder(model, config.mirror_average)
        embedded = embed_catalogue(embed, items, writer, fan_out)
        candidate = Candidate("full", model, embed, items, embedded.embeddings, config.as_dict(), dataset,
                              int(items.item_ids[trainable].max()), history, segment=embedded.segment,
                              query_embeddings=embed_images(embed, source.queries[0], fan_out))
        outcome = release_candidate_task(session, writer, candidate, source.queries,
                                         ("pipeline-evaluation", "Pipeline release candidate"), gate_tolerance,
                                         force_publish)
    result = {"published": outcome.release_id is not None, "gate": outcome.decision.as_dict(),
              "metrics": headline(outcome.metrics), "train_seconds": history["train_seconds"], **source.summary}
    if outcome.release_id is None:
        return {**result, "release_id": session.live.release_id if session.live else None}
    return {**result, "release_id": outcome.release_id, "path": str(home.store.url(release_key(outcome.release_id)))}


if __name__ == "__main__":
    from flows.cli import run_flow_cli

    run_flow_cli(pipeline)
