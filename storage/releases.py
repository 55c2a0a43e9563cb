"""Releases: immutable sets of files naming a model, the segments it searches and its metrics.

A release is built in a local scratch folder (tmp/<id>/), then published as a whole through the store
(storage/objects.py: one rename on a local home; on s3://, every file uploaded and the manifest last),
and only then does LATEST move. Readers resolve LATEST once and open only complete releases (those
with a valid manifest), so they never see half of one and never wait for a writer.

    releases/<id>/
        manifest.json        written last: format, segments (name, Lance version, rows, graph size,
                             checksums of their files), model_release, and every file it reads with
                             its size and checksum (storage/integrity.py), sealed by its own checksum
        model.keras          the embedding network (tf-keras format: config + h5 weights, no pickle)
        embedder.tflite      the same network compiled for queries (storage/embedder.py)
        metrics.json         evaluation of this release (see tasks/evaluate.py)
    segments/<name>.lance    a segment's items and embeddings (Lance dataset, storage/search_index.py)
    segments/<name>.hnsw     its HNSW graph, for large segments

Segments and models are immutable and shared: a re-index refers to the live release's segments and
model (`model_release`) and adds one segment with the new items, so its cost grows with the new items,
not the index, on a local folder and on object storage alike. Once the live release has
MAX_MINOR_SEGMENTS segments besides its largest, the re-index merges them with the new items into one,
so segments stay few between retrains (a retrain or pipeline run writes one).
Every manifest records `next_item_id`, the first item id no release has given out, so ids are never
reused even when the catalogue has to be rebuilt from the releases. Flows describe a release with
ReleaseManifest and ModelRecord (the one spelling of its keys); segments are written and loaded by
the index module (storage/search_index.py), which this module only tells which segments to use.
Nothing in a release is unpickled: Lance columns and JSON, and the model from its config.
"""

from __future__ import annotations

import json
import re
import shutil
from collections.abc import Sequence
from dataclasses import dataclass, field, fields
from datetime import datetime, timezone
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np

from storage.atomic import leftover_temp_files
from storage.catalog import Catalog, CatalogItems
from storage.dataset import FASHION_MNIST, DatasetDescription
from storage.embedder import EMBEDDER_FILE, Embedder, make_embedder
from storage.errors import UserError
from storage.files import NotRegularFileError
from storage.home import LATEST, REASON_SUFFIX, DataHome
from storage.images import encode_png
from storage.integrity import CHECKSUMS, GRAPH_CHECKSUM, DamagedFileError, check_bytes, checksum_file, is_damaged_manifest, seal
from storage.lock import replace_pointer
from storage.match_score import GOOD, NONE, MatchScore
from storage.objects import OutsideStoreError
from storage.search_index import (SEGMENTS, Column, SegmentedIndex, graph_key, load_segments, read_segment,
                                  segment_key, write_segment)

MANIFEST = "manifest.json"
MODEL_FILE = "model.keras"
METRICS_FILE = "metrics.json"
RELEASES = "releases"  # the store's folder of releases
RELEASE_ID_FORMAT = "%Y%m%dT%H%M%S%fZ"  # a release id: when its writer started, UTC
RELEASE_ID_PATTERN = re.compile(r"^\d{8}T\d{12}Z$")
SEGMENT_NAME_PATTERN = re.compile(r"^(\d{8}T\d{12}Z)-\d+$")  # <the release that wrote it>-<n>
WRONG_SIZE = "is missing or has the wrong size"
LATEST_MAX_BYTES = 4096  # a release id and a newline; anything longer is not a pointer of this store
# manifests of this format list segments as Lance datasets shared by releases; releases written by
# earlier versions (numpy segments inside each release) are converted once by CONVERT_COMMAND
STORE_FORMAT = 2
CONVERT_COMMAND = "python -m storage.convert"
# a re-index merges the segments besides the largest once there are this many: each graph among them
# costs a query about 10 us more and each segment is six files to open when a release loads (small
# graph-less ones are searched as one block, see SegmentedIndex). 50 re-index runs of 10 images then
# leave 3 segments, and one query costs 1.11x what it cost right after the pipeline (benchmarks/segments.py)
MAX_MINOR_SEGMENTS = 8
# the newest release id a clean-up deleted (storage/lifecycle.py): catalogue rows and segments written by
# a release up to it were published, so recovery never takes them for a crashed writer's leftovers
RETIRED_THROUGH = "retired-through"


