"""The page: browse the latest published release. `streamlit run ui/app.py` (or `make page`).

Each run resolves LATEST once and works on that release only; the loaded release is cached per
release id, so it loads once and a newly published release loads anew. A fragment re-reads LATEST
every few seconds and reruns the page when it moved. The page only reads the store.
"""

from __future__ import annotations

import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:  # `streamlit run ui/app.py` puts only ui/ on the path
    sys.path.insert(0, str(REPO))

import streamlit as st  # noqa: E402
import streamlit.components.v1 as components  # noqa: E402

from storage.dataset import UNLABELLED, home_dataset  # noqa: E402
from storage.home import DataHome  # noqa: E402
from storage.images import MAX_FILE_BYTES, ImageRejected  # noqa: E402
from storage.match_score import NONE, WEAK  # noqa: E402
from storage.releases import ReleaseError, latest_release_id  # noqa: E402
from ui import views  # noqa: E402

LATEST_POLL = "3s"
PAGE_SIZE = 20
GALLERY_COLUMNS = 4
NEIGHBOUR_COLUMNS = 4
# On a phone Streamlit stacks columns one per row, which made the gallery a 14,000 px column of single
# pictures: the grids keep two per row there instead (each row's order is kept: 1 2 / 3 4).
PHONE_GRIDS_CSS = """<style>
.st-key-answer { scroll-margin-top: 3.75rem; }  /* below Streamlit's fixed header when scrolled to */
@media (max-width: 640px) {
  .st-key-gallery [data-testid="stHorizontalBlock"], .st-key-answer [data-testid="stHorizontalBlock"] {
    flex-wrap: wrap !important; gap: 0.75rem !important; }
  .st-key-gallery [data-testid="stColumn"], .st-key-answer [data-testid="stColumn"] {
    flex: 1 1 calc(50% - 0.75rem) !important; min-width: calc(50% - 0.75rem) !important;
    max-width: calc(50% - 0.75rem) !important; }
}
</style>"""
ALL_CLASSES = "All classes"
UPLOAD = "upload"  # st.session_state.query: UPLOAD, a gallery item's key, or None


@st.cache_resource(max_entries=2, show_spinner="Loading the release and its model...")
def open_release(location: str, release_id: str) -> views.LiveRelease:
    return views.LiveRelease.load(DataHome.from_env(location), release_id)


@st.cache_data(max_entries=2, show_spinner=False)
def release_history(location: str, live_release_id: str):
    """Keyed by the live id: releases only appear when LATEST moves."""
    return views.release_history(DataHome.from_env(location))


@st.fragment(run_every=LATEST_POLL)
def follow_latest(home: DataHome, shown_release_id: str | None) -> None:
    """Rerun the whole page when LATEST no longer names the release on screen."""
    try:
        current = latest_release_id(home)
    except ReleaseError:
        current = None  # the full run reports what is wrong with LATEST
    if current != shown_release_id:
        st.rerun()


def pick(key: str) -> None:
    st.session_state.query = key
    st.session_state.scroll_to_answer = True


def use_upload() -> None:
    st.session_state.query = UPLOAD if st.session_state.get("upload") is not None else None
    st.session_state.scroll_to_answer = True


def grid_rows(entries: list, columns: int):
    """`entries` in rows of `columns` (each row its own st.columns), so that on a phone, where columns
    stack, they still read in order: 1, 2, 3... and not 1, 5, 9, 2..."""
    for start in range(0, len(entries), columns):
        yield zip(st.columns(columns), entries[start: start + columns])


def scroll_to_answer() -> None:
    """Bring the answer into view after a pick or an upload (on a phone it is above the gallery the
    pick was made in). Runs once per pick, in the page's own window."""
    if st.session_state.pop("scroll_to_answer", False):
        # numbered: the same HTML twice would keep the old frame, and its script would not run again
        st.session_state.scrolls = st.session_state.get("scrolls", 0) + 1
        components.html(f"<script>/* {st.session_state.scrolls} */ const answer = "
                        "window.parent.document.querySelector('.st-key-answer');"
                        "if (answer) answer.scrollIntoView({block: 'start'});</script>", height=0)


