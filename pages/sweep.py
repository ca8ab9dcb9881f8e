"""Sweep page: a grid over one or more of a method's knobs × seeds → ordinary runs, started by a scheduler
process → a live map of each cell's mean final score.

The grid's knobs are the Train page's generated sliders (``train.group_knobs``), each with a range and
a number of values. **Start** hands a ``SweepSpec`` to ``core.sweep.start_sweep``, which launches the
scheduler (``python -m core sweep …``) and returns at once; the page only reads the sweep's manifest
and its trials' run directories, so a reload or a second tab (``/sweep?id=<id>``) finds it again.
"""
from __future__ import annotations

import math

import pandas as pd
import streamlit as st

from core.config import Knob
from core.data import DataError
from core.methods import REGISTRY
from core.runs import ACTIVE_STATES, RunStore, run_path
from core.sweep import (SweepSpec, SweepStore, cell_summary, default_sweeps_dir, grid_values, list_sweeps,
                        resume_sweep, start_sweep, stop_sweep, sweep_state, sweep_table)
from core.sweep.store import FAILED_STATES
from core.train import RunConfig
from pages import charts, common, train

LIVE_INTERVAL_S = 3.0  # as the Train page's live panel: a refresh costs the browser ~30 ms
SWEEP_QUERY = "id"     # /sweep?id=<sweep id>: a reload or a second tab finds the sweep again
SWEEP_ID = "sweep.id"  # the sweep this session shows
SPEC = "sweep.spec"    # the SweepSpec the widgets currently describe
CELL_KEY = "sweep.cell"
MAX_KNOBS = 4          # beyond two knobs the map becomes parallel coordinates; four is already 5⁴ runs
NOT_SWEPT = ("snapshot_size",)  # changes what Explore shows, not what the run learns
BACKENDS = {"local": "this machine", "ray": "Ray cluster"}
RESUMABLE = ("stopped", "died", "failed")  # sweep states a new scheduler can go on from


# -- compute --------------------------------------------------------------------------------------
def method_knobs(method: str) -> dict[str, Knob]:
    """Every knob of a run of ``method`` by name, in the Train page's order (its weights first)."""
    return {k.name: k for group in train.group_knobs(method).values() for k in group}


def knob_labels(method: str) -> dict[str, str]:
    """``alpha`` → ``α — alpha`` for every knob of ``method``."""
    return {name: train.knob_label(k) for name, k in method_knobs(method).items()}


def sweepable_knobs(method: str) -> list[Knob]:
    """The method's numeric knobs with a slider range, in the Train page's order (its weights first)."""
    return [k for k in method_knobs(method).values()
            if k.min is not None and k.max is not None and k.choices is None and k.type in (int, float)
            and k.name not in NOT_SWEPT]


def parse_seeds(text: str) -> list[int]:
    """``"0 1, 2"`` → ``[0, 1, 2]``; ``"3-5"`` → ``[3, 4, 5]``; a word that is neither is refused."""
    seeds = []
    for word in text.replace(",", " ").split():
        first, dash, last = word.partition("-")
        if not (first.isdigit() and (not dash or last.isdigit())):
            raise ValueError(f"seeds are whole numbers or ranges like 0-4, not {word!r}")
        seeds += range(int(first), int(last) + 1) if dash else [int(first)]
    if not seeds:
        raise ValueError("give at least one seed")
    return sorted(set(seeds))


def cell_runs(table: pd.DataFrame, cell: pd.Series, knobs: list[str]) -> list[str]:
    """The run ids of one cell's trials (every seed), from ``sweep_table``."""
    rows = table
    for knob in knobs:
        rows = rows[rows[knob] == cell[knob]]
    return [r for r in rows["run_id"] if isinstance(r, str) and r]


def cell_label(cell: pd.Series, knobs: list[str], labels: dict[str, str]) -> str:
    """``α — alpha = 0.5 · γ — gamma = 0.05 — 0.812 ± 0.013 (2)``, for the list of cells."""
    where = " · ".join(f"{labels.get(k, k)} = {charts.knob_value_text(cell[k])}" for k in knobs)
    return f"{where} — {charts.sweep_cell_text(cell).replace('<br>', ', ')}"


