"""The index: writing a release's segments, loading them, and nearest-neighbour search over them.

A segment is a Lance dataset (segments/<name>.lance in the store: the items and their embeddings,
one row each) and, for segments of ANN_MIN_ITEMS or more, an HNSW graph beside it
(segments/<name>.hnsw). Segments are immutable and shared: a release lists the segments it searches
(name, Lance version, rows, graph size), so a re-index adds one small segment and refers to the live
release's others, on a local folder and on s3:// alike. `write_segment` adds one, `load_segments`
opens a release's segments as one CatalogItems, one embedding matrix and a SegmentedIndex whose
`nearest` searches them. storage/releases.py decides which segments a release holds.

Large segments (a full pipeline or retrain embeds the whole catalogue into one) carry an HNSW graph
(hnswlib: a plain binary format, nothing unpickled) built once when the segment is written; small
segments (items added by the drop folder) are searched exactly. A query searches every segment and
merges, so adding items never rebuilds the big graph. Search runs in memory: a release is read whole
when it opens. `exact_knn` is the brute-force reference used by evaluation and to check the graph's recall.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa

from storage.catalog import CatalogItems, binary_rows, fixed_size_rows, object_array
from storage.location import lance_storage_options
from storage.runtime import usable_cpus

# segments of at least this many items get a graph: beside a 60,000-item graph, one query searched
# 1,000 more items exactly in as long as through their own graph (+10 us), 8,000 in +45 us against +16
# (real embeddings; the sum of the small segments counts, they are searched as one block)
ANN_MIN_ITEMS = 1_000
SEGMENTS = "segments"  # the store's folder of segments
# Lance's file format for segments: a release reads each segment whole when it opens, and 2.0 (stable,
# readable by every later Lance) read a 60,000-item Fashion-MNIST segment in 0.026 s against 0.051 s
# for the newer default (2.2, median of 10; /tmp/conv measurements in the README "A store on S3")
SEGMENT_FILE_FORMAT = "2.0"
# ef_search 32: 10,000 queries in 0.31 s with recall@10 0.989 vs exact on the real data (ef 48: 0.43 s, 0.995)
HNSW_M, HNSW_EF_CONSTRUCTION, HNSW_EF_SEARCH = 16, 200, 32
# queries per score matrix in exact search, chunks shared between the cores: 10,000 x 60,000 in 3.6 s
# (one TF matmul + top_k per 1,024 queries took 11 s); bounds the working memory to about
# 12 bytes x EXACT_CHUNK x items per core (the scores and argpartition's int64 indices)
EXACT_CHUNK = 256


def build_hnsw(embeddings: np.ndarray, path: Path, threads: int | None = None) -> None:
    import hnswlib

    index = hnswlib.Index(space="ip", dim=embeddings.shape[1])
    index.init_index(max_elements=len(embeddings), ef_construction=HNSW_EF_CONSTRUCTION, M=HNSW_M,
                     random_seed=0)
    index.set_num_threads(threads or usable_cpus())
    index.add_items(np.asarray(embeddings, dtype=np.float32), np.arange(len(embeddings)))
    index.save_index(str(path))


def load_hnsw(path: Path, dim: int, count: int):
    import hnswlib

    index = hnswlib.Index(space="ip", dim=dim)
    index.load_index(str(path), max_elements=count)
    index.set_ef(HNSW_EF_SEARCH)
    return index


def _exact_numpy(queries: np.ndarray, base: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    scores = queries @ base.T
    part = np.argpartition(scores, scores.shape[1] - k, axis=1)[:, -k:]
    top = np.take_along_axis(scores, part, axis=1)
    order = np.argsort(-top, axis=1, kind="stable")
    return 1.0 - np.take_along_axis(top, order, axis=1), np.take_along_axis(part, order, axis=1)


def exact_knn(queries: np.ndarray, base: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Cosine distances (1 - dot of unit vectors) to the k nearest rows of `base`, closest first."""
    queries = np.ascontiguousarray(queries, dtype=np.float32)
    base = np.ascontiguousarray(base, dtype=np.float32)
    k = max(1, min(int(k), len(base)))
    if len(queries) == 0 or len(base) == 0:
        return np.zeros((len(queries), 0), np.float32), np.zeros((len(queries), 0), np.int64)
    starts = range(0, len(queries), EXACT_CHUNK)
    if len(starts) == 1:  # e.g. one query from the page: no pool to start
        parts = [_exact_numpy(queries, base, k)]
    else:
        with ThreadPoolExecutor(max_workers=min(len(starts), usable_cpus())) as pool:  # BLAS, argpartition drop the GIL
            parts = list(pool.map(lambda start: _exact_numpy(queries[start: start + EXACT_CHUNK], base, k), starts))
    distances, rows = np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts])
    return distances.astype(np.float32), rows.astype(np.int64)


@dataclass
class Segment:
    offset: int  # row of the segment's first item in the release's concatenated arrays
    embeddings: np.ndarray
    graph: object | None  # hnswlib.Index, or None for exact search


