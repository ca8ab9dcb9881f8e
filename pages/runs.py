"""Runs page: every run in a table, chosen runs' curves overlaid with the settings that set them apart,
downloads, train again, stop and delete."""
from __future__ import annotations

import pandas as pd
import streamlit as st

from core.launch import run_state, stop_run
from core.runs import ACTIVE_STATES, RunStore, differing_settings, list_runs
from core.sweep import SweepStore, default_sweeps_dir, list_sweeps, sweep_table
from pages import charts, common, train

CURVES = {"acc": "ACC", "nmi": "NMI", "ari": "ARI", "loss": "total loss", "changed": "labels changed"}
OVERLAY_DEFAULT = 3


# -- compute --------------------------------------------------------------------------------------
def runs_table() -> pd.DataFrame:
    """``list_runs`` with the state checked against the process table (a killed run shows as died)."""
    runs = list_runs(common.runs_dir())
    if len(runs):
        runs["state"] = [run_state(common.run_store(r)) for r in runs["id"]]
    first = ["id", "state", "method", "data", "seed", "epoch", "acc", "nmi", "ari", "started"]
    return runs[first + [c for c in runs.columns if c not in first]]  # the long "reason" last


def curves_of(run_ids: list[str]) -> dict[str, pd.DataFrame]:
    """Each run's metrics table, by id."""
    return {r: common.run_store(r).read_metrics() for r in run_ids}


def sweep_runs(sweep_id: str) -> list[str]:
    """The run ids of a sweep's trials (those started so far)."""
    table = sweep_table(SweepStore(default_sweeps_dir() / sweep_id))
    return [r for r in table["run_id"] if isinstance(r, str) and r]


# -- ui -------------------------------------------------------------------------------------------
def sweep_filter_ui(runs: pd.DataFrame) -> tuple[pd.DataFrame, bool]:
    """The runs of one sweep cell (opened from the Sweep page), or of a sweep chosen here, or all; and
    whether a sweep cell is shown (then all its runs are overlaid)."""
    cell = st.session_state.get(common.SWEEP_CELL)
    if cell:
        note, button = st.columns([5, 1], vertical_alignment="center")
        note.markdown(f"The runs of **{cell['label']}** in sweep `{cell['sweep']}`")
        if not button.button("Show all runs", key="runs.all", width="stretch"):
            return runs[runs["id"].isin(cell["runs"])], True
        st.session_state.pop(common.SWEEP_CELL)
    sweeps = list_sweeps(default_sweeps_dir())
    if sweeps.empty:
        return runs, False
    labels = {row.id: f"{row.id} · {row.knobs}" for row in sweeps.itertuples()}
    chosen = common.remember(st.selectbox, "runs.sweep", "", label="Sweep", options=["", *sweeps["id"]],
                             format_func=lambda i: labels.get(i, "all runs"), help="only the trials of one sweep")
    return (runs[runs["id"].isin(sweep_runs(chosen))] if chosen else runs), False


def table_ui(runs: pd.DataFrame, overlay_default: int = OVERLAY_DEFAULT) -> list[str]:
    """The run table; returns the ids of the rows the user selected (the newest few when none)."""
    event = st.dataframe(
        runs, key="runs.table", on_select="rerun", selection_mode="multi-row", hide_index=True,
        column_config={"id": st.column_config.TextColumn("run", width="large"),
                       "acc": st.column_config.NumberColumn("ACC", format="%.3f"),
                       "nmi": st.column_config.NumberColumn("NMI", format="%.3f"),
                       "ari": st.column_config.NumberColumn("ARI", format="%.3f"),
                       "epoch": st.column_config.NumberColumn("epoch", format="%d")})
    rows = [i for i in event.selection.rows if i < len(runs)] if event is not None else []  # a filter may shrink it
    return [runs.iloc[i]["id"] for i in rows] if rows else list(runs["id"].head(overlay_default))


# -- draw -----------------------------------------------------------------------------------------
def draw_actions(store: RunStore) -> None:
    """Downloads, Explore, Train again, Stop and Delete for one run."""
    state = run_state(store)
    st.markdown(f"**{store.id}**")
    columns = st.columns(6)
    metrics = store.read_metrics()
    columns[0].download_button("Metrics CSV", metrics.to_csv(index=False), file_name=f"{store.id}-metrics.csv",
                               mime="text/csv", key=f"runs.metrics.{store.id}", disabled=metrics.empty)
    has_assignments = (store.path / "assignments.npz").exists()
    columns[1].download_button("Assignments CSV",
                               store.assignments_frame().to_csv(index=False) if has_assignments else "",
                               file_name=f"{store.id}-assignments.csv", mime="text/csv",
                               key=f"runs.assignments.{store.id}", disabled=not has_assignments,
                               help=None if has_assignments else "written when a run finishes")
    if columns[2].button("Explore", key=f"runs.explore.{store.id}", disabled=not store.snapshot_epochs()):
        common.restore(common.EXPLORE_RUN, store.id)
        st.switch_page("pages/explore.py")
    if columns[3].button("Train again", key=f"runs.again.{store.id}",
                         help="open Train with this run's data set, method, preset and knobs, to change one and "
                              "start again"):
        train.restore_settings(store.read_config())
        common.attach(store.id)
        st.switch_page("pages/train.py")
    if columns[4].button("Stop", key=f"runs.stop.{store.id}", disabled=state not in ACTIVE_STATES):
        stop_run(store)
        st.toast(f"Stopping {store.id} after its current batch")
    confirm = columns[5].checkbox("confirm delete", key=f"runs.confirm.{store.id}",
                                  disabled=state in ACTIVE_STATES,
                                  help="stop a running run before deleting it" if state in ACTIVE_STATES else None)
    if confirm and columns[5].button("Delete", type="primary", key=f"runs.delete.{store.id}"):
        store.delete()
        for key in (common.ACTIVE_RUN, common.EXPLORE_RUN, f"_{common.EXPLORE_RUN}"):
            if st.session_state.get(key) == store.id:
                st.session_state.pop(key)
        st.toast(f"Deleted {store.id}")
        st.rerun()


def render() -> None:
    """The page: table, overlaid curves, and actions per selected run."""
    st.title("Runs")
    runs = runs_table()
    if runs.empty:
        st.info(f"No runs in `{common.runs_dir()}` yet. Start one on the **Train** page.")
        return
    runs, whole_cell = sweep_filter_ui(runs)
    st.caption("Select rows to compare their curves and to download or delete them.")
    chosen = table_ui(runs, len(runs) if whole_cell else OVERLAY_DEFAULT)
    metric = common.remember(st.segmented_control, "runs.metric", "acc", label="Curve", options=list(CURVES),
                             format_func=CURVES.get) or "acc"
    st.plotly_chart(charts.overlay_figure(curves_of(chosen), metric, f"{CURVES[metric]} per epoch"),
                    key="runs.overlay")
    if len(chosen) > 1:
        differences = differing_settings({r: common.run_store(r).read_config() for r in chosen})
        if not differences.columns.empty:
            st.markdown("**Settings that differ between these runs**")
            st.dataframe(differences.fillna("—").astype(str))
    for run_id in chosen:
        with st.container(border=True):
            draw_actions(common.run_store(run_id))


if __name__ == "__main__":
    common.run_page(render)