def sweep_figure(cells: pd.DataFrame, knobs: list[str], metric: str, method: str):
    """The map for this many knobs: a line with error bars (one), a heat map (two), parallel coordinates."""
    by_name, labels, title = method_knobs(method), knob_labels(method), charts.SCORES[metric]
    log = frozenset(k for k in knobs if k in by_name and by_name[k].log)
    if len(knobs) == 1:
        return charts.sweep_line(cells, knobs[0], title, labels, log=knobs[0] in log)
    if len(knobs) == 2:
        return charts.sweep_heatmap(cells, knobs[0], knobs[1], title, labels)
    return charts.sweep_parallel(cells, knobs, title, labels, log=log)


def trial_counts(table: pd.DataFrame) -> dict[str, int]:
    """Trials by state: finished, running (or starting), failed (or died), waiting (the rest)."""
    states = table["state"].fillna("").astype(str)
    finished, running = int((states == "finished").sum()), int(states.isin(ACTIVE_STATES).sum())
    failed = int(states.isin(FAILED_STATES).sum())
    return {"finished": finished, "running": running, "failed": failed,
            "waiting": len(table) - finished - running - failed}


def selected_cell(event) -> int | None:
    """The cell row a click on the map chose (its marker's ``customdata``), or None."""
    if event is None:
        return None
    points = event.get("selection", {}).get("points", []) if isinstance(event, dict) else event.selection.points
    for point in points:
        data = point.get("customdata")
        if data is not None:
            return int(data[0] if isinstance(data, (list, tuple)) else data)
    return None


# -- ui -------------------------------------------------------------------------------------------
def remember_range(widget, key: str, default: tuple, **kwargs) -> tuple:
    """``common.remember`` for a range slider: a slider is a range slider only when drawn with ``value=``
    a pair, which a value set through the session state cannot be; the backup restores it instead."""
    value = widget(key=key, value=tuple(st.session_state.get(f"_{key}", default)), **kwargs)
    st.session_state[f"_{key}"] = value
    return value


def knob_grid_ui(method: str, knob: Knob) -> list:
    """Range and number of values for one knob of the grid; returns its values."""
    label, key = train.knob_label(knob), f"sweep.{method}.{knob.name}"
    span, count = st.columns([3, 1], vertical_alignment="bottom")
    if knob.log:
        options = train.log_grid(float(knob.min), float(knob.max))
        low, high = remember_range(span.select_slider, f"{key}.range", (options[0], options[-1]), label=label,
                                    options=options, format_func=lambda v: f"{v:g}", help=knob.help)
    elif knob.type is int:
        low, high = remember_range(span.slider, f"{key}.range", (int(knob.min), int(knob.max)), label=label,
                                    min_value=int(knob.min), max_value=int(knob.max), step=int(knob.step or 1),
                                    help=knob.help)
    else:
        step = float(knob.step or (float(knob.max) - float(knob.min)) / 100)
        low, high = remember_range(span.slider, f"{key}.range", (float(knob.min), float(knob.max)), label=label,
                                    min_value=float(knob.min), max_value=float(knob.max), step=step,
                                    format=f"%.{max(0, -math.floor(math.log10(step)))}f", help=knob.help)
    n = common.remember(count.number_input, f"{key}.n", len(grid_values(method, knob.name)), label="n",
                        min_value=1, max_value=12, help="how many values across the range")
    values = grid_values(method, knob.name, int(n), low, high)
    st.caption(f"{knob.symbol or knob.name}: " + ", ".join(charts.knob_value_text(v) for v in values))
    return values


