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
merges, so adding items never rebuilds the big graph. `exact_knn` is the brute-force reference used by
evaluation and to check the graph's recall.

Search runs in memory, a segment read whole when its release opens, unless the segment would take
more than `in_memory_limit()` bytes in memory (IN_MEMORY_ROW_BYTES per item besides its pixels and
display copy): such a segment is written with Lance's own vector index (LANCE_INDEX_TYPE) instead of a
graph, searched through it, and its pixels, display copies and embeddings are read on demand
(OnDemandColumn) for the rows an answer shows; only its small columns (ids, labels, paths, sources,
metadata) are read when the release opens.
"""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa

from storage.catalog import CatalogItems, binary_rows, fixed_size_rows, object_array
from storage.integrity import CHECKSUMS, GRAPH_CHECKSUM, checksum_file, dataset_checksums, verified_dataset_url
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
# HNSW graphs: M links per node; the build and search widths grow with the graph (hnsw_widths). Measured by
# benchmarks/scale.py (Fashion-MNIST and augmented copies, 1,000 test queries, recall@10 against exact):
# ef_search 32 reaches 0.990 at 60,000 items, 48 0.995 at 250,000, 64 0.991 at 1,000,000; building
# 1,000,000 with ef_construction 100 took 50 s against 99 s with 200 (recall at ef_search 64: 0.991 / 0.995)
HNSW_M = 16
HNSW_WIDTHS = ((200_000, 200, 32), (500_000, 200, 48), (None, 100, 64))  # (below n items, ef_construction, ef_search)
# queries per score matrix in exact search, chunks shared between the cores: 10,000 x 60,000 in 3.6 s
# (one TF matmul + top_k per 1,024 queries took 11 s); bounds the working memory to about
# 12 bytes x EXACT_CHUNK x items per core (the scores and argpartition's int64 indices)
EXACT_CHUNK = 256
# a segment read whole holds about this many bytes per item besides its pixels and display copy (the
# embedding, its copy in the graph and the graph's links, path, source, metadata): opening a 480,000-item
# Fashion-MNIST segment added 1,597 MiB, 3,488 bytes per item, 784 of them pixels (benchmarks/lance_index.py)
IN_MEMORY_ROW_BYTES = 2_700
# segments that would take more than this in memory are searched through Lance's index, read on demand:
# 4 GiB is about 1.2 million Fashion-MNIST items, or 170,000 photos at 64 px with their display copies.
# Past it a query costs 3.5-5 ms instead of 0.05 ms, but opening costs 0.39 s instead of 5.8 s and 161 MiB
# instead of 1,597 at 480,000 items (benchmarks/lance_index.py); FASHION_SIM_IN_MEMORY_BYTES overrides it
IN_MEMORY_MAX_BYTES = 4 << 30
IN_MEMORY_LIMIT_VARIABLE = "FASHION_SIM_IN_MEMORY_BYTES"
# Lance's index for those: IVF partitions each holding an HNSW graph over 8-bit scalar-quantised vectors;
# a query probes LANCE_NPROBES partitions and re-ranks LANCE_REFINE_FACTOR x k candidates on the exact
# vectors. 480,000 Fashion-MNIST embeddings and perturbed copies: recall@10 0.995 at 5.2 ms a query
# (benchmarks/lance_index.py); on 300,000 IVF_PQ with the same probes and refinement reached 0.913
# against 0.998 for this index
LANCE_INDEX_TYPE, LANCE_NPROBES, LANCE_REFINE_FACTOR = "IVF_HNSW_SQ", 16, 4
# fewer items than this are kept in memory whatever the limit: Lance's partitions and quantiser are
# trained on the segment's vectors (and a drop folder's few fresh items are searched exactly)
LANCE_MIN_ROWS = 256


def hnsw_widths(count: int) -> tuple[int, int]:
    """ef_construction and ef_search for a graph of `count` items (HNSW_WIDTHS)."""
    for below, construction, search in HNSW_WIDTHS:
        if below is None or count < below:
            return construction, search
    raise AssertionError("HNSW_WIDTHS ends with an open size")


def build_hnsw(embeddings: np.ndarray, path: Path, threads: int | None = None) -> None:
    import hnswlib

    index = hnswlib.Index(space="ip", dim=embeddings.shape[1])
    index.init_index(max_elements=len(embeddings), ef_construction=hnsw_widths(len(embeddings))[0], M=HNSW_M,
                     random_seed=0)
    index.set_num_threads(threads or usable_cpus())
    index.add_items(np.asarray(embeddings, dtype=np.float32), np.arange(len(embeddings)))
    index.save_index(str(path))


def load_hnsw(path: Path, dim: int, count: int):
    import hnswlib

    index = hnswlib.Index(space="ip", dim=dim)
    index.load_index(str(path), max_elements=count)
    index.set_ef(hnsw_widths(count)[1])
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


def in_memory_limit() -> int:
    """Bytes a segment may take in memory before it is searched through Lance's index instead."""
    return int(os.environ.get(IN_MEMORY_LIMIT_VARIABLE) or IN_MEMORY_MAX_BYTES)