# the retrieval figures of metrics.json (tasks/evaluate.py writes them, the page and reports show them)
RETRIEVAL_METRICS = ("precision@1", "precision@5", "precision@10", "recall@1", "recall@5", "recall@10", "map@10")


@dataclass(frozen=True)
class ModelRecord:
    """How a release's network was trained: the training configuration's fields, the release it was
    trained in, and the last catalogue item it could have seen (labelled items above it are new to
    it: what an incremental retrain trains on)."""

    config: dict[str, Any]  # tasks.train.TrainConfig.as_dict()
    trained_in: str
    trained_through_item_id: int
    warm_start_from: str | None = None

    def as_dict(self) -> dict[str, Any]:
        record = {**self.config, "trained_in": self.trained_in,
                  "trained_through_item_id": int(self.trained_through_item_id)}
        return record if self.warm_start_from is None else {**record, "warm_start_from": self.warm_start_from}

    @classmethod
    def of(cls, manifest: dict[str, Any]) -> "ModelRecord":
        record = dict(manifest["model"])
        return cls(trained_in=record.pop("trained_in"),
                   trained_through_item_id=int(record.pop("trained_through_item_id")),
                   warm_start_from=record.pop("warm_start_from", None), config=record)


@dataclass(frozen=True)
class ReleaseManifest:
    """What a flow says about the release it publishes; ReleaseWriter.publish adds the id, segments,
    files, next_item_id and publish time. Kinds: full (pipeline), retrain, reindex."""

    kind: str
    parent: str | None
    num_items: int
    model: dict[str, Any]  # ModelRecord.as_dict(), or the parent's for a re-index (same network)
    dataset: DatasetDescription  # what its items are: shape, channels, class names, conventions
    details: dict[str, Any] = field(default_factory=dict)  # what the kind adds: training history, counts

    def as_dict(self) -> dict[str, Any]:
        return {**self.details, "kind": self.kind, "parent": self.parent, "num_items": int(self.num_items),
                "model": self.model, "dataset": self.dataset.as_dict()}


class ReleaseError(UserError, RuntimeError):
    """A release cannot be used; the message says which and what to do."""


class NoReleaseError(ReleaseError):
    """Nothing has been published yet."""


class DamagedReleaseError(ReleaseError):
    """A file of a release (`key`) is missing or does not match its recorded size or checksum (`reason`)."""

    def __init__(self, release_id: str, key: str, reason: str, advice: str = ""):
        super().__init__(f"release {release_id} is damaged: {key} {reason}{advice}")
        self.key, self.reason = key, reason


def new_release_id() -> str:
    return datetime.now(timezone.utc).strftime(RELEASE_ID_FORMAT)


# ----------------------------------------------------------------------------------------- reading


def release_key(release_id: str, name: str = "") -> str:
    """Where a release (or its file `name`) is in the store."""
    return f"{RELEASES}/{release_id}/{name}" if name else f"{RELEASES}/{release_id}"


def restore_latest_hint(home: DataHome) -> str:
    """What to run to point LATEST at a release again (or to publish a first one)."""
    complete = complete_release_ids(home)
    if not complete:
        return "run `make demo` or `python -m flows.pipeline` to publish a release."
    return (f"restore the pointer with `echo {complete[-1]} > {home.latest}` ({RELEASES}/ holds "
            f"{len(complete)} complete release(s); that is the newest).")


def read_latest(home: DataHome) -> tuple[str | None, str | None]:
    """The id LATEST points at, validated to be a plain release id (None when nothing is published),
    and the pointer's version (what a conditional replace of it must name)."""
    try:
        data, version = home.store.read_versioned(LATEST, LATEST_MAX_BYTES + 1)
    except NotRegularFileError as error:
        raise ReleaseError(f"{home.latest} is {error.kind}, not the file that names the live release; "
                           f"refusing it. Remove it, then {restore_latest_hint(home)}") from None
    if data is None:
        return None, None
    text = data[:LATEST_MAX_BYTES].decode("utf-8", errors="replace").strip()
    if len(data) > LATEST_MAX_BYTES or not RELEASE_ID_PATTERN.match(text):
        raise ReleaseError(
            f"{home.latest} holds {text[:80]!r}, which is not a release id of this store; refusing to "
            f"load it. Point it at a release under {RELEASES}/ or publish a new release."
        )
    return text, version