def header(live: views.LiveRelease) -> None:
    release, metrics = live.release, live.release.metrics
    architecture = release.manifest.get("model", {}).get("architecture", "unknown")
    st.title(f"{release.dataset.title} similarity search")
    figures = [f"**{len(release.items):,}** items"]
    if "precision@1" in metrics:
        baseline = metrics.get("baseline_raw_pixels", {}).get("precision@1")
        figures.append(f"precision@1 **{metrics['precision@1']:.3f}**"
                       + ("" if baseline is None else f" (raw pixels {baseline:.3f})"))
    figures += [f"{name} {metrics[key]:.3f}" for key, name in (("recall@5", "recall@5"), ("map@10", "MAP@10"))
                if key in metrics]
    st.markdown(" · ".join(figures))
    st.caption(f"Live release {release.release_id} · published {release.manifest.get('published_at', '?')} "
               f"· model {architecture}")


def gallery(items: list[views.GalleryItem], release) -> None:
    label_name = release.dataset.label_name
    classes = [label_name(label) for label in sorted({item.label for item in items})]
    choice = st.selectbox("Class", [ALL_CLASSES, *classes], key="class_filter")
    shown = [item for item in items if choice == ALL_CLASSES or label_name(item.label) == choice]
    if not shown:
        st.info("The gallery is empty: run `python -m flows.pipeline` to export test images, "
                "or drop images into the data home's incoming/ folder.")
        return
    pages = (len(shown) + PAGE_SIZE - 1) // PAGE_SIZE
    # keyed by filter and page count: either changing starts again at page 1
    page = st.number_input(f"Page (of {pages})", 1, pages, 1, key=f"page-{choice}-{pages}")
    start = (page - 1) * PAGE_SIZE
    st.caption(f"Images {start + 1}-{min(start + PAGE_SIZE, len(shown))} of {len(shown)}")
    with st.container(key="gallery"):
        gallery_grid(shown[start: start + PAGE_SIZE], release)


def gallery_grid(shown: list[views.GalleryItem], release) -> None:
    label_name = release.dataset.label_name
    for row in grid_rows(shown, GALLERY_COLUMNS):
        for column, item in row:
            with column:
                try:
                    st.image(views.item_picture(item, release), caption=f"{label_name(item.label)} · {item.caption}",
                             width="stretch")
                except ImageRejected as error:
                    st.caption(f"{item.caption}: cannot show ({error})")
                    continue
                st.button("Similar", key=f"pick-{item.key}", on_click=pick, args=(item.key,), icon=":material/search:",
                          width="stretch", help="Find the items most like this one",
                          type="primary" if st.session_state.get("query") == item.key else "secondary")


def neighbours_grid(live: views.LiveRelease, result: views.QueryResult) -> None:
    release = live.release
    if result.match == NONE:
        st.warning("**No close match**: this does not look like a garment of the catalogue (a drawing, text, "
                   "noise or a pattern look like this); the nearest items are shown anyway.")
    elif result.match == WEAK:
        st.info("**Weak match**: this looks only partly like the catalogue's garments; the nearest items may "
                "not be what you are after.")
    st.caption(f"{len(result.neighbours)} nearest of {len(release.items):,} items · {result.seconds * 1000:.0f} ms")
    with st.container(key="neighbours"):
        for grid_row in grid_rows(list(zip(result.neighbours, result.rows)), NEIGHBOUR_COLUMNS):
            for column, (neighbour, row) in grid_row:
                same = None if result.label in (None, UNLABELLED) else neighbour.label == result.label
                frame = None if same is None else views.SAME_CLASS if same else views.OTHER_CLASS
                mark = "" if same is None else "✓ " if same else "✗ "
                with column:
                    st.image(views.row_picture(release, row, frame=frame), width="stretch",
                             caption=f"{mark}#{neighbour.rank} {neighbour.label_name} · d={neighbour.distance:.3f}")
                    if title := neighbour.metadata.get("title") or neighbour.metadata.get("sku"):
                        st.caption(title)


