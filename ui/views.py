"""What the page shows, as plain functions: the gallery, one query's neighbours, the evaluation charts.

ui/app.py only lays these out with Streamlit; keeping the logic here lets tests call it directly and
keeps the page script short. Everything here reads the store, nothing writes to it.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path

import altair as alt
import numpy as np
import pandas as pd

from storage.catalog import DROP_SOURCE
from storage.home import GALLERY, GALLERY_INDEX, DataHome
from storage.images import decode_display, normalise_image
from storage.releases import (RETRIEVAL_METRICS, Neighbour, Release, complete_release_ids, load_release, read_manifest,
                              read_metrics)

SAME_CLASS = (46, 160, 67)  # frame colour of a neighbour of the query's class
OTHER_CLASS = (214, 39, 40)


@dataclass
class LiveRelease:
    """A loaded release with its embedder warmed up."""

    release: Release

    @classmethod
    def load(cls, home: DataHome, release_id: str) -> "LiveRelease":
        release = load_release(home, release_id)
        release.embed(np.zeros((1, *release.dataset.pixel_shape), np.uint8))  # load the model once, not in a query
        return cls(release)


@dataclass(frozen=True)
class GalleryItem:
    """One pickable image: an exported test image (`file`: its key in the store) or a drop-folder item
    of the release (row)."""

    key: str
    label: int
    caption: str
    file: str | None = None
    row: int | None = None
    item_id: int | None = None


def gallery_items(home: DataHome, release: Release) -> list[GalleryItem]:
    """The exported test images (gallery/index.json) but catalogued ones the release lacks, then the
    release's drop-folder items."""
    items = []
    try:
        entries = json.loads(home.store.read_bytes(f"{GALLERY}/{GALLERY_INDEX}"))
    except FileNotFoundError:
        entries = []
    held = set(release.items.item_ids.tolist())
    for entry in entries:
        if entry.get("item_id") is not None and int(entry["item_id"]) not in held:
            continue  # a catalogued query this release does not hold (removed: python -m flows.remove)
        items.append(GalleryItem(key=f"test-{entry['test_index']}", label=int(entry["label"]),
                                 caption=f"test #{entry['test_index']}", file=f"{GALLERY}/{entry['path']}",
                                 item_id=entry.get("item_id")))
    catalogue = release.items
    for row in np.flatnonzero(catalogue.sources == DROP_SOURCE):
        item_id = int(catalogue.item_ids[row])
        items.append(GalleryItem(key=f"item-{item_id}", label=int(catalogue.labels[row]),
                                 caption=f"dropped: {Path(str(catalogue.paths[row])).name}",
                                 row=int(row), item_id=item_id))
    return items


def item_pixels(item: GalleryItem, release: Release) -> np.ndarray:
    """The normalised image searched for `item`: its file through normalise_image (as `python -m
    ui.search` reads it), or the stored pixels of a catalogue item. Raises ImageRejected."""
    if item.row is not None:
        return release.items.images[item.row]
    return normalise_image(release.store.read_bytes(item.file), release.dataset).pixels


PHOTO_ASPECT = 3 / 4  # width / height of a photo's tile: clothing-small's usual 400x534, so grids line up


def tile(picture: np.ndarray) -> np.ndarray:
    """A display copy padded with white to PHOTO_ASPECT, centred: every tile of a grid the same shape."""
    height, width = picture.shape[:2]
    target_width, target_height = max(width, round(height * PHOTO_ASPECT)), max(height, round(width / PHOTO_ASPECT))
    padded = np.full((target_height, target_width, 3), 255, np.uint8)
    top, left = (target_height - height) // 2, (target_width - width) // 2
    padded[top: top + height, left: left + width] = picture
    return padded


def item_picture(item: GalleryItem, release: Release) -> np.ndarray:
    """What the gallery shows for `item`: a photo's display copy, else its normalised pixels enlarged.
    Raises ImageRejected."""
    if item.row is not None:
        return row_picture(release, item.row)
    if item.file.endswith(".jpg"):  # a photo's display copy
        return tile(decode_display(release.store.read_bytes(item.file)))
    return enlarge(item_pixels(item, release))