def latest_release_id(home: DataHome) -> str | None:
    """The id LATEST points at; None when nothing is published."""
    return read_latest(home)[0]


def read_manifest(home: DataHome, release_id: str, check_sizes: bool = True) -> dict[str, Any]:
    """The manifest of a complete release of this store, checked (against its own checksum, and the size
    of every file it lists unless `check_sizes` is false: flows.verify checks each); else ReleaseError."""
    if not RELEASE_ID_PATTERN.match(release_id or ""):
        raise ReleaseError(f"{release_id!r} is not a release id of this store")
    try:
        manifest = json.loads(home.store.read_bytes(release_key(release_id, MANIFEST)))
    except OutsideStoreError:
        raise ReleaseError(f"release {release_id} resolves outside {home.store.uri}; refusing to load it") from None
    except (FileNotFoundError, NotADirectoryError, NotRegularFileError):
        raise ReleaseError(f"release {release_id} has no manifest.json: it is not a complete release") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise ReleaseError(f"release {release_id} has an unreadable manifest.json ({error})") from None
    if isinstance(manifest, dict) and is_damaged_manifest(manifest):
        key = release_key(release_id, MANIFEST)
        raise DamagedReleaseError(release_id, key, DamagedFileError(key).reason)
    if not isinstance(manifest, dict) or manifest.get("release_id") != release_id:
        raise ReleaseError(f"release {release_id} has a manifest that does not describe it; refusing it")
    if manifest.get("format") != STORE_FORMAT:
        raise ReleaseError(f"release {release_id} was written by an earlier version of this project; convert "
                           f"the data home once with `{CONVERT_COMMAND}` (it keeps every release and item)")
    segments, files = manifest.get("segments"), manifest.get("files")
    if (not isinstance(segments, list) or not isinstance(files, dict)
            or not all(isinstance(s, dict) and SEGMENT_NAME_PATTERN.match(str(s.get("name"))) for s in segments)):
        raise ReleaseError(f"release {release_id} has a manifest that does not describe it; refusing it")
    # everything load_release opens must be a listed (so size-checked, store-relative) file
    needed = [model_key(manifest, MODEL_FILE), *(graph_key(s["name"]) for s in segments if "graph_bytes" in s)]
    unlisted = [key for key in needed if key not in files]
    if unlisted:
        raise ReleaseError(f"release {release_id} is damaged: its manifest does not list {unlisted[0]}")
    for key, size in files.items():
        if not is_release_file_key(key) or (check_sizes and home.store.size(key) != size):
            raise DamagedReleaseError(release_id, key, WRONG_SIZE)
    return manifest


def manifest_dataset(manifest: dict[str, Any]) -> DatasetDescription:
    """What a release's items are (releases from before manifests recorded it: Fashion-MNIST)."""
    recorded = manifest.get("dataset")
    return DatasetDescription.from_dict(recorded) if recorded else FASHION_MNIST


def model_key(manifest: dict[str, Any], name: str) -> str:
    """Where the file `name` of a release's model is: in the release that trained it."""
    owner = manifest.get("model_release", manifest.get("release_id"))
    if not RELEASE_ID_PATTERN.match(str(owner)):
        raise ReleaseError(f"release {manifest.get('release_id')} names no valid model release; refusing it")
    return release_key(owner, name)


def is_release_file_key(key: str) -> bool:
    """True for the keys a manifest may list: a release's own file or a segment's graph, nothing else."""
    parts = str(key).split("/")
    if len(parts) == 3 and parts[0] == RELEASES:
        return bool(RELEASE_ID_PATTERN.match(parts[1])) and parts[2] in (MODEL_FILE, EMBEDDER_FILE, METRICS_FILE)
    return (len(parts) == 2 and parts[0] == SEGMENTS and parts[1].endswith(".hnsw")
            and bool(SEGMENT_NAME_PATTERN.match(parts[1].removesuffix(".hnsw"))))


def retired_through(home: DataHome) -> str:
    """RETIRED_THROUGH's release id; "" when no clean-up ever deleted a release."""
    try:
        text = home.store.read_bytes(RETIRED_THROUGH, LATEST_MAX_BYTES).decode("utf-8", errors="replace").strip()
    except FileNotFoundError:
        return ""
    return text if RELEASE_ID_PATTERN.match(text) else ""


