"""Explore page: the latent space of one epoch in 2-D, animated across epochs, with centroids.

The frames come from ``core.embed``: PCA is computed here at once (milliseconds); t-SNE and UMAP
are asked of the background projector process, and this page shows whatever is ready, polling
until the rest arrives. The chart carries every ready epoch as a plotly frame, so its Replay runs
in the browser with points gliding between epochs (Streamlit redraws a changed chart without
transitions). Clicking or lassoing points shows their images.
"""
from __future__ import annotations

from collections import Counter

import numpy as np
import pandas as pd
import streamlit as st

from core.data import DataError
from core.embed import (KINDS, EpochView, colour_slots, compute_frames, epoch_view, epoch_views, frame_epochs,
                        missing_epochs, ready_epochs)
from core.gallery import to_display
from core.launch import run_state
from core.metrics import aligned_confusion
from core.runs import ACTIVE_STATES, RunIdError, RunStore, list_runs
from pages import charts, common

POLL_INTERVAL_S = 2.0  # while frames are computing or the run is training
GALLERY_LIMIT = 60
EPOCH_KEY = "explore.epoch"
KIND_KEY = "explore.kind"


# -- ui -------------------------------------------------------------------------------------------
def run_ui(runs: pd.DataFrame) -> str:
    """Which run to explore: this session's choice, else the run Train follows, else the newest."""
    ids = list(runs["id"])
    labels = {row.id: f"{row.id} · {row.state}" + ("" if pd.isna(row.acc) else f" · ACC {row.acc:.3f}")
              for row in runs.itertuples()}
    preferred = st.session_state.get(common.ACTIVE_RUN)
    default = preferred if preferred in ids else ids[0]
    if st.session_state.get(common.EXPLORE_RUN) not in ids:
        st.session_state.pop(common.EXPLORE_RUN, None)
        st.session_state.pop(f"_{common.EXPLORE_RUN}", None)
    return common.remember(st.selectbox, common.EXPLORE_RUN, default, label="Run", options=ids,
                           format_func=labels.get)


def projection_ui() -> str:
    """``tsne``, ``umap`` or ``pca``."""
    return common.remember(st.segmented_control, KIND_KEY, "tsne", label="Projection", options=list(KINDS),
                           format_func=KINDS.get,
                           help="t-SNE and UMAP frames are warm-started from the previous epoch, so points move "
                                "smoothly; PCA is immediate") or "tsne"  # a deselected control means the default


def colour_ui(has_clusters: bool, has_labels: bool) -> str:
    """What the colour shows; only what the run has (no clusters during pretraining, no labels for unlabelled data)."""
    options = [c for c in charts.COLOUR_BY if (c not in ("cluster", "confidence", "changed") or has_clusters)
               and (c != "label" or has_labels)] or ["cluster"]
    colour_by = common.remember(st.selectbox, "explore.colour", options[0], label="Colour by", options=options,
                                format_func=charts.COLOUR_BY.get)
    return colour_by if colour_by in options else options[0]


def view_options_ui(active: bool) -> tuple[bool, bool]:
    """(draw centroid trails, follow the newest epoch); following is offered while the run trains."""
    left, right = st.columns(2)
    with left:
        trails = common.remember(st.checkbox, common.TRAILS, False, label="Centroid trails",
                                 help="each centroid's path over the epochs so far, a faint line in its "
                                      "cluster's colour; the × is where it is now")
    with right:
        follow = common.remember(st.toggle, common.FOLLOW, False, label="Follow training", disabled=not active,
                                 help="show each new epoch as soon as its frame is ready (the class demo turns "
                                      "this on)")
    return trails, follow and active


# -- compute --------------------------------------------------------------------------------------
def request_frames(store: RunStore, kind: str) -> None:
    """PCA now, in this thread (milliseconds); t-SNE and UMAP by the background projector."""
    if kind == "pca":
        compute_frames(store, "pca", max_seconds=2.0)
    else:
        common.projector().request(store.path, kind)


def phase_of_epochs(store: RunStore) -> dict[int, str]:
    """Epoch → phase, from the run's metrics."""
    metrics = store.read_metrics()
    if metrics.empty or "phase" not in metrics:
        return {}
    return dict(zip(metrics["epoch"].astype(int), metrics["phase"].astype(str)))


def final_slots(store: RunStore, n_clusters: int) -> np.ndarray:
    """Colour slot per cluster from the newest labelled snapshot, so colours do not flicker between epochs."""
    truth = store.load_snapshot_indices().get("labels")
    for epoch in reversed(store.snapshot_epochs()):
        labels = store.load_snapshot(epoch).get("labels")
        if labels is not None:
            return colour_slots(truth, labels, n_clusters)
    return np.arange(n_clusters)


