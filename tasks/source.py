"""source: where a pipeline run's images come from, settled against what the data home holds.

Fashion-MNIST (the default) is downloaded and reshaped; a labelled folder of photos (`--images DIR`,
tasks/folder.py) is read as it is. A data home holds one dataset and records it in dataset.json
(storage/dataset.py): later runs without `--images` use the recorded folder again, and pointing a home
at another source stops before anything is written. Either way the run ends up with its dataset
catalogued, the evaluation's queries saved in arrays/ (the retrain flow evaluates on them too) and a
gallery of them for the page.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np

from storage.dataset import (FASHION_MNIST, PHOTO, DatasetDescription, DatasetMismatchError, photo_dataset,
                             read_home_dataset, write_home_dataset)
from storage.home import DataHome
from storage.releases import complete_release_ids
from storage.session import WriterSession
from tasks.download import download_task
from tasks.evaluate import report_artifact
from tasks.export import export_task
from tasks.folder import catalogue_folder, folder_classes, folder_report, read_folder_task
from tasks.reshape import Arrays, catalogue_dataset, reshape_task

MIN_SIDE, MAX_SIDE = 16, 512  # --image-size bounds: below, a garment is a blob; above, training takes days on a CPU


@dataclass(frozen=True)
class Source:
    dataset: DatasetDescription
    queries: tuple[np.ndarray, np.ndarray]  # the evaluation's query images and labels
    summary: dict = field(default_factory=dict)  # what a folder gave: counts and the files skipped, with why


def settle_dataset(home: DataHome, images: str, image_size: int, default_side: int = 0) -> DatasetDescription:
    """The dataset this run works with: the folder given by `images` or recorded in the home, else
    Fashion-MNIST; its classes as the folder has them now (known ones keep their index); its side
    `image_size`, else the architecture's `default_side`, else the recorded one. Raises
    DatasetMismatchError, before anything is written, when the home holds another dataset."""
    recorded = read_home_dataset(home)
    if images:
        folder = Path(images).expanduser().resolve()
        holds = recorded or (FASHION_MNIST if complete_release_ids(home) else None)
        if holds is not None and holds.source != str(folder):
            where = f"the images of {holds.source}" if holds.source else holds.title
            raise DatasetMismatchError(
                f"The data home {home.location} holds {where}; a data home holds one dataset. Give {folder} a home of "
                "its own (--data-home DIR or FASHION_SIM_HOME). Nothing was changed.")
        base = recorded or photo_dataset(folder, folder_classes(folder))
    else:
        base = recorded or FASHION_MNIST
    if base.source:
        base = base.with_classes(folder_classes(Path(base.source)))
    side = image_size or default_side or base.side
    if side != base.side and base.conventions != PHOTO:
        raise DatasetMismatchError(f"{base.title} images are {base.side}x{base.side}; --image-size applies to your "
                                   "own images (--images DIR)")
    if not MIN_SIDE <= side <= MAX_SIDE:
        raise DatasetMismatchError(f"--image-size {side} is outside {MIN_SIDE}..{MAX_SIDE} pixels")
    return replace(base, side=side)


def prepare_source(session: WriterSession, dataset: DatasetDescription, mirror: str, gallery_size: int, seed: int,
                   release_id: str) -> Source:
    """Catalogue the run's dataset (new items tagged `release_id`), record it in the home, save its
    queries and export their gallery."""
    home = session.home
    if dataset.source:
        found = read_folder_task(Path(dataset.source), dataset, seed)
        report_artifact("images-folder", folder_report(found), description="images folder read")
        write_home_dataset(home, dataset)
        catalogue_folder(session.catalog, found, release_id)
        queries = found.query_arrays()
        catalogued = session.catalog.find_hashes(q.image.content_hash for q in found.queries)
        export_task(*queries, home.store, gallery_size, seed, dataset, [q.image.display for q in found.queries],
                    [catalogued.get(q.image.content_hash) for q in found.queries])
        Arrays(home.store).save("test", *queries)
        return Source(dataset, queries, {"images": dataset.source, "classes": list(dataset.class_names),
                                         **found.counts(), "skipped_files": [
                                             {"path": r.name, "reason": r.reason} for r in found.rejected]})
    else:
        download_task(home.raw, mirror or None)
        arrays = reshape_task(home.raw, home.store)
        write_home_dataset(home, dataset)
        catalogue_dataset(session.catalog, *arrays.load("train"), release_id)
        queries = arrays.load("test")
        export_task(*queries, home.store, gallery_size, seed, dataset)
    return Source(dataset, queries)