def complete_release_ids(home: DataHome) -> list[str]:
    """Ids of the releases that have a valid manifest, oldest first."""
    found = []
    for name in home.store.list(RELEASES):
        try:
            read_manifest(home, name)
        except ReleaseError:
            continue
        found.append(name)
    return found


@dataclass(frozen=True)
class Neighbour:
    item_id: int
    label: int
    label_name: str
    distance: float
    path: str
    rank: int
    metadata: dict[str, Any] = field(default_factory=dict)  # sku, title, url... when the dataset gave them

    def as_dict(self) -> dict[str, Any]:
        found = {"rank": self.rank, "item_id": self.item_id, "label": self.label, "label_name": self.label_name,
                 "distance": round(self.distance, 6), "path": self.path}
        return {**found, "metadata": self.metadata} if self.metadata else found


@dataclass
class Release:
    """A loaded release: the catalogue's embeddings, its items, and the model that embeds queries."""

    release_id: str
    store: Any = field(repr=False)  # storage.objects.LocalStore | S3Store: where its files are
    manifest: dict[str, Any]
    embeddings: np.ndarray | Column  # float32 (n, d), unit length; a Column reads on-demand segments' rows when asked
    items: CatalogItems
    metrics: dict[str, Any]
    index: SegmentedIndex = field(repr=False)
    _embed_fn: Any = field(default=None, repr=False)
    _model: Any = field(default=None, repr=False)
    _id_order: np.ndarray | None = field(default=None, repr=False)

    @cached_property
    def dataset(self) -> DatasetDescription:
        """What this release's items are (read once: every query's match band asks for its side)."""
        return manifest_dataset(self.manifest)

    @property
    def no_match_distance(self) -> float | None:
        return self.metrics.get("no_match_distance")

    @property
    def model_record(self) -> ModelRecord:
        """How this release's network was trained."""
        return ModelRecord.of(self.manifest)

    @cached_property
    def match_score(self) -> MatchScore | None:
        """The fitted good / weak / no-match score; None for releases evaluated before it existed."""
        recorded = self.metrics.get("match_score")
        return MatchScore.from_dict(recorded) if recorded else None

    def match_band(self, pixels: np.ndarray, embedding: np.ndarray, neighbours: list["Neighbour"]) -> str:
        """GOOD, WEAK or NONE (no close match) for one normalised query, its embedding and its nearest
        items (storage/match_score.py). Releases from before the score: NONE past no_match_distance."""
        if not neighbours:
            return GOOD
        nearest = neighbours[0].distance
        if self.match_score is None:
            limit = self.no_match_distance
            return NONE if limit is not None and nearest > limit else GOOD
        score = self.match_score.scores(pixels[None], embedding[None], np.array([nearest]), self.dataset.side)
        return str(self.match_score.bands(score)[0])

    @property
    def model(self):
        if self._model is None:
            self._load_model()
        return self._model

    def _load_model(self) -> None:
        from storage.runtime import load_tensorflow, load_tensorflow_similarity

        tf = load_tensorflow()
        load_tensorflow_similarity()  # registers MetricEmbedding with Keras
        self._model = tf.keras.models.load_model(self.local_file(MODEL_FILE), compile=False, safe_mode=True)

    def local_file(self, name: str) -> Path:
        """A local path to this release's model file `name` (downloaded once from object storage), checked
        against its checksum (DamagedReleaseError when it does not match)."""
        key = model_key(self.manifest, name)
        try:
            return self.store.local_file(key, self.manifest["files"].get(key), self.manifest.get(CHECKSUMS, {}).get(key))
        except DamagedFileError as damage:
            raise refused_as_damaged(DataHome.from_env(self.store.uri), self.release_id, damage) from None

    @property
    def embedder(self) -> Embedder:
        """This release's compiled model (loaded once); what `embed` runs, and what shards are sent."""
        if self._embed_fn is None:
            # releases published before the compiled embedder existed compile their model on load
            mirror = bool(self.manifest["model"].get("mirror_average", False))
            self._embed_fn = (Embedder.load(self.local_file(EMBEDDER_FILE), mirror)
                              if model_key(self.manifest, EMBEDDER_FILE) in self.manifest["files"]
                              else make_embedder(self.model, mirror))
        return self._embed_fn

    def embed(self, images: np.ndarray) -> np.ndarray:
        """Embed uint8 images (n, *dataset.pixel_shape) with this release's model."""
        return self.embedder(images)

    def nearest(self, query_embeddings: np.ndarray, k: int, exact: bool = False) -> tuple[np.ndarray, np.ndarray]:
        """Cosine k-NN over every segment (graph or exact; exact=True forces brute force).
        Returns (distances, row indices into this release's arrays), closest first."""
        return self.index.nearest(query_embeddings, k, exact=exact)

    def search(self, images: np.ndarray, k: int = 10, label: int | None = None) -> "SearchResults":
        """Nearest catalogue items for each normalised image, closest first (of class `label` only, when given)."""
        return self.neighbours(self.embed(images), k, label)

    def similar(self, item_id: int, k: int = 10, label: int | None = None) -> "SearchResults":
        """More like catalogue item `item_id` (KeyError when this release lacks it); the item itself left out."""
        return self.neighbours(self.embeddings[self.row_of(item_id)][None], k, label, exclude_item=item_id)

    def picture_file(self, row: int) -> tuple[bytes, str]:
        """The picture of the item at `row` as a file's bytes and its type ("jpeg" or "png"): its display
        copy as stored (a photo's JPEG), else its pixels as a PNG (`ui.search --save`, the service)."""
        display = self.items.displays[row]
        return (bytes(display), "jpeg") if display else (encode_png(self.items.images[row]), "png")

    def row_of(self, item_id: int) -> int:
        """The row of `item_id` in this release's arrays; KeyError when it holds no such item."""
        if self._id_order is None:
            self._id_order = np.argsort(self.items.item_ids, kind="stable")
        ids = self.items.item_ids
        position = int(np.searchsorted(ids, item_id, sorter=self._id_order))
        if position >= len(ids) or ids[self._id_order[position]] != item_id:
            raise KeyError(item_id)
        return int(self._id_order[position])

    def neighbours(self, query_embeddings: np.ndarray, k: int, label: int | None = None,
                   exclude_item: int | None = None) -> "SearchResults":
        """The k nearest items of each embedded query: among all (the index) or among class `label`
        (exact search over that class's rows, or Lance's filtered search), leaving out `exclude_item` (an item asking for more
        like itself finds itself first)."""
        wanted = k + (exclude_item is not None)
        distances, rows = self.index.nearest(query_embeddings, wanted, label=label)
        if exclude_item is not None:
            keep = self.items.item_ids[rows] != exclude_item
            keep &= np.cumsum(keep, axis=1) <= k  # the first k others of each query
            rows = np.array([row[mask] for row, mask in zip(rows, keep)]).reshape(len(rows), -1)
            distances = np.array([row[mask] for row, mask in zip(distances, keep)]).reshape(len(rows), -1)
        return SearchResults(rows, self.items.item_ids[rows], self.items.labels[rows], distances,
                             self.items.paths[rows], self.items.metadata[rows], self.dataset)