def row_picture(release: Release, row: int, frame: tuple[int, int, int] | None = None) -> np.ndarray:
    """What the page shows for the catalogue item at `row`: its display copy, else its pixels enlarged."""
    display = release.items.displays[row]
    if not display:
        return enlarge(release.items.images[row], frame=frame)
    return framed(tile(decode_display(display)), frame)


@dataclass
class QueryResult:
    pixels: np.ndarray  # the normalised 28x28 image that was searched
    label: int | None  # the query's class when known (gallery), else None (uploads)
    neighbours: list[Neighbour]
    rows: np.ndarray  # row of each neighbour in release.items, for its pixels
    match: str  # GOOD, WEAK or NONE (no close match): storage/match_score.py
    seconds: float  # normalise + search, as the page sees it


def search_pixels(live: LiveRelease, pixels: np.ndarray, k: int, label: int | None = None,
                  exclude_item: int | None = None, started: float | None = None) -> QueryResult:
    """k nearest items of one normalised image (without `exclude_item`: a catalogue item finds itself)."""
    started = time.perf_counter() if started is None else started
    embedding = live.release.embed(pixels[None])
    results = live.release.neighbours(embedding, k, exclude_item=exclude_item)
    neighbours = results[0]
    return QueryResult(pixels, label, neighbours, results.rows[0],
                       live.release.match_band(pixels, embedding[0], neighbours), time.perf_counter() - started)


def search_item(live: LiveRelease, item: GalleryItem, k: int) -> QueryResult:
    return search_pixels(live, item_pixels(item, live.release), k, item.label, exclude_item=item.item_id)


def search_upload(live: LiveRelease, data: bytes, k: int) -> QueryResult:
    """Normalise an uploaded file and search with it. Raises ImageRejected saying what is wrong."""
    started = time.perf_counter()
    return search_pixels(live, normalise_image(data, live.release.dataset).pixels, k, started=started)


def enlarge(pixels: np.ndarray, scale: int = 4, frame: tuple[int, int, int] | None = None) -> np.ndarray:
    """Nearest-neighbour upscaling (a 28x28 image stays crisp), optionally framed in a colour."""
    pixels = np.asarray(pixels, np.uint8)
    pixels = pixels[:, :, 0] if pixels.ndim == 3 and pixels.shape[2] == 1 else pixels
    return framed(np.repeat(np.repeat(pixels, scale, 0), scale, 1), frame)


def framed(picture: np.ndarray, frame: tuple[int, int, int] | None, width: int = 4) -> np.ndarray:
    """`picture` (grey or RGB) with a border of colour `frame` (None: as it is)."""
    if frame is None:
        return picture
    rgb = np.repeat(picture[:, :, None], 3, axis=2) if picture.ndim == 2 else picture.copy()
    rgb[:width], rgb[-width:], rgb[:, :width], rgb[:, -width:] = frame, frame, frame, frame
    return rgb


# ------------------------------------------------------------------------------------ evaluation


# what each figure of the evaluation means, in one line (the Evaluation tab shows them under its chart)
METRIC_MEANINGS = {
    "precision@k": "share of the k nearest items that are of the query's class",
    "recall@k": "share of queries with at least one item of their class among the k nearest",
    "map@10": "mean average precision over the 10 nearest: rewards putting same-class items first",
    "raw pixels": "the same search on the images' raw pixels (cosine), the baseline a model must beat",
}


def release_history(home: DataHome) -> pd.DataFrame:
    """precision@1 and recall@5 (and the raw-pixel precision@1) of every complete release that was
    evaluated (a re-index carries its parent's figures over: not a new point), oldest first."""
    rows = []
    for release_id in complete_release_ids(home):
        manifest = read_manifest(home, release_id)
        metrics = read_metrics(home, manifest)
        if not metrics or "metrics_carried_from" in metrics:
            continue
        published = manifest.get("published_at")
        figures = {"precision@1": metrics.get("precision@1"), "recall@5": metrics.get("recall@5"),
                   "raw-pixel precision@1": metrics.get("baseline_raw_pixels", {}).get("precision@1")}
        rows += [{"release": release_id, "published": pd.Timestamp(published), "figure": name, "value": value}
                 for name, value in figures.items() if value is not None]
    return pd.DataFrame(rows, columns=["release", "published", "figure", "value"])