def settings_ui(data: str) -> SweepSpec:
    """Every widget of the left column; returns the sweep they describe."""
    method = train.method_ui("sweep.method")
    preset = train.preset_ui(method, data, "sweep.preset")
    knobs = {k.name: k for k in sweepable_knobs(method)}
    if not knobs:
        raise ValueError(f"{method} has no knob with a range to sweep")
    chosen = common.remember(st.multiselect, f"sweep.{method}.knobs", list(knobs)[:2], label="Knobs to sweep",
                             options=list(knobs), format_func=lambda n: train.knob_label(knobs[n]),
                             max_selections=MAX_KNOBS,
                             help="one knob: a line with error bars; two: a heat map; more: parallel coordinates")
    if not chosen:
        raise ValueError("choose at least one knob to sweep")
    grid = {name: knob_grid_ui(method, knobs[name]) for name in chosen}
    seeds = parse_seeds(common.remember(st.text_input, "sweep.seeds", "0 1", label="Seeds",
                                        help="each grid cell is trained once per seed, e.g. 0 1 2 or 0-4"))
    workers = common.remember(st.number_input, "sweep.workers", None, label="Workers", min_value=1, max_value=256,
                              placeholder="auto: one per GPU, or per two CPU cores",
                              help="trials trained at once; empty: one per GPU, or one per two CPU cores")
    device = common.remember(st.selectbox, "sweep.device", "auto", label="device", options=train.device_options(),
                             help="every trial's device; auto picks a CUDA GPU, then Apple's MPS, then the CPU")
    backend = common.remember(st.segmented_control, "sweep.backend", "local", label="Run on",
                              options=list(BACKENDS), format_func=BACKENDS.get) or "local"
    address = (common.remember(st.text_input, "sweep.address", "auto", label="Ray address",
                               help="auto: the cluster this machine belongs to; or ray://host:10001")
               if backend == "ray" else None)
    base = RunConfig.build(method, data, preset=preset)
    overrides = {}
    with st.expander("Fixed settings (every trial)"):
        for group in train.group_knobs(method).values():
            for knob in group:
                if knob.name in grid:
                    continue
                source = base.trainer if knob.name in base.trainer.field_names() else base.params
                value = train.knob_ui(knob, getattr(source, knob.name), f"sweep.{method}.{knob.name}")
                if value != getattr(source, knob.name):
                    overrides[knob.name] = value
    return SweepSpec(method=method, data=data, preset=preset, overrides=overrides, grid=grid, seeds=seeds,
                     workers=None if workers is None else int(workers), backend=backend, address=address,
                     device=device)


def sweep_ui(sweeps: pd.DataFrame) -> SweepStore | None:
    """Which sweep to show: this session's, else the URL's, else the newest; None when there is none."""
    ids = list(sweeps["id"])
    wanted = st.session_state.get(SWEEP_ID) or st.query_params.get(SWEEP_QUERY)
    if not ids:
        return None
    labels = {row.id: f"{row.id} · {row.knobs} · {row.n_trials} trials" for row in sweeps.itertuples()}  # no state: drawn once
    shown = common.remember(st.selectbox, "sweep.shown", wanted if wanted in ids else ids[0], label="Sweep",
                            options=ids, format_func=labels.get)
    st.session_state[SWEEP_ID] = shown
    st.query_params[SWEEP_QUERY] = shown
    return SweepStore(default_sweeps_dir() / shown)


def metric_ui() -> str:
    """``acc``, ``nmi`` or ``ari``: what the map's colour shows."""
    return common.remember(st.segmented_control, "sweep.metric", "acc", label="Colour", options=list(charts.SCORES),
                           format_func=charts.SCORES.get) or "acc"


# -- draw -----------------------------------------------------------------------------------------
def draw_progress(table: pd.DataFrame, state: str) -> None:
    """How many trials are done, running, failed and waiting."""
    counts = trial_counts(table)
    done = counts["finished"] + counts["failed"]
    st.progress(done / max(len(table), 1),
                text=f"{state} · {counts['finished']} of {len(table)} trials finished · {counts['running']} running · "
                     f"{counts['failed']} failed · {counts['waiting']} waiting")


def draw_cell_actions(table: pd.DataFrame, cells: pd.DataFrame, knobs: list[str], store: SweepStore,
                      chosen: int | None) -> None:
    """A select box of the cells (a click on the map picks one), what to open of the chosen one, the CSV."""
    labels = knob_labels(store.read_manifest()["spec"]["method"])
    if chosen is not None and chosen < len(cells):
        st.session_state[CELL_KEY] = chosen
    if st.session_state.get(CELL_KEY, 0) >= len(cells):
        st.session_state.pop(CELL_KEY)
    cell = st.selectbox("Cell (or click one on the map)", options=list(range(len(cells))), key=CELL_KEY,
                        format_func=lambda i: cell_label(cells.iloc[i], knobs, labels))
    run_ids = cell_runs(table, cells.iloc[cell], knobs)
    runs_button, explore_button, csv_button = st.columns(3)
    if runs_button.button("Open its runs", key="sweep.open_runs", disabled=not run_ids, width="stretch",
                          help="its seeds' curves overlaid on the Runs page"):
        st.session_state[common.SWEEP_CELL] = {"sweep": store.id, "runs": run_ids,
                                               "label": cell_label(cells.iloc[cell], knobs, labels).split(" — ")[0]}
        st.switch_page("pages/runs.py")
    explorable = [r for r in run_ids if RunStore(run_path(store.runs_dir(), r)).snapshot_epochs()]
    if explore_button.button("Explore its first seed", key="sweep.explore", disabled=not explorable,
                             width="stretch", help="its latent space on the Explore page"):
        common.restore(common.EXPLORE_RUN, explorable[0])
        st.switch_page("pages/explore.py")
    csv_button.download_button("Table CSV", table.to_csv(index=False), file_name=f"{store.id}.csv", mime="text/csv",
                               key="sweep.csv", width="stretch",
                               help="one row per trial: its knob values, seed, run, state and final scores")