@dataclass(frozen=True)
class SearchResults(Sequence):
    """The k nearest items of each query as (queries, k) arrays, closest first; results[i] is query
    i's list of Neighbour. Columns rather than objects: building 100,000 Neighbours took longer than
    searching for them when 10,000 queries come in one batch."""

    rows: np.ndarray  # row of each neighbour in the release's items
    item_ids: np.ndarray
    labels: np.ndarray
    distances: np.ndarray
    paths: np.ndarray
    metadata: np.ndarray  # JSON text per neighbour ("" for none)
    dataset: DatasetDescription  # names the labels

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, query: int) -> list[Neighbour]:  # type: ignore[override]
        if not -len(self) <= query < len(self):
            raise IndexError(query)
        return [Neighbour(item_id=int(item_id), label=int(label), label_name=self.dataset.label_name(int(label)),
                          distance=float(distance), path=str(path), rank=rank + 1,
                          metadata=json.loads(str(text)) if text else {})
                for rank, (item_id, label, distance, path, text) in enumerate(zip(
                    self.item_ids[query], self.labels[query], self.distances[query], self.paths[query],
                    self.metadata[query]))]


def load_release(home: DataHome, release_id: str | None = None) -> Release:
    """Open a complete release of this store (LATEST when no id is given)."""
    release_id = release_id or latest_release_id(home)
    if release_id is None:
        state = "(LATEST is missing)" if complete_release_ids(home) else "yet"
        raise NoReleaseError(f"No release is published in {home.location} {state}: {restore_latest_hint(home)}")
    try:  # every file it reads is checked against its checksum first (storage/integrity.py)
        manifest = read_manifest(home, release_id)
        items, embeddings, index = load_segments(home.store, manifest["segments"], manifest_dataset(manifest).pixel_shape)
        metrics = read_metrics(home, manifest)
    except (DamagedFileError, DamagedReleaseError) as damage:
        raise refused_as_damaged(home, release_id, damage) from None
    return Release(release_id, home.store, manifest, embeddings, items, metrics, index)