def in_memory_bytes(items: CatalogItems) -> int:
    """About what `items` take in memory once their segment is loaded whole (see IN_MEMORY_ROW_BYTES)."""
    return int(items.images.nbytes) + sum(len(display) for display in items.displays) + IN_MEMORY_ROW_BYTES * len(items)


def lance_partitions(rows: int) -> int:
    """IVF partitions for a segment of `rows` items: half the square root (273 for 300,000)."""
    return max(1, round(rows ** 0.5 / 2))


class OnDemandColumn:
    """One column of a segment read from its Lance dataset for the rows asked, never whole: `take`
    returns them as an array (images: uint8 rows of `row_shape`, embeddings: float32, displays: bytes)."""

    def __init__(self, dataset, column: str, length: int, row_shape: tuple[int, ...] = ()):
        self.dataset, self.column, self.length, self.row_shape = dataset, column, length, row_shape

    def take(self, rows: np.ndarray) -> np.ndarray:
        values = self.dataset.take(np.asarray(rows, np.int64), columns=[self.column]).column(self.column)
        if self.column == "display":
            return object_array(binary_rows(values))
        if self.column == "embedding":
            return vector_rows(values)
        size = int(np.prod(self.row_shape))
        return np.asarray(fixed_size_rows(values, size)).reshape(len(rows), *self.row_shape)


class Column:
    """A release-wide column over its segments: each part an in-memory array or an OnDemandColumn.
    Indexed like an array (a row, a slice, indices or a mask); only the rows asked are read."""

    def __init__(self, parts: list[np.ndarray | OnDemandColumn]):
        self.parts = parts
        self.starts = np.cumsum([0] + [len(part) if isinstance(part, np.ndarray) else part.length for part in parts])

    def __len__(self) -> int:
        return int(self.starts[-1])

    def __getitem__(self, key):
        if isinstance(key, (int, np.integer)):
            row = int(key) + len(self) if key < 0 else int(key)
            if not 0 <= row < len(self):
                raise IndexError(key)
            return self.take(np.array([row]))[0]
        return self.take(np.arange(len(self))[key])

    def __array__(self, dtype=None, copy=None):
        values = self.take(np.arange(len(self)))
        return values if dtype is None else values.astype(dtype)

    def take(self, rows: np.ndarray) -> np.ndarray:
        rows = np.asarray(rows, np.int64).reshape(-1)
        owner = np.searchsorted(self.starts, rows, side="right") - 1
        pieces, order = [], []
        for part_index in np.unique(owner):
            mine = np.flatnonzero(owner == part_index)
            local = rows[mine] - self.starts[part_index]
            part = self.parts[part_index]
            pieces.append(part[local] if isinstance(part, np.ndarray) else part.take(local))
            order.append(mine)
        if not pieces:
            return self.parts[0][:0] if isinstance(self.parts[0], np.ndarray) else self.parts[0].take(rows)
        values = np.concatenate(pieces) if len(pieces) > 1 else pieces[0]
        positions = np.concatenate(order)
        if len(pieces) == 1 and np.array_equal(positions, np.arange(len(rows))):
            return values
        result = np.empty_like(values)
        result[positions] = values
        return result


