"""`python -m storage.convert`: bring a data home written by an earlier version into today's format, once.

Earlier releases kept their segments inside each release folder as numpy arrays (segments/<name>/*.npy,
hard-linked between releases) and the catalogue in catalog.sqlite. Today every segment is a Lance
dataset shared by the releases that search it (storage/search_index.py). The conversion, under the
writer lock, for each release in the old format: writes each of its segments once as a Lance dataset
(and moves its HNSW graph beside it), then replaces its manifest with one in today's format (one
atomic write: a reader sees the old release or the new one), then removes the old segment folders.
Converted releases get the checksums of today's (storage/integrity.py), taken from their files as found.
It can be stopped at any moment and run again. The catalogue is rebuilt from the live release by
the next writer (catalog.sqlite is left as it is; delete it once you are satisfied).
"""

from __future__ import annotations

import argparse
import json
import shutil
from pathlib import Path
from typing import Any

import numpy as np

from storage.catalog import CatalogItems, object_array
from storage.dataset import FASHION_MNIST
from storage.embedder import EMBEDDER_FILE
from storage.home import DataHome
from storage.integrity import CHECKSUMS, GRAPH_CHECKSUM, checksum_file, seal
from storage.lock import writer_lock
from storage.releases import (MANIFEST, METRICS_FILE, MODEL_FILE, RELEASE_ID_PATTERN, RELEASES, STORE_FORMAT,
                              release_key)
from storage.runtime import add_verbose_flag, parse_command_line
from storage.search_index import graph_key, segment_key, write_segment

OLD_ARRAYS = ("embeddings", "item_ids", "labels", "images", "paths", "sources")  # <name>.npy each
OLD_GRAPH = "hnsw.bin"


def read_old_segment(folder: Path) -> tuple[CatalogItems, np.ndarray]:
    """A segment of the old format: arrays (never unpickled) and, when present, the blobs
    (<name>_bytes.npy + <name>_ends.npy) of display copies and metadata."""
    arrays = {name: np.load(folder / f"{name}.npy", allow_pickle=False) for name in OLD_ARRAYS}
    count = len(arrays["item_ids"])

    def blobs(name: str) -> list[bytes]:
        if not (folder / f"{name}_ends.npy").exists():
            return [b""] * count
        ends = np.load(folder / f"{name}_ends.npy", allow_pickle=False)
        data = np.load(folder / f"{name}_bytes.npy", allow_pickle=False).tobytes()
        starts = np.concatenate([[0], ends[:-1]]).astype(np.int64)
        return [data[start:end] for start, end in zip(starts, ends)]

    items = CatalogItems(item_ids=arrays["item_ids"], labels=arrays["labels"], images=arrays["images"],
                         paths=arrays["paths"], sources=arrays["sources"], displays=object_array(blobs("displays")),
                         metadata=np.array([text.decode() for text in blobs("metadata")], dtype=str))
    return items, arrays["embeddings"]


def is_old_manifest(manifest: Any, release_id: str) -> bool:
    return (isinstance(manifest, dict) and manifest.get("release_id") == release_id and "format" not in manifest
            and all(isinstance(name, str) for name in manifest.get("segments", [None])))


def convert_release(home: DataHome, release_id: str, converted: dict[str, dict[str, Any]]) -> bool:
    """Convert one release if it is in the old format; `converted` holds the segments done so far."""
    folder = home.releases / release_id
    manifest = json.loads((folder / MANIFEST).read_text())
    if not is_old_manifest(manifest, release_id):
        return False
    scratch = home.tmp / f"convert-{release_id}"
    scratch.mkdir(parents=True, exist_ok=True)
    for name in manifest["segments"]:
        if name not in converted:
            old = folder / "segments" / name
            home.store.delete(segment_key(name))  # a conversion stopped halfway through this one
            record = write_segment(home.store, name, *read_old_segment(old), scratch, build_graph=False)
            if (old / OLD_GRAPH).is_file():  # the graph built then serves as it is
                shutil.copyfile(old / OLD_GRAPH, scratch / OLD_GRAPH)
                record["graph_bytes"] = (scratch / OLD_GRAPH).stat().st_size
                record[GRAPH_CHECKSUM] = checksum_file(scratch / OLD_GRAPH)
                home.store.put_file(scratch / OLD_GRAPH, graph_key(name))
            converted[name] = record
    shutil.rmtree(scratch)
    segments = [converted[name] for name in manifest["segments"]]
    own = [name for name in (MODEL_FILE, EMBEDDER_FILE, METRICS_FILE) if (folder / name).is_file()]
    files = {release_key(release_id, name): (folder / name).stat().st_size for name in own}
    checksums = {release_key(release_id, name): checksum_file(folder / name) for name in own}
    for record in segments:
        if "graph_bytes" in record:
            files[graph_key(record["name"])] = record["graph_bytes"]
            checksums[graph_key(record["name"])] = record[GRAPH_CHECKSUM]
    manifest.update(format=STORE_FORMAT, segments=segments, model_release=release_id, files=files,
                    dataset=manifest.get("dataset") or FASHION_MNIST.as_dict(), **{CHECKSUMS: checksums})
    home.store.write_bytes(release_key(release_id, MANIFEST),
                           json.dumps(seal(manifest), indent=2, sort_keys=True).encode())
    shutil.rmtree(folder / "segments", ignore_errors=True)
    return True


def convert_home(home: DataHome) -> list[str]:
    """Convert every old-format release of `home`, oldest first; returns the ids converted."""
    done, converted = [], {}
    with writer_lock(home, holder="convert"):
        for release_id in home.store.list(RELEASES):
            if RELEASE_ID_PATTERN.match(release_id) and (home.releases / release_id / MANIFEST).is_file():
                if convert_release(home, release_id, converted):
                    done.append(release_id)
    return done


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m storage.convert", description=__doc__.split("\n\n")[0])
    parser.add_argument("--data-home", default="", help="data home (default $FASHION_SIM_HOME, else ./data)")
    add_verbose_flag(parser)
    args = parse_command_line(parser, argv)
    home = DataHome.from_env(args.data_home or None)
    print(json.dumps({"data_home": str(home.root), "converted_releases": convert_home(home)}))


if __name__ == "__main__":
    main()
