"""ClusterLab: train deep clustering methods and watch them learn.

Start with ``streamlit run app.py``. This file only routes: it registers the five pages, draws the
sidebar (the device, the followed run) and starts the background projector, whose UMAP warm-up
then runs while the user is still choosing data.
"""
from __future__ import annotations

import streamlit as st

from core.launch import run_progress
from pages import common

TRAIN_URL = "train"
PAGES = [
    st.Page("pages/data.py", title="Data", icon=":material/dataset:", default=True),
    st.Page("pages/train.py", title="Train", icon=":material/model_training:", url_path=TRAIN_URL),
    st.Page("pages/explore.py", title="Explore", icon=":material/scatter_plot:"),
    st.Page("pages/runs.py", title="Runs", icon=":material/table_view:"),
    st.Page("pages/sweep.py", title="Sweep", icon=":material/grid_on:", url_path="sweep"),
]
SIDEBAR_INTERVAL_S = 5.0  # a glance; the Train page has the detailed, faster panel


def draw_run_status(poll: bool) -> None:
    """The followed run's state, epoch and ACC; refreshes while the run is active if ``poll``.

    Every refresh costs the browser about 0.1 s of CPU, whatever it draws, so the sidebar does not
    refresh on the Train page, whose live panel shows the same run in more detail.
    """
    store = common.attached_run()
    draw_other_live_runs(store)
    if store is None:
        st.caption("No run followed yet: start one on Train.")
        return
    active = run_progress(store).active
    if active and not poll:
        st.markdown(f"**Run** `{store.id}`")
        st.caption("Training: followed live on this page.")
        return

    @st.fragment(run_every=SIDEBAR_INTERVAL_S if active and poll else None)
    def status():
        progress = run_progress(store)
        st.markdown(f"**Run** `{store.id}`")
        common.state_badge(progress.state)
        total = progress.total_epochs or "?"
        st.progress(progress.fraction, text=f"{progress.phase} · epoch {progress.epoch}/{total}")
        metrics = progress.metrics
        if len(metrics) and "acc" in metrics and metrics["acc"].notna().any():
            st.caption(f"ACC {metrics['acc'].dropna().iloc[-1]:.3f} · NMI {metrics['nmi'].dropna().iloc[-1]:.3f}")
        if active and not progress.active:
            st.rerun()

    status()


def draw_other_live_runs(followed) -> None:
    """Runs training now that this tab does not follow (another tab's, another person's): listed, each
    followed only on a click, so that a new tab never takes over someone else's Stop button."""
    others = common.other_live_runs(followed)
    if not others:
        return
    st.caption("Training now, started elsewhere:")
    for run_id in others:
        if st.button(run_id, key=f"follow.{run_id}", icon=":material/visibility:", help="follow this run here"):
            common.attach(run_id)
            st.rerun()


def main() -> None:
    """Page config, projector, navigation, sidebar; then the chosen page."""
    st.set_page_config(page_title="ClusterLab", page_icon=":material/bubble_chart:", layout="wide")
    common.projector()  # start the frame worker (and its UMAP warm-up) with the app
    navigation = st.navigation(PAGES)
    with st.sidebar:
        st.markdown("### ClusterLab")
        st.caption(f"Device: **{common.device_name()}**")
        with common.unexpected_errors_shown_briefly():
            draw_run_status(poll=navigation.url_path != TRAIN_URL)
    with common.app_shell():
        navigation.run()


main()