def draw_sweep(store: SweepStore, metric: str) -> str:
    """The body of the live panel: progress, the map, the chosen cell's runs, the CSV; returns the state."""
    manifest = store.read_manifest()
    spec, state, table = manifest["spec"], sweep_state(store, manifest), sweep_table(store)
    knobs = list(spec["grid"])
    header, badge = st.columns([5, 1], vertical_alignment="center")
    header.markdown(f"**{REGISTRY[spec['method']].title}** on **{common.data_label(str(spec['data']))}** · "
                    f"{' × '.join(knobs)} × {len(spec['seeds'])} seed(s) · `{store.id}`")
    with badge:
        common.state_badge(state)
    draw_progress(table, state)
    cells = cell_summary(table, knobs, metric)
    event = st.plotly_chart(sweep_figure(cells, knobs, metric, spec["method"]), key="sweep.map",
                            on_select="rerun", selection_mode="points")
    if state == "failed":
        st.error(f"The sweep's scheduler failed: {manifest.get('reason') or 'no reason recorded'}.")
    failed = table[table["state"].isin(FAILED_STATES)]
    if len(failed):
        with st.expander(f"{len(failed)} failed trial(s): the others go on"):
            st.dataframe(failed[[*knobs, "seed", "run_id", "reason"]], hide_index=True)
    draw_cell_actions(table, cells, knobs, store, selected_cell(event))
    return state


def live_panel(store: SweepStore, metric: str, active: bool) -> None:
    """Re-read the sweep while it runs; one full rerun when it ends (to re-enable Start)."""

    @st.fragment(run_every=LIVE_INTERVAL_S if active else None)
    def panel():
        state = draw_sweep(store, metric)
        if active and state not in ACTIVE_STATES:
            st.rerun()

    panel()


def render() -> None:
    """The page: the grid's settings and Start/Stop on the left, the shown sweep's live map on the right."""
    st.title("Sweep")
    data = common.chosen_data()
    try:
        common.load_data(data)
    except DataError as err:
        st.error(f"The chosen data set cannot be loaded: {err} Pick another one on the Data page.")
        return
    settings, view = st.columns([1, 2.6], gap="large")
    with view:
        store = sweep_ui(list_sweeps(default_sweeps_dir()))
        state = sweep_state(store) if store is not None else None
        active = state in ACTIVE_STATES
    with settings:
        st.markdown(f"Data: **{common.data_label(data)}**")
        actions = st.container()
        try:
            spec = settings_ui(data)
        except ValueError as err:
            st.error(f"These settings cannot be used: {err}")
            return
        st.session_state[SPEC] = spec
        start_col, stop_col = actions.columns(2)
        if start_col.button("Start", type="primary", key="sweep.start", width="stretch", disabled=active,
                            help="the shown sweep is running: stop it first" if active else
                                 "each trial is an ordinary run; a scheduler process starts them"):
            try:
                new = start_sweep(spec, default_sweeps_dir(), common.runs_dir())
            except ValueError as err:
                st.error(f"This sweep cannot start: {err}")
            else:
                st.session_state[SWEEP_ID] = new.id
                st.query_params[SWEEP_QUERY] = new.id
                st.rerun()
        if state in RESUMABLE:  # in Stop's place: a sweep is either going on or can be resumed
            if stop_col.button("Resume", key="sweep.resume", width="stretch",
                               help="go on with the shown sweep: finished trials are kept, stopped ones continue "
                                    "from their checkpoint"):
                resume_sweep(store)
                st.rerun()
        elif stop_col.button("Stop", disabled=not active, key="sweep.stop", width="stretch",
                             help="every running trial ends after its batch, with a checkpoint"):
            stop_sweep(store)
            st.rerun()
    with view:
        if store is None:
            st.info("Choose one or two knobs, their ranges and the seeds, and press **Start**. Every trial is "
                    "an ordinary run (on **Runs** and **Explore** too); the map fills as they finish.")
        else:
            live_panel(store, metric_ui(), active)


if __name__ == "__main__":
    common.run_page(render)