def query_panel(live: views.LiveRelease, items: dict[str, views.GalleryItem], k: int) -> None:
    """The query and its neighbours, compact enough that on a phone the first neighbours show with it."""
    query = st.session_state.get("query")
    if query == UPLOAD and st.session_state.get("upload") is not None:
        uploaded = st.session_state.upload
        try:
            result = views.search_upload(live, uploaded.getvalue(), k)
        except ImageRejected as error:
            st.error(f"Cannot search with **{uploaded.name}**: {error}. Upload a PNG or JPEG photo of "
                     "one garment, ideally on a plain background.")
            return
        st.subheader("Your photo")
        original, searched = st.columns(2)
        original.image(uploaded.getvalue(), caption=uploaded.name, width="stretch")
        side = live.release.dataset.side
        searched.image(views.enlarge(result.pixels, scale=max(1, 112 // side)), caption=f"searched as {side}x{side}",
                       width="stretch")
    elif query in items:
        item = items[query]
        result = views.search_item(live, item, k)
        picture, words = st.columns(2, vertical_alignment="center")
        picture.image(views.item_picture(item, live.release), width="stretch")
        words.subheader(f"Query: {live.release.dataset.label_name(item.label)}")
        words.caption(item.caption)
    else:
        st.info("Pick an image in the gallery (**Similar**) or upload a photo to see its nearest items.")
        return
    st.subheader(f"{k} nearest items")
    neighbours_grid(live, result)


def search_view(live: views.LiveRelease, items: list[views.GalleryItem]) -> None:
    """The query and its answer first (on a phone, where columns stack, they come before the gallery)."""
    st.html(PHONE_GRIDS_CSS)
    left, right = st.columns(2, gap="large")
    with left:
        k = st.slider("Neighbours (k)", 1, 24, 8, key="k")
        st.file_uploader("Search with your photo (PNG or JPEG)", type=["png", "jpg", "jpeg"], key="upload",
                         on_change=use_upload, max_upload_size=MAX_FILE_BYTES // 2**20,
                         help="Any size; one item on a plain background works best.")
        with st.container(key="answer"):
            query_panel(live, {item.key: item for item in items}, k)
    with right:
        st.subheader("Gallery")
        gallery(items, live.release)
    scroll_to_answer()


def evaluation_view(home: DataHome, live: views.LiveRelease) -> None:
    metrics = live.release.metrics
    if "precision@1" not in metrics:
        st.info(f"Release {live.release.release_id} has no evaluation (metrics.json).")
        return
    indexed = metrics.get("indexed_items", len(live.release.items))
    carried = metrics.get("metrics_carried_from")
    st.caption(f"{metrics.get('queries', '?')} test queries against {indexed:,} indexed items"
               + (f", measured in release {carried} and carried over: release {live.release.release_id} added items "
                  f"from the drop folder without retraining and holds {len(live.release.items):,} items" if carried
                  else "") + "; the baseline is a cosine kNN on raw pixels over the same items.")
    left, right = st.columns(2, gap="large")
    with left:
        st.subheader("Model vs raw-pixel baseline")
        st.altair_chart(views.model_vs_baseline_chart(metrics))
        st.markdown("\n".join(f"- **{name}**: {meaning}" for name, meaning in views.METRIC_MEANINGS.items()))
        st.subheader("Confusion between classes")
        st.altair_chart(views.confusion_chart(metrics, live.release.dataset.class_names))
    with right:
        st.subheader("precision@1 per class")
        st.altair_chart(views.per_class_chart(metrics, live.release.dataset.class_names))
        st.subheader("Across releases")
        history = release_history(home.location, live.release.release_id)
        st.altair_chart(views.history_chart(history))
        st.caption(f"{history['release'].nunique()} complete release(s) in {home.location}")


def show_live_release(home: DataHome) -> str | None:
    """Draw the page for the release LATEST names; returns that id (None when nothing is published)."""
    release_id = None
    try:
        release_id = latest_release_id(home)
        live = None if release_id is None else open_release(home.location, release_id)
    except ReleaseError as error:
        st.title(f"{home_dataset(home).title} similarity search")
        st.error(f"The live release cannot be opened: {error}")
        return release_id
    if live is None:
        st.title(f"{home_dataset(home).title} similarity search")
        st.info(f"No release is published in `{home.location}` yet. Make one with `make demo` (or "
                "`python -m flows.pipeline`); this page shows it as soon as it is published.")
        return None
    header(live)
    items = views.gallery_items(home, live.release)
    # Only the open view runs (tabs with state): browsing never pays for drawing the charts.
    search_tab, evaluation_tab = st.tabs(["Search", "Evaluation"], key="view", on_change="rerun",
                                         bind="query-params")
    if search_tab.open:
        with search_tab:
            search_view(live, items)
    if evaluation_tab.open:
        with evaluation_tab:
            evaluation_view(home, live)
    return release_id


def main() -> None:
    st.set_page_config(page_title="Fashion similarity search", page_icon="👕", layout="wide")
    home = DataHome.from_env()
    shown = show_live_release(home)
    # Last on the page: drawn first, its reruns left the elements after it as grey skeletons in
    # chromium (Streamlit 1.67, seen while writing tests/test_browser.py).
    follow_latest(home, shown)

main()