def read_metrics(home: DataHome, manifest: dict[str, Any]) -> dict[str, Any]:
    """The evaluation of a release (read_manifest's checked manifest); empty when it has none."""
    key = release_key(manifest["release_id"], METRICS_FILE)
    if key not in manifest["files"]:
        return {}
    return json.loads(check_bytes(home.store.read_bytes(key), key, manifest.get(CHECKSUMS, {}).get(key)))


def reads_file(manifest: dict[str, Any], key: str) -> bool:
    """True when a release (its checked manifest) reads the store's file `key`."""
    return (key in manifest["files"] or key == release_key(manifest["release_id"], MANIFEST)
            or any(key.startswith(segment_key(record["name"]) + "/") for record in manifest["segments"]))


def refused_as_damaged(home: DataHome, release_id: str, damage: DamagedFileError | DamagedReleaseError) -> DamagedReleaseError:
    """The error that refuses a damaged release: the file, and the complete releases that do not read it
    (not checked in full here: flows.verify does that)."""
    others = [other for other in complete_release_ids(home)
              if other != release_id and not reads_file(read_manifest(home, other), damage.key)]
    alternatives = (f"Releases that do not read that file: {', '.join(others)} (`python -m flows.verify "
                    f"{others[-1]}` checks one in full, `python -m flows.rollback {others[-1]}` serves it)" if others else
                    "No other release avoids that file: publish a new one with `python -m flows.pipeline`")
    return DamagedReleaseError(release_id, damage.key, damage.reason, f"; refusing it. {alternatives}.")


# ----------------------------------------------------------------------------------------- writing