def selected_points(event) -> list[int]:
    """Point numbers of the samples trace in a plotly selection event (centroid clicks are ignored)."""
    if event is None:
        return []
    points = event.get("selection", {}).get("points", []) if isinstance(event, dict) else event.selection.points
    chosen = []
    for point in points:
        if point.get("curve_number", 0) == 0:
            index = point.get("point_index", point.get("point_number"))
            if index is not None:
                chosen.append(int(index))
    return sorted(set(chosen))


def confusion_for(view: EpochView, class_names: list[str]):
    """(table, class names, cluster ids) Hungarian-aligned, or None without clusters or labels."""
    if view.clusters is None or view.true_labels is None:
        return None
    table, classes, clusters = aligned_confusion(view.true_labels, view.clusters)
    names = [class_names[c] if c < len(class_names) else str(c) for c in classes]
    return table, names, [int(c) for c in clusters]


# -- draw -----------------------------------------------------------------------------------------
def draw_frame_status(store: RunStore, kind: str, scheduled: list[int], ready: list[int]) -> None:
    """Projector errors, UMAP's warm-up, and how many frames are ready."""
    if kind != "pca":
        projector = common.projector()
        error = projector.error(store.path, kind) or (projector.error("", kind) if kind == "umap" else None)
        if error:
            st.error(f"{KINDS[kind]} frames could not be computed: {error}")
        if kind == "umap" and not projector.umap_ready:
            st.info("UMAP is compiling its numba code in the background (once per app start); "
                    "its frames start as soon as that is done. t-SNE and PCA work meanwhile.")
    if len(ready) < len(scheduled):
        st.progress(len(ready) / max(len(scheduled), 1),
                    text=f"{KINDS[kind]} frames ready: {len(ready)} of {len(scheduled)} "
                         "(computed in the background, each warm-started from the one before)")


def draw_gallery(store: RunStore, view: EpochView, points: list[int], class_names: list[str]) -> None:
    """The images behind the selected points, with their cluster and label."""
    st.markdown(f"**{len(points)} selected**" + (f" (showing {GALLERY_LIMIT})" if len(points) > GALLERY_LIMIT else ""))
    try:
        dataset = common.load_data(str(store.read_config().get("data")))
    except DataError as err:
        st.warning(f"The run's data set cannot be loaded, so its images cannot be shown: {err}")
        return
    shown = points[:GALLERY_LIMIT]
    rows = view.sample_index[shown]
    images = to_display(dataset.x[rows], min_side=56)
    captions = []
    for point in shown:
        cluster = "no cluster" if view.clusters is None else f"c{view.clusters[point]}"
        if view.true_labels is not None:
            label = view.true_labels[point]
            cluster += f" · {class_names[label] if label < len(class_names) else label}"
        captions.append(cluster)
    if view.clusters is not None:
        counts = Counter(int(view.clusters[p]) for p in points)
        st.caption("clusters: " + ", ".join(f"c{c} × {n}" for c, n in counts.most_common()))
    st.image(list(images), caption=captions, width=72)
    st.caption("Caption: predicted cluster · true label. Rows of the data set: "
               + ", ".join(str(r) for r in rows[:20]) + (" …" if len(rows) > 20 else ""))


def explorer(store: RunStore, kind: str, colour_by: str, interval: float | None) -> None:
    """Epoch slider, scatter with Replay, confusion matrix and selection gallery; reruns alone every ``interval`` s."""

    @st.fragment(run_every=interval)
    def body():
        request_frames(store, kind)
        scheduled = frame_epochs(store)
        ready = [e for e in ready_epochs(store, kind) if e in set(scheduled)]
        draw_frame_status(store, kind, scheduled, ready)
        if not scheduled:
            st.info("This run has no snapshot yet; the first appears after its first epoch.")
            return
        trails, follow = view_options_ui(run_state(store) in ACTIVE_STATES)
        if st.session_state.get(EPOCH_KEY) not in scheduled or (follow and ready):
            st.session_state[EPOCH_KEY] = ready[-1] if ready else scheduled[-1]
        phases = phase_of_epochs(store)
        epoch = st.select_slider("Epoch", options=scheduled, key=EPOCH_KEY,
                                 format_func=lambda e: f"{e} · {phases.get(e, '')}".rstrip(" ·"),
                                 help="the epoch shown at rest and in the confusion matrix; ▶ Replay in the "
                                      "chart animates every ready epoch in the browser")
        view = epoch_view(store, kind, epoch)
        if view is None:
            st.info(f"The first {KINDS[kind]} frame is being computed (a full fit; later frames are faster)…")
            return
        config = store.read_config()
        class_names = _class_names(config)
        n_clusters = int(config.get("n_clusters") or 10)
        animation = epoch_views(store, kind)
        ranges = charts.frame_ranges([v.frame.xy for v in animation] +
                                     [v.frame.centroids for v in animation if v.frame.centroids is not None])
        figure = charts.scatter_figure(view, colour_by, final_slots(store, n_clusters), class_names, ranges,
                                       revision=f"{store.id}-{kind}", animation=animation, phases=phases,
                                       trails=trails)
        left, right = st.columns([3, 2], gap="medium")
        with left:
            event = st.plotly_chart(figure, key="explore.scatter", on_select="rerun",
                                    selection_mode=("points", "box", "lasso"))
            st.caption(_frame_caption(view, kind, phases))
        with right:
            _draw_epoch_scores(store, view.frame.epoch)
            confusion = confusion_for(view, class_names)
            if confusion is not None:
                st.plotly_chart(charts.confusion_figure(*confusion), key="explore.confusion")
        points = selected_points(event)
        if points:
            draw_gallery(store, view, points, class_names)
        else:
            st.caption("Click a point, or draw a lasso or box around some, to see their images.")

    body()