def model_vs_baseline_chart(metrics: dict) -> alt.LayerChart:
    """Horizontal bars, model and raw pixels side by side per metric, each labelled with its value (the
    metric names are the y axis: none is dropped for lack of room, whatever the width)."""
    baseline = metrics.get("baseline_raw_pixels", {})
    keys = [key for key in RETRIEVAL_METRICS if key in metrics and key in baseline]
    frame = pd.DataFrame([{"metric": key, "system": system, "value": source[key]}
                          for key in keys for system, source in (("model", metrics), ("raw pixels", baseline))])
    base = alt.Chart(frame).encode(
        y=alt.Y("metric:N", sort=keys, title=None, axis=alt.Axis(labelLimit=200)), yOffset="system:N",
        x=alt.X("value:Q", scale=alt.Scale(domain=[0, 1.12]), title=None, axis=alt.Axis(values=[0, .25, .5, .75, 1])),
        tooltip=["metric", "system", alt.Tooltip("value:Q", format=".4f")],
    )
    bars = base.mark_bar().encode(color=alt.Color("system:N", legend=alt.Legend(orient="bottom", title=None)))
    labels = base.mark_text(align="left", dx=3, fontSize=10).encode(text=alt.Text("value:Q", format=".3f"))
    return (bars + labels).properties(height=32 * max(1, len(keys)))


def per_class_chart(metrics: dict, class_names: tuple[str, ...]) -> alt.LayerChart:
    frame = pd.DataFrame([{"class": name, "precision@1": value}
                          for name, value in metrics.get("per_class_precision@1", {}).items()])
    base = alt.Chart(frame).encode(
        y=alt.Y("class:N", sort=list(class_names), title=None, axis=alt.Axis(labelLimit=200)),
        x=alt.X("precision@1:Q", scale=alt.Scale(domain=[0, 1.12]), axis=alt.Axis(values=[0, .25, .5, .75, 1])),
        tooltip=["class", alt.Tooltip("precision@1:Q", format=".4f")],
    )
    bars = base.mark_bar().encode(color=alt.Color(
        "precision@1:Q", scale=alt.Scale(scheme="redyellowgreen", domain=[0.5, 1]),
        legend=alt.Legend(orient="bottom", title="precision@1 (colour)", gradientLength=160)))
    labels = base.mark_text(align="left", dx=3, fontSize=10).encode(text=alt.Text("precision@1:Q", format=".3f"))
    return bars + labels


def confusion_chart(metrics: dict, class_names: tuple[str, ...]) -> alt.LayerChart:
    """Rows: the query's class; columns: the class of its nearest item (the diagonal is a hit)."""
    confusion = metrics.get("confusion", [])
    names = list(class_names) + [f"class {n}" for n in range(len(class_names), len(confusion))]
    frame = pd.DataFrame([{"query": names[q], "nearest": names[n], "queries": count}
                          for q, row in enumerate(confusion) for n, count in enumerate(row)])
    base = alt.Chart(frame).encode(
        x=alt.X("nearest:N", sort=names, title="class of the nearest item",
                axis=alt.Axis(labelAngle=-40, labelLimit=120)),
        y=alt.Y("query:N", sort=names, title="query class", axis=alt.Axis(labelLimit=160)),
    )
    cells = base.mark_rect().encode(color=alt.Color("queries:Q", scale=alt.Scale(type="symlog", scheme="blues"),
                                                    legend=None),
                                    tooltip=["query", "nearest", "queries"])
    counts = base.mark_text(fontSize=10).encode(
        text="queries:Q",
        color=alt.condition(alt.datum.queries > max(1, frame["queries"].max() / 2) if len(frame) else False,
                            alt.value("white"), alt.value("black")))
    return (cells + counts).properties(height=380)


def history_chart(history: pd.DataFrame) -> alt.Chart:
    return alt.Chart(history).mark_line(point=True).encode(
        x=alt.X("published:T", title="published", axis=alt.Axis(format="%b %d %H:%M", labelAngle=0)),
        y=alt.Y("value:Q", scale=alt.Scale(zero=False), title=None, axis=alt.Axis(format=".2f")),
        color=alt.Color("figure:N", legend=alt.Legend(orient="bottom", title=None)),
        tooltip=["release", "figure", alt.Tooltip("value:Q", format=".4f"), "published:T"],
    )