class ReleaseWriter:
    """Builds one release in a local scratch folder and the store's segments/; `publish` makes it
    visible in one atomic step, `discard` removes what it wrote."""

    def __init__(self, home: DataHome):
        self.home = home.ensure()
        self.release_id = new_release_id()
        self.path = home.tmp / self.release_id  # the release's own files, until publish
        self.path.mkdir(parents=True)
        self.segments: list[dict[str, Any]] = []  # the records of the segments it searches, in order
        self.model_release = self.release_id  # whose model.keras and embedder.tflite it serves
        self.next_item_id = 0  # raised by every segment added or referred to, and by the parent at publish
        self.named_segments = 0  # segment names given out: <release id>-<n>
        self.published = False

    def add_segment(self, items: CatalogItems, embeddings: np.ndarray) -> str:
        name = self.new_segment_name()
        self.adopt_segment(write_segment(self.home.store, name, items, embeddings, self.path), items)
        return name

    def new_segment_name(self) -> str:
        """A segment name of this release that is not taken, <release id>-<n> (n: its place in the manifest
        unless a name was given out before; discard and recovery find its segments by the prefix)."""
        number = max(len(self.segments), self.named_segments)
        self.named_segments = number + 1
        return f"{self.release_id}-{number}"

    def adopt_segment(self, record: dict[str, Any], items: CatalogItems) -> None:
        """Search a segment of `items` written under `new_segment_name()`: by add_segment, or committed
        from the fan-out's shards (tasks/shards.py)."""
        self.segments.append(record)
        if len(items):
            self.next_item_id = max(self.next_item_id, int(items.item_ids.max()) + 1)

    def link_segments_from(self, release: Release, names: list[str] | None = None) -> None:
        """Search a release's segments (all, or `names`) too: shared, never copied nor modified."""
        self.segments += [record for record in release.manifest["segments"] if names is None or record["name"] in names]
        self.next_item_id = max(self.next_item_id, next_item_id_of(release.manifest, release.items))

    def extend(self, base: Release, items: CatalogItems | None, embeddings: np.ndarray | None) -> None:
        """`base`'s segments plus the new items: referred to as they are and one new segment, or, once
        `base` has MAX_MINOR_SEGMENTS segments besides its largest, those merged with the new items into one."""
        records = base.manifest["segments"]
        largest = max(records, key=lambda record: record["rows"])
        minor = [record for record in records if record is not largest]
        new = [] if items is None or not len(items) else [(items, np.asarray(embeddings, np.float32))]
        if len(minor) < MAX_MINOR_SEGMENTS:
            self.link_segments_from(base)
            for new_items, new_embeddings in new:
                self.add_segment(new_items, new_embeddings)
            return
        self.link_segments_from(base, [largest["name"]])
        merged = [read_segment(self.home.store, record, base.dataset.pixel_shape) for record in minor] + new
        self.add_segment(CatalogItems.concatenate([part for part, _ in merged]),
                         np.concatenate([vectors for _, vectors in merged]))

    def save_model(self, model) -> None:
        model.save(self.path / MODEL_FILE, save_format="keras")
        (self.path / EMBEDDER_FILE).write_bytes(make_embedder(model).flatbuffer)

    def link_model_from(self, release: Release) -> None:
        """Serve `release`'s model (shared, not copied)."""
        self.model_release = release.manifest.get("model_release", release.release_id)

    def write_json(self, name: str, payload: dict[str, Any]) -> None:
        (self.path / name).write_text(json.dumps(payload, indent=2, sort_keys=True))

    def _checksums(self, files: dict[str, int]) -> dict[str, str]:
        """The checksum of each of `files` that has one: its own files', hashed here; its model's and graphs',
        as recorded when they were written (none for files written before checksums existed)."""
        recorded = {graph_key(record["name"]): record[GRAPH_CHECKSUM] for record in self.segments
                    if GRAPH_CHECKSUM in record}
        if self.model_release != self.release_id:
            recorded.update(read_manifest(self.home, self.model_release).get(CHECKSUMS, {}))
        own = release_key(self.release_id) + "/"
        return {key: checksum_file(self.path / key.removeprefix(own)) if key.startswith(own) else recorded[key]
                for key in files if key.startswith(own) or key in recorded}

    def _files(self) -> dict[str, int]:
        """Every file the release reads, store-relative, with its size: its own, its model's, its graphs'."""
        files = {release_key(self.release_id, file.relative_to(self.path).as_posix()): file.stat().st_size
                 for file in sorted(self.path.rglob("*")) if file.is_file() and not file.name.endswith(".hnsw")}
        if self.model_release != self.release_id:
            model = read_manifest(self.home, self.model_release)["files"]
            files.update({key: size for key, size in model.items()
                          if key.startswith(release_key(self.model_release, "")) and not key.endswith(METRICS_FILE)})
        files.update({graph_key(record["name"]): record["graph_bytes"] for record in self.segments
                      if "graph_bytes" in record})
        return files

    def publish(self, manifest: ReleaseManifest) -> str:
        """Write the manifest, publish the release folder through the store, then move LATEST."""
        if manifest.parent:  # ids the parent gave out stay given out, whatever this release holds
            self.next_item_id = max(self.next_item_id, next_item_id_of(read_manifest(self.home, manifest.parent)))
        files = self._files()
        full = {**manifest.as_dict(), "format": STORE_FORMAT, "release_id": self.release_id,
                "segments": self.segments, "model_release": self.model_release, "files": files,
                CHECKSUMS: self._checksums(files), "next_item_id": self.next_item_id,
                "published_at": datetime.now(timezone.utc).isoformat(timespec="seconds")}
        (self.path / MANIFEST).write_text(json.dumps(seal(full), indent=2, sort_keys=True))
        self.home.store.publish_folder(self.path, release_key(self.release_id), last=MANIFEST)
        self.published = True  # complete from here: the next writer rolls LATEST forward if the move fails
        set_latest(self.home, self.release_id)
        return self.release_id

    def discard(self) -> None:
        """Remove what this writer wrote, unless its release got published: its scratch folder and the
        segments it added to the store."""
        shutil.rmtree(self.path, ignore_errors=True)
        for record in [] if self.published else self.segments:
            if record["name"].startswith(self.release_id + "-"):
                delete_segment(self.home, record["name"])