class LanceSearch:
    """Nearest neighbours in one segment through its Lance vector index (or exactly, on request),
    as rows of the segment: Lance answers with row addresses (fragment id, offset), mapped back here."""

    def __init__(self, dataset):
        self.dataset = dataset
        fragments = sorted(dataset.get_fragments(), key=lambda fragment: fragment.fragment_id)
        counts = [fragment.metadata.physical_rows for fragment in fragments]
        self.fragment_ids = np.array([fragment.fragment_id for fragment in fragments], np.int64)
        self.fragment_starts = np.cumsum([0] + counts[:-1]).astype(np.int64)

    def search(self, queries: np.ndarray, k: int, exact: bool = False, label: int | None = None
               ) -> tuple[np.ndarray, np.ndarray]:
        """Distances and rows (queries, k), padded with inf and -1 where fewer than k are found."""
        distances = np.full((len(queries), k), np.inf, np.float32)
        rows = np.full((len(queries), k), -1, np.int64)
        for number, query in enumerate(queries):
            nearest = {"column": "embedding", "q": query, "k": k, "metric": "cosine"}
            nearest.update({"use_index": False} if exact else {"nprobes": LANCE_NPROBES,
                                                                "refine_factor": LANCE_REFINE_FACTOR})
            found = self.dataset.to_table(columns=["_distance"], with_row_address=True, nearest=nearest, prefilter=True,
                                          filter=None if label is None else f"label = {int(label)}",
                                          disable_scoring_autoprojection=True)
            addresses = found.column("_rowaddr").to_numpy().astype(np.int64)
            fragment = np.searchsorted(self.fragment_ids, addresses >> 32)
            rows[number, : len(found)] = self.fragment_starts[fragment] + (addresses & 0xFFFFFFFF)
            distances[number, : len(found)] = found.column("_distance").to_numpy()
        return distances, rows


@dataclass
class Segment:
    offset: int  # row of the segment's first item in the release's concatenated arrays
    embeddings: np.ndarray | None  # None for a segment searched through Lance (`lance`)
    graph: object | None  # hnswlib.Index, or None for exact search
    rows: int = 0
    lance: LanceSearch | None = None

    def __post_init__(self):
        self.rows = self.rows or (0 if self.embeddings is None else len(self.embeddings))