def _class_names(config: dict) -> list[str]:
    try:
        return common.load_data(str(config.get("data"))).class_names
    except DataError:
        return []


def _frame_caption(view: EpochView, kind: str, phases: dict[int, str]) -> str:
    frame = view.frame
    text = f"{KINDS[kind]} of epoch {frame.epoch} ({phases.get(frame.epoch, '?')}), {len(frame.xy):,} samples"
    if frame.epoch != view.epoch:
        text += f" — epoch {view.epoch} is still being computed"
    text += (f" · warm-started from epoch {frame.previous}" if frame.previous is not None else " · first frame")
    text += f" · {frame.seconds:.2f} s"
    if frame.centroids is not None:
        text += " · × = centroids"
    return text


def _draw_epoch_scores(store: RunStore, epoch: int) -> None:
    metrics = store.read_metrics()
    row = metrics[metrics["epoch"] == epoch] if "epoch" in metrics else metrics
    if row.empty:
        return
    row = row.iloc[0]
    columns = st.columns(3)
    for column, (key, name) in zip(columns, charts.SCORES.items()):
        value = row.get(key, float("nan"))
        column.metric(f"{name} (epoch {epoch})", "—" if value != value else f"{value:.3f}")


def follow_training_run(run_ids: list[str]) -> str | None:
    """While following, show the run Train follows as long as it trains: choose it here once it has a
    snapshot. Returns its id while it has none yet (the page waits for it), else None."""
    run_id = st.session_state.get(common.ACTIVE_RUN)
    if not run_id or not common.shown_value(common.FOLLOW, False):
        return None
    try:
        store = common.run_store(run_id)
    except RunIdError:
        return None
    if run_state(store) not in ACTIVE_STATES:
        return None  # a finished run is not followed: the user may pick any run again
    if run_id not in run_ids:
        return run_id
    if common.shown_value(common.EXPLORE_RUN, None) != run_id:
        common.restore(common.EXPLORE_RUN, run_id)
    return None


def wait_for_first_snapshot(store: RunStore) -> None:
    """Poll until the run has its first snapshot, then draw the page again."""

    @st.fragment(run_every=POLL_INTERVAL_S)
    def waiting():
        st.info(f"Following `{store.id}`: its first epoch is on its way…")
        if store.snapshot_epochs():
            st.rerun()

    waiting()


def render() -> None:
    """The page: run, projection and colour on top; the epoch's picture and details below."""
    st.title("Explore")
    runs = list_runs(common.runs_dir())
    runs = runs[[bool(common.run_store(r).snapshot_epochs()) for r in runs["id"]]] if len(runs) else runs
    waiting = follow_training_run(list(runs["id"]) if len(runs) else [])
    if waiting:
        wait_for_first_snapshot(common.run_store(waiting))
        return
    if runs.empty:
        st.info("No run with latent snapshots yet. Start one on the **Train** page; its first snapshot appears "
                "after one epoch.")
        return
    top = st.columns([2.6, 1.4, 1.4], vertical_alignment="bottom")
    with top[0]:
        run_id = run_ui(runs)
    store = common.run_store(run_id)
    last = store.load_snapshot(store.snapshot_epochs()[-1])
    with top[1]:
        kind = projection_ui()
    with top[2]:
        colour_by = colour_ui("labels" in last, "labels" in store.load_snapshot_indices())
    active = run_state(store) in ACTIVE_STATES
    pending = bool(missing_epochs(store, kind))
    interval = POLL_INTERVAL_S if active or pending else None  # still for a finished run: nothing new to show
    explorer(store, kind, colour_by, interval)


if __name__ == "__main__":
    common.run_page(render)