class SegmentedIndex:
    """k-NN over all segments of a release: each graph segment searched by its graph, every segment
    without one searched together as one exact block (copied into one array when the release loads),
    then merged. So the cost of a query grows with the number of graphs, not with the number of small
    segments the drop folder added: one 10-item segment searched on its own added about 30 us to a
    55 us graph query (measured on 60,000 random unit vectors), the block adds about 10 us."""

    def __init__(self, segments: list[Segment]):
        self.segments = [s for s in segments if len(s.embeddings)]
        self.graphs = [s for s in self.segments if s.graph is not None]
        exact = [s for s in self.segments if s.graph is None]
        self.exact_embeddings = (np.ascontiguousarray(np.concatenate([s.embeddings for s in exact]), np.float32)
                                 if exact else None)
        self.exact_rows = (np.concatenate([np.arange(len(s.embeddings)) + s.offset for s in exact])
                           if exact else None)

    def nearest(self, queries: np.ndarray, k: int, exact: bool = False) -> tuple[np.ndarray, np.ndarray]:
        queries = np.ascontiguousarray(queries, dtype=np.float32)
        if exact:
            return self._merge([exact_knn(queries, s.embeddings, min(k, len(s.embeddings))) for s in self.segments],
                               [s.offset for s in self.segments], k)
        if len(queries) == 1:
            return self._nearest_one(queries[0], k)
        found, offsets = [], []
        for segment in self.graphs:
            rows, distances = segment.graph.knn_query(queries, k=min(k, len(segment.embeddings)))
            found.append((distances.astype(np.float32), rows.astype(np.int64)))
            offsets.append(segment.offset)
        if self.exact_embeddings is not None:
            distances, rows = exact_knn(queries, self.exact_embeddings, min(k, len(self.exact_embeddings)))
            found.append((distances, self.exact_rows[rows]))
            offsets.append(0)
        return self._merge(found, offsets, k)

    @staticmethod
    def _merge(found: list[tuple[np.ndarray, np.ndarray]], offsets: list[int], k: int):
        if len(found) == 1:
            return found[0][0][:, :k], found[0][1][:, :k] + offsets[0]
        distances = np.concatenate([d for d, _ in found], axis=1)
        rows = np.concatenate([r + offset for (_, r), offset in zip(found, offsets)], axis=1)
        order = np.argsort(distances, axis=1, kind="stable")[:, :k]
        return np.take_along_axis(distances, order, axis=1), np.take_along_axis(rows, order, axis=1)

    def _nearest_one(self, query: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """One query (the page, the CLI) on one-dimensional arrays: the general path's axis-wise
        concatenate / argsort / take_along_axis cost more than the search of a small block."""
        found_d, found_r = [], []
        for segment in self.graphs:
            rows, distances = segment.graph.knn_query(query[None], k=min(k, len(segment.embeddings)))
            found_d.append(distances[0])
            found_r.append(rows[0].astype(np.int64) + segment.offset)
        if self.exact_embeddings is not None:
            distances = 1.0 - self.exact_embeddings @ query
            top = np.argpartition(distances, k - 1)[:k] if k < len(distances) else slice(None)
            found_d.append(distances[top])
            found_r.append(self.exact_rows[top])
        distances, rows = (found_d[0], found_r[0]) if len(found_d) == 1 else (np.concatenate(found_d),
                                                                              np.concatenate(found_r))
        order = np.argsort(distances, kind="stable")[:k]
        return distances[order][None].astype(np.float32), rows[order][None]


def segment_key(name: str) -> str:
    """Where segment `name`'s Lance dataset is in the store."""
    return f"{SEGMENTS}/{name}.lance"


def graph_key(name: str) -> str:
    """Where segment `name`'s HNSW graph is in the store (large segments only)."""
    return f"{SEGMENTS}/{name}.hnsw"


def segment_table(items: CatalogItems, embeddings: np.ndarray) -> pa.Table:
    embeddings = np.ascontiguousarray(embeddings, np.float32)
    dim = embeddings.shape[1] if embeddings.ndim == 2 else 0
    return pa.table({
        "item_id": pa.array(items.item_ids, pa.int64()),
        "label": pa.array(items.labels, pa.int16()),
        "path": [str(path) for path in items.paths],
        "source": [str(source) for source in items.sources],
        "image": pa.array([np.ascontiguousarray(image, np.uint8).tobytes() for image in items.images], pa.large_binary()),
        "display": pa.array([bytes(display) for display in items.displays], pa.large_binary()),
        "metadata": [str(text) for text in items.metadata],
        "embedding": pa.FixedSizeListArray.from_arrays(pa.array(embeddings.ravel(), pa.float32()), dim),
    })


def write_segment(store, name: str, items: CatalogItems, embeddings: np.ndarray, scratch: Path,
                  build_graph: bool = True) -> dict[str, Any]:
    """A new segment in `store`: its Lance dataset (one commit) and, when it is large (and `build_graph`),
    its graph, built in the local folder `scratch` and then put in place. Returns its record for the
    release manifest."""
    import lance

    dataset = lance.write_dataset(segment_table(items, embeddings), store.url(segment_key(name)), mode="create",
                                  data_storage_version=SEGMENT_FILE_FORMAT,
                                  storage_options=lance_storage_options(store.uri))
    record = {"name": name, "version": int(dataset.version), "rows": len(items)}
    return add_graph(store, record, embeddings, scratch) if build_graph else record


def add_graph(store, record: dict[str, Any], embeddings: np.ndarray, scratch: Path) -> dict[str, Any]:
    """A large segment's HNSW graph, built in the local folder `scratch` and put beside its dataset;
    `record` (the segment's manifest record) with its size. Small segments are left without one."""
    if len(embeddings) >= ANN_MIN_ITEMS:
        local = Path(scratch) / f"{record['name']}.hnsw"
        build_hnsw(np.asarray(embeddings, np.float32), local)
        record["graph_bytes"] = local.stat().st_size
        store.put_file(local, graph_key(record["name"]))
    return record


def read_segment(store, record: dict[str, Any], image_shape: tuple[int, ...]) -> tuple[CatalogItems, np.ndarray]:
    """A segment's items (images in `image_shape`) and embeddings (float32), at the version its record names."""
    import lance

    table = lance.dataset(store.url(segment_key(record["name"])), version=int(record["version"]),
                          storage_options=lance_storage_options(store.uri)).to_table()
    count = len(table)
    images = fixed_size_rows(table.column("image"), int(np.prod(image_shape)))
    vectors = table.column("embedding").combine_chunks()
    dim = vectors.type.list_size
    embeddings = vectors.values.to_numpy(zero_copy_only=False).reshape(count, dim) if count else np.zeros((0, dim))
    metadata = table.column("metadata").to_pylist()
    items = CatalogItems(item_ids=table.column("item_id").to_numpy().astype(np.int64),
                         labels=table.column("label").to_numpy().astype(np.int16),
                         images=images.reshape(count, *image_shape),
                         paths=np.array(table.column("path").to_pylist(), dtype=str),
                         sources=np.array(table.column("source").to_pylist(), dtype=str),
                         displays=object_array(binary_rows(table.column("display"))),
                         metadata=np.array(metadata, dtype=str) if any(metadata) else np.full(count, "", dtype="<U1"))
    return items, np.ascontiguousarray(embeddings, np.float32)


def load_segments(store, records: list[dict[str, Any]], image_shape: tuple[int, ...]
                  ) -> tuple[CatalogItems, np.ndarray, SegmentedIndex]:
    """The segments of `records`, in order, as one catalogue of items, one embedding matrix, and the
    index that searches them (rows of both are the index's rows; each segment's embeddings are a view
    of the matrix's rows, so the release holds them once)."""
    parts = [read_segment(store, record, image_shape) for record in records]
    embeddings = np.ascontiguousarray(np.concatenate([part for _, part in parts]), np.float32)
    segments, offset = [], 0
    for record, (_, part) in zip(records, parts):
        rows = embeddings[offset: offset + len(part)]
        graph = (load_hnsw(store.local_file(graph_key(record["name"]), record["graph_bytes"]), rows.shape[1], len(rows))
                 if "graph_bytes" in record else None)
        segments.append(Segment(offset, rows, graph))
        offset += len(part)
    return CatalogItems.concatenate([items for items, _ in parts]), embeddings, SegmentedIndex(segments)



def write_segment_fragments(url: str, items: CatalogItems, embeddings: np.ndarray) -> list:
    """One shard of the segment whose dataset is at `url` (store.url(segment_key(name))): its rows written
    as Lance fragments that no version holds yet; `commit_segment` commits every shard's at once
    (tasks/shards.py). Runs where the shard runs: the store's credentials come from that machine."""
    from lance.fragment import write_fragments

    return write_fragments(segment_table(items, embeddings), url, mode="create",
                           data_storage_version=SEGMENT_FILE_FORMAT, storage_options=lance_storage_options(url))


def commit_segment(store, name: str, fragments: list, schema: pa.Schema, scratch: Path,
                   build_graph: bool = True) -> tuple[dict[str, Any], np.ndarray]:
    """Segment `name` made of the shards' fragments, in order, in one commit, and its graph when it is
    large (`add_graph`, from its embeddings read back): the segment `write_segment` would have written.
    Returns its record for the release manifest and its embeddings."""
    import lance

    overwrite = lance.LanceOperation.Overwrite(schema, fragments)  # a new dataset: its first version
    dataset = lance.LanceDataset.commit(store.url(segment_key(name)), overwrite,
                                        storage_options=lance_storage_options(store.uri))
    vectors = dataset.to_table(columns=["embedding"]).column("embedding").combine_chunks()
    embeddings = np.ascontiguousarray(vectors.values.to_numpy(zero_copy_only=False).reshape(len(vectors), -1),
                                      np.float32)
    record = {"name": name, "version": int(dataset.version), "rows": len(embeddings)}
    return (add_graph(store, record, embeddings, scratch) if build_graph else record), embeddings