class SegmentedIndex:
    """k-NN over all segments of a release: each graph segment searched by its graph, every segment
    without one searched together as one exact block (copied into one array when the release loads),
    each segment read on demand through its Lance index, then merged. So the cost of a query grows with
    the number of graphs, not with the number of small segments the drop folder added: one 10-item
    segment searched on its own added about 30 us to a 55 us graph query (measured on 60,000 random unit
    vectors), the block adds about 10 us. `labels` (the release's, row by row) restrict a search to a class."""

    def __init__(self, segments: list[Segment], labels: np.ndarray | None = None):
        self.segments = [s for s in segments if s.rows]
        self.labels = labels
        self.on_demand = [s for s in self.segments if s.lance is not None]
        self.graphs = [s for s in self.segments if s.graph is not None]
        exact = [s for s in self.segments if s.graph is None and s.lance is None]
        self.exact_embeddings = (np.ascontiguousarray(np.concatenate([s.embeddings for s in exact]), np.float32)
                                 if exact else None)
        self.exact_rows = (np.concatenate([np.arange(s.rows) + s.offset for s in exact])
                           if exact else None)

    def nearest(self, queries: np.ndarray, k: int, exact: bool = False, label: int | None = None
                ) -> tuple[np.ndarray, np.ndarray]:
        """Distances and rows (queries, k) of the k nearest items, among all or among class `label`
        (exact, but for segments searched through Lance, filtered there), closest first."""
        queries = np.ascontiguousarray(queries, dtype=np.float32)
        if label is not None:
            return self._nearest_in_class(queries, k, label)
        if exact:
            return self._merge([s.lance.search(queries, min(k, s.rows), exact=True) if s.lance else
                                exact_knn(queries, s.embeddings, min(k, s.rows)) for s in self.segments],
                               [s.offset for s in self.segments], k)
        if len(queries) == 1 and not self.on_demand:
            return self._nearest_one(queries[0], k)
        found, offsets = [], []
        for segment in self.graphs:
            rows, distances = segment.graph.knn_query(queries, k=min(k, segment.rows))
            found.append((distances.astype(np.float32), rows.astype(np.int64)))
            offsets.append(segment.offset)
        for segment in self.on_demand:
            found.append(segment.lance.search(queries, min(k, segment.rows)))
            offsets.append(segment.offset)
        if self.exact_embeddings is not None:
            distances, rows = exact_knn(queries, self.exact_embeddings, min(k, len(self.exact_embeddings)))
            found.append((distances, self.exact_rows[rows]))
            offsets.append(0)
        return self._merge(found, offsets, k)

    def _nearest_in_class(self, queries: np.ndarray, k: int, label: int) -> tuple[np.ndarray, np.ndarray]:
        found, offsets = [], []
        for segment in self.segments:
            if segment.lance is not None:
                found.append(segment.lance.search(queries, k, label=label))
            else:
                members = np.flatnonzero(self.labels[segment.offset: segment.offset + segment.rows] == label)
                if not len(members):
                    continue
                distances, rows = exact_knn(queries, segment.embeddings[members], min(k, len(members)))
                found.append((distances, members[rows]))
            offsets.append(segment.offset)
        if not found:
            return np.zeros((len(queries), 0), np.float32), np.zeros((len(queries), 0), np.int64)
        return self._merge(found, offsets, k)

    def _merge(self, found: list[tuple[np.ndarray, np.ndarray]], offsets: list[int], k: int):
        if len(found) == 1:
            distances, rows = found[0][0][:, :k], found[0][1][:, :k] + offsets[0]
        else:
            distances = np.concatenate([d for d, _ in found], axis=1)
            rows = np.concatenate([r + offset for (_, r), offset in zip(found, offsets)], axis=1)
            order = np.argsort(distances, axis=1, kind="stable")[:, :k]
            distances, rows = np.take_along_axis(distances, order, axis=1), np.take_along_axis(rows, order, axis=1)
        if self.on_demand:  # Lance pads what it did not find (a class with fewer than k items) with inf
            found_all = int(np.isfinite(distances).sum(axis=1).min()) if len(distances) else 0
            distances, rows = distances[:, :found_all], rows[:, :found_all]
        return distances, rows

    def _nearest_one(self, query: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """One query (the page, the CLI) on one-dimensional arrays: the general path's axis-wise
        concatenate / argsort / take_along_axis cost more than the search of a small block."""
        found_d, found_r = [], []
        for segment in self.graphs:
            rows, distances = segment.graph.knn_query(query[None], k=min(k, segment.rows))
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


def vector_rows(column: pa.ChunkedArray | pa.Array) -> np.ndarray:
    """A segment's embedding column (fixed-size lists of float32) as a contiguous float32 (n, d) array."""
    vectors = column.combine_chunks() if isinstance(column, pa.ChunkedArray) else column
    values = vectors.values.to_numpy(zero_copy_only=False)
    return np.ascontiguousarray(values.reshape(len(vectors), vectors.type.list_size), np.float32)


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
    its index: an HNSW graph built in the local folder `scratch` and then put in place, or, past
    `in_memory_limit()`, Lance's vector index in the dataset (searched on demand). Returns its record for
    the release manifest, with the checksums of its files (storage/integrity.py)."""
    import lance

    dataset = lance.write_dataset(segment_table(items, embeddings), store.url(segment_key(name)), mode="create",
                                  data_storage_version=SEGMENT_FILE_FORMAT,
                                  storage_options=lance_storage_options(store.uri))
    record = {"name": name, "version": int(dataset.version), "rows": len(items)}
    return index_segment(store, dataset, record, items, embeddings, scratch, build_graph)


def index_segment(store, dataset, record: dict[str, Any], items: CatalogItems, embeddings: np.ndarray, scratch: Path,
                  build_graph: bool = True) -> dict[str, Any]:
    """A new segment's index (with `build_graph`), then the checksums of its files; `record` (its manifest
    record) completed. Past `in_memory_limit()`, Lance's vector index in the dataset (a new version,
    searched on demand); else an HNSW graph for a large segment (`add_graph`); small ones are left without."""
    if build_graph and len(items) >= LANCE_MIN_ROWS and in_memory_bytes(items) > in_memory_limit():
        partitions = lance_partitions(len(items))
        dataset = dataset.create_index("embedding", LANCE_INDEX_TYPE, metric="cosine", num_partitions=partitions)
        record.update(version=int(dataset.version), search="lance",
                      index={"type": LANCE_INDEX_TYPE, "partitions": partitions, "nprobes": LANCE_NPROBES,
                             "refine_factor": LANCE_REFINE_FACTOR})
    elif build_graph:
        add_graph(store, record, embeddings, scratch)
    record[CHECKSUMS] = dataset_checksums(store, segment_key(record["name"]), record["version"])
    return record


def add_graph(store, record: dict[str, Any], embeddings: np.ndarray, scratch: Path) -> dict[str, Any]:
    """A large segment's HNSW graph, built in the local folder `scratch` and put beside its dataset;
    `record` (the segment's manifest record) with its size and checksum. Small segments are left without one."""
    if len(embeddings) >= ANN_MIN_ITEMS:
        local = Path(scratch) / f"{record['name']}.hnsw"
        build_hnsw(np.asarray(embeddings, np.float32), local)
        construction, search = hnsw_widths(len(embeddings))
        record.update(graph_bytes=local.stat().st_size,
                      index={"type": "HNSW", "M": HNSW_M, "ef_construction": construction, "ef_search": search})
        record[GRAPH_CHECKSUM] = checksum_file(local)
        store.put_file(local, graph_key(record["name"]))
    return record


def is_on_demand(record: dict[str, Any]) -> bool:
    """True for a segment searched through Lance's index and read on demand (see write_segment)."""
    return record.get("search") == "lance"


def open_segment(store, record: dict[str, Any], whole: bool = True):
    """A segment's Lance dataset at the version its record names, the files its open reads checked
    first against the record's checksums (storage/integrity.py; DamagedFileError names the first that
    does not match): to be read `whole`, every file of the scan (on an object store, their checked local
    copy), else (on demand) those read whole, its version manifest and deletion files."""
    import lance

    url = verified_dataset_url(store, segment_key(record["name"]), record.get(CHECKSUMS, {}), whole)
    return lance.dataset(url, version=int(record["version"]), storage_options=lance_storage_options(url))


# what a release reads of an on-demand segment when it opens: everything but pixels, displays, embeddings
SMALL_COLUMNS = ("item_id", "label", "path", "source", "metadata")


def small_columns(table: pa.Table) -> dict[str, np.ndarray]:
    """CatalogItems' small columns (ids, labels, paths, sources, metadata) of a segment table."""
    metadata = table.column("metadata").to_pylist()
    return {"item_ids": table.column("item_id").to_numpy().astype(np.int64),
            "labels": table.column("label").to_numpy().astype(np.int16),
            "paths": np.array(table.column("path").to_pylist(), dtype=str),
            "sources": np.array(table.column("source").to_pylist(), dtype=str),
            "metadata": np.array(metadata, dtype=str) if any(metadata) else np.full(len(table), "", dtype="<U1")}


def read_segment(store, record: dict[str, Any], image_shape: tuple[int, ...]) -> tuple[CatalogItems, np.ndarray]:
    """A segment's items (images in `image_shape`) and embeddings (float32), at the version its record
    names, read whole."""
    table = open_segment(store, record).to_table()
    count = len(table)
    images = fixed_size_rows(table.column("image"), int(np.prod(image_shape)))
    items = CatalogItems(images=images.reshape(count, *image_shape),
                         displays=object_array(binary_rows(table.column("display"))), **small_columns(table))
    return items, vector_rows(table.column("embedding"))


def on_demand_segment(store, record: dict[str, Any], image_shape: tuple[int, ...]
                      ) -> tuple[CatalogItems, OnDemandColumn, LanceSearch]:
    """A segment searched through Lance: its small columns read now, its pixels, display copies and
    embeddings when asked (OnDemandColumn), and its search."""
    dataset = open_segment(store, record, whole=False)
    table = dataset.to_table(columns=list(SMALL_COLUMNS))
    count = len(table)
    items = CatalogItems(images=OnDemandColumn(dataset, "image", count, image_shape),
                         displays=OnDemandColumn(dataset, "display", count), **small_columns(table))
    return items, OnDemandColumn(dataset, "embedding", count), LanceSearch(dataset)


def load_segments(store, records: list[dict[str, Any]], image_shape: tuple[int, ...]
                  ) -> tuple[CatalogItems, np.ndarray | Column, SegmentedIndex]:
    """The segments of `records`, in order, as one catalogue of items, one embedding matrix, and the
    index that searches them (rows of both are the index's rows; each segment's embeddings are a view
    of the matrix's rows, so the release holds them once). With an on-demand segment among them, the
    pixels, display copies and embeddings are Columns that read its rows when asked."""
    parts = [on_demand_segment(store, record, image_shape) if is_on_demand(record)
             else read_segment(store, record, image_shape) for record in records]
    if not any(is_on_demand(record) for record in records):
        embeddings = np.ascontiguousarray(np.concatenate([part[1] for part in parts]), np.float32)
    else:
        embeddings = Column([part[1] for part in parts])
    segments, offset = [], 0
    for record, part in zip(records, parts):
        count = len(part[0])
        if is_on_demand(record):
            segments.append(Segment(offset, None, None, count, part[2]))
        else:
            rows = part[1] if isinstance(embeddings, Column) else embeddings[offset: offset + count]
            graph = (load_hnsw(store.local_file(graph_key(record["name"]), record["graph_bytes"], record.get(GRAPH_CHECKSUM)),
                               rows.shape[1], count) if "graph_bytes" in record else None)
            segments.append(Segment(offset, rows, graph))
        offset += count
    items = release_items([part[0] for part in parts])
    return items, embeddings, SegmentedIndex(segments, items.labels)


def release_items(parts: list[CatalogItems]) -> CatalogItems:
    """Segments' items as one CatalogItems: concatenated, but for on-demand pixels and display copies,
    which stay Columns over the parts."""
    if not any(isinstance(part.images, OnDemandColumn) for part in parts):
        return CatalogItems.concatenate(parts)
    joined = {column: np.concatenate([getattr(part, column) for part in parts])
              for column in CatalogItems.COLUMNS if column not in ("images", "displays")}
    return CatalogItems(images=Column([part.images for part in parts]),
                        displays=Column([part.displays for part in parts]), **joined)


def write_segment_fragments(url: str, items: CatalogItems, embeddings: np.ndarray) -> list:
    """One shard of the segment whose dataset is at `url` (store.url(segment_key(name))): its rows written
    as Lance fragments that no version holds yet; `commit_segment` commits every shard's at once
    (tasks/shards.py). Runs where the shard runs: the store's credentials come from that machine."""
    from lance.fragment import write_fragments

    return write_fragments(segment_table(items, embeddings), url, mode="create",
                           data_storage_version=SEGMENT_FILE_FORMAT, storage_options=lance_storage_options(url))


def commit_segment(store, name: str, fragments: list, schema: pa.Schema, scratch: Path, items: CatalogItems,
                   build_graph: bool = True) -> tuple[dict[str, Any], np.ndarray]:
    """Segment `name` of `items`, made of the shards' fragments, in order, in one commit, and its index
    (`index_segment`, from its embeddings read back): the segment `write_segment` would have written.
    Returns its record for the release manifest and its embeddings."""
    import lance

    overwrite = lance.LanceOperation.Overwrite(schema, fragments)  # a new dataset: its first version
    dataset = lance.LanceDataset.commit(store.url(segment_key(name)), overwrite,
                                        storage_options=lance_storage_options(store.uri))
    embeddings = vector_rows(dataset.to_table(columns=["embedding"]).column("embedding"))
    record = {"name": name, "version": int(dataset.version), "rows": len(embeddings)}
    return index_segment(store, dataset, record, items, embeddings, scratch, build_graph), embeddings
