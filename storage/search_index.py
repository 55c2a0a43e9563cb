"""The index: writing a release's segments, loading them, and nearest-neighbour search over them.

A segment is a folder of arrays (SEGMENT_ARRAYS: the items and their embeddings) and, for segments of
ANN_MIN_ITEMS or more, an HNSW graph; `write_segment` adds one, `load_segments` opens a release's
segments as one CatalogItems, one embedding matrix and a SegmentedIndex whose `nearest` searches them.
storage/releases.py decides which segments a release holds and delegates the rest here.

Large segments (a full pipeline or retrain embeds the whole catalogue into one) carry an HNSW graph
(hnswlib, saved beside the segment's arrays as hnsw.bin: a plain binary format, nothing unpickled)
built once when the segment is written. Small segments (items added by the drop folder) are searched
exactly. A query searches every segment and merges, so adding items never rebuilds the big graph.
`exact_knn` is the brute-force reference used by evaluation and to check the graph's recall.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from storage.catalog import CatalogItems, object_array
from storage.runtime import usable_cpus

# segments of at least this many items get a graph: beside a 60,000-item graph, one query searched
# 1,000 more items exactly in as long as through their own graph (+10 us), 8,000 in +45 us against +16
# (real embeddings; the sum of the small segments counts, they are searched as one block)
ANN_MIN_ITEMS = 1_000
HNSW_FILE = "hnsw.bin"
SEGMENT_ARRAYS = ("embeddings", "item_ids", "labels", "images", "paths", "sources")  # <name>.npy each
# variable-length bytes per item, as <name>_bytes.npy (all of them, concatenated) + <name>_ends.npy (int64
# end offsets): display copies (JPEG) and metadata (UTF-8 JSON). Releases from before they existed lack them.
SEGMENT_BLOBS = ("displays", "metadata")
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


def write_segment(folder: Path, items: CatalogItems, embeddings: np.ndarray) -> None:
    """A new segment in `folder` (created): its arrays (never pickled) and, when it is large, its graph."""
    folder.mkdir()
    arrays = {"embeddings": np.asarray(embeddings, np.float32), "item_ids": items.item_ids, "labels": items.labels,
              "images": items.images, "paths": items.paths.astype(str), "sources": items.sources.astype(str)}
    for key, value in arrays.items():
        np.save(folder / f"{key}.npy", value, allow_pickle=False)
    _save_blobs(folder, "displays", [bytes(display) for display in items.displays])
    _save_blobs(folder, "metadata", [str(text).encode() for text in items.metadata])
    if len(items) >= ANN_MIN_ITEMS:
        build_hnsw(arrays["embeddings"], folder / HNSW_FILE)


def _save_blobs(folder: Path, name: str, blobs: list[bytes]) -> None:
    ends = np.cumsum([len(blob) for blob in blobs], dtype=np.int64)
    np.save(folder / f"{name}_bytes.npy", np.frombuffer(b"".join(blobs), np.uint8), allow_pickle=False)
    np.save(folder / f"{name}_ends.npy", ends, allow_pickle=False)


def _load_blobs(folder: Path, name: str, count: int) -> list[memoryview]:
    """The blobs as views of the memory-mapped file (a release's display copies are not read into
    memory until shown); empty ones for a segment written before it had them."""
    if not (folder / f"{name}_ends.npy").exists():
        return [memoryview(b"")] * count
    ends = np.load(folder / f"{name}_ends.npy", allow_pickle=False)
    if not len(ends) or ends[-1] == 0:  # none (Fashion-MNIST has no display copies): no view per item
        return [memoryview(b"")] * count
    data = np.load(folder / f"{name}_bytes.npy", mmap_mode="r", allow_pickle=False)
    starts = np.concatenate([[0], ends[:-1]]).astype(np.int64)
    return [memoryview(data[start:end]) for start, end in zip(starts, ends)]


def blob_files(segment: str) -> list[str]:
    """The blob files of a segment, relative to its release, that a release must list when it has them."""
    return [f"segments/{segment}/{name}_{part}.npy" for name in SEGMENT_BLOBS for part in ("bytes", "ends")]


def has_graph(folder: Path) -> bool:
    return (folder / HNSW_FILE).exists()


def segment_size(folder: Path) -> int:
    return len(np.load(folder / "item_ids.npy", mmap_mode="r"))


def read_segment(folder: Path) -> tuple[CatalogItems, np.ndarray]:
    """A segment's items and embeddings (float32)."""
    arrays = {name: np.load(folder / f"{name}.npy", allow_pickle=False) for name in SEGMENT_ARRAYS}
    count = len(arrays["item_ids"])
    displays = object_array(_load_blobs(folder, "displays", count))
    texts = _load_blobs(folder, "metadata", count)
    metadata = (np.array([bytes(text).decode() for text in texts], dtype=str) if any(texts) else
                np.full(count, "", dtype="<U1"))
    items = CatalogItems(item_ids=arrays["item_ids"], labels=arrays["labels"], images=arrays["images"],
                         paths=arrays["paths"], sources=arrays["sources"], displays=displays, metadata=metadata)
    return items, np.ascontiguousarray(arrays["embeddings"], np.float32)


def load_segments(folders: list[Path]) -> tuple[CatalogItems, np.ndarray, SegmentedIndex]:
    """The segments in `folders`, in order, as one catalogue of items, one embedding matrix, and the
    index that searches them (rows of both are the index's rows; each segment's embeddings are a view
    of the matrix's rows, so the release holds them once)."""
    parts = [read_segment(folder) for folder in folders]
    embeddings = np.ascontiguousarray(np.concatenate([part for _, part in parts]), np.float32)
    segments, offset = [], 0
    for folder, (_, part) in zip(folders, parts):
        rows = embeddings[offset: offset + len(part)]
        graph = load_hnsw(folder / HNSW_FILE, rows.shape[1], len(rows)) if has_graph(folder) else None
        segments.append(Segment(offset, rows, graph))
        offset += len(part)
    return CatalogItems.concatenate([items for items, _ in parts]), embeddings, SegmentedIndex(segments)