def delete_segment(home: DataHome, name: str) -> None:
    home.store.delete(segment_key(name))
    home.store.delete(graph_key(name))


def next_item_id_of(manifest: dict[str, Any], items: CatalogItems | None = None) -> int:
    """The first id a release's manifest says was never given out; for a release published before
    manifests recorded it, one past its highest item id (`items`), else 0."""
    if "next_item_id" in manifest:
        return int(manifest["next_item_id"])
    return int(items.item_ids.max()) + 1 if items is not None and len(items) else 0


def set_latest(home: DataHome, release_id: str) -> None:
    """Point LATEST at a complete release (storage.lock checks, on object storage, that this writer
    still holds the lease and that nobody moved the pointer since it last did)."""
    read_manifest(home, release_id)
    replace_pointer(home, (release_id + "\n").encode())


@dataclass(frozen=True)
class Recovery:
    """What a writer's start undid or rebuilt (storage.releases.recover, storage.session); false when
    nothing was needed."""

    removed_tmp: tuple[str, ...] = ()  # half-written releases, downloads and reason files, by name
    rolled_forward: str | None = None  # a complete release whose LATEST move was lost, now live
    forgotten_catalog_rows: int = 0  # rows of releases that never got published
    restored_catalog_rows: int = 0  # rows of the live release the catalogue had lost
    moved_to_processed: int = 0  # dropped files a live re-index indexed but never moved

    def __bool__(self) -> bool:
        return any(getattr(self, name.name) for name in fields(self))

    def __str__(self) -> str:
        return ", ".join(f"{name.name}={getattr(self, name.name)}" for name in fields(self)
                         if getattr(self, name.name))


def recover(home: DataHome) -> Recovery:
    """Undo what a killed writer left. Call with the writer lock held, before writing anything.

    Releases up to `retired_through` were published and later deleted by a clean-up: what they
    wrote and kept releases still use (catalogue rows, segments) is not a leftover.

    - scratch leftovers (half-built releases, partial downloads of a dead run) are deleted, and so are
      the temporary files of reason files that a killed drop-folder run was writing in rejected/
      (nothing of the user's can match: hidden files are never moved out of incoming/);
    - release folders without a manifest (a publish to object storage cut short) are deleted, and so
      are the segments written by a release that never got published;
    - a complete release built on the live one whose LATEST move was lost is published (roll forward;
      a rollback is a new release built on the live one, so this finishes it and never rolls past it);
    - catalogue rows of releases that never got published are deleted.
    """
    home.ensure()
    removed = []
    for leftover in home.tmp.iterdir():
        shutil.rmtree(leftover) if leftover.is_dir() else leftover.unlink()
        removed.append(leftover.name)
    rejected = home.rejected if home.has_drop_folder else None
    for leftover in leftover_temp_files(rejected, f"*{REASON_SUFFIX}") if rejected and rejected.is_dir() else []:
        leftover.unlink()
        removed.append(f"rejected/{leftover.relative_to(rejected).as_posix()}")
    retired = retired_through(home)
    published = set()  # releases with a manifest (complete, or damaged: never deleted here)
    for name in home.store.list(RELEASES):
        if home.store.exists(release_key(name, MANIFEST)):
            published.add(name)
        elif RELEASE_ID_PATTERN.match(name):
            home.store.delete(release_key(name))
            removed.append(release_key(name))
    complete = complete_release_ids(home)
    for entry in home.store.list(SEGMENTS):
        name = entry.removesuffix(".lance").removesuffix(".hnsw")
        written_by = SEGMENT_NAME_PATTERN.match(name)
        if written_by and written_by.group(1) not in published and written_by.group(1) > retired:
            home.store.delete(f"{SEGMENTS}/{entry}")
            removed.append(f"{SEGMENTS}/{entry}")
    live = latest_release_id(home)
    rolled_forward = None
    if complete and complete[-1] != live:
        newest = read_manifest(home, complete[-1])
        if live is None or (newest.get("parent") == live and complete[-1] > live):
            set_latest(home, complete[-1])
            rolled_forward = complete[-1]
    forgotten = Catalog(home.catalog).forget_unpublished(set(complete), retired)
    return Recovery(tuple(removed), rolled_forward, forgotten)
