"""The Sweep page under AppTest, its map figures from hand-built tables, and the Runs page's sweep filter.

A sweep written on disk (``written_sweep``: a manifest from ``create_sweep`` and synthetic runs with
hand-set final scores) stands for one in progress; one test starts a real two-trial k-means sweep
from the page.
"""
from __future__ import annotations

import math
import time

import numpy as np
import pandas as pd
import pytest

from core.runs import RunStore
from core.sweep import SweepSpec, SweepStore, cell_summary, control, create_sweep, grid_values, sweep_state
from pages import charts
from pages import sweep as sweep_page
from conftest import write_synthetic_run
from test_app_pages import app, open_page, plotly_figures, trace_values  # noqa: F401 (app: a fixture)

# Final ACC of each trial of the written sweep, by (α, γ, seed); None: no run yet; a string: its state
WRITTEN = {(0.5, 0.1, 0): 0.80, (0.5, 0.1, 1): 0.90,          # mean 0.85, sd 0.0707
           (0.5, 1.0, 0): 0.70, (0.5, 1.0, 1): "failed",      # one seed finished, one failed
           (1.0, 0.1, 0): "running", (1.0, 0.1, 1): None,     # nothing finished yet: pending
           (1.0, 1.0, 0): 0.60, (1.0, 1.0, 1): 0.64}          # mean 0.62, sd 0.0283
FAILURE = "loss became NaN at epoch 3"


@pytest.fixture
def written_sweep(tmp_path) -> SweepStore:
    """A 2 × 2 IDEC sweep (α × γ, seeds 0 and 1) in progress, written directly (see ``WRITTEN``)."""
    spec = SweepSpec("idec", "digits", "fast", grid={"alpha": [0.5, 1.0], "gamma": [0.1, 1.0]}, seeds=[0, 1])
    store = create_sweep(spec, tmp_path / "sweeps", tmp_path / "runs")
    trials = store.read_manifest()["trials"]
    for n, trial in enumerate(trials):
        outcome = WRITTEN[trial["settings"]["alpha"], trial["settings"]["gamma"], trial["seed"]]
        if outcome is None:
            continue
        run = write_synthetic_run(tmp_path / "runs", f"20260101-0000{n:02d}-idec-digits-s{trial['seed']}-sweep",
                                  n_samples=200, state="finished" if isinstance(outcome, float) else outcome)
        metrics = run.read_metrics()
        metrics.loc[metrics.index[-1], "acc"] = outcome if isinstance(outcome, float) else math.nan
        run.write_metrics(metrics.to_dict("records"))
        run.write_config({**run.read_config(), "sweep": store.id, "seed": trial["seed"]})
        if outcome == "failed":
            run.write_status("failed", reason=FAILURE)
        trial["run_id"] = run.id
    store.update_manifest(trials=trials, state="running")
    return store


def test_sweep_page_without_sweeps_says_how_to_start(app):
    at = open_page(app, "sweep")
    assert any("Start" in i.value for i in at.info)
    assert "sweep.map" not in plotly_figures(at)
    spec = at.session_state[sweep_page.SPEC]  # the widgets' first sweep: IDEC, fast demo, its first two weights
    assert (spec.method, spec.data, spec.preset, spec.seeds) == ("idec", "digits", "fast", [0, 1])
    assert spec.grid == {"alpha": grid_values("idec", "alpha"), "update_interval": grid_values("idec", "update_interval")}


def test_sweep_page_widgets_build_the_sweep_spec(app):
    at = open_page(app, "sweep")
    at.multiselect(key="sweep.idec.knobs").set_value(["alpha", "gamma"]).run()
    at.number_input(key="sweep.idec.alpha.n").set_value(3).run()
    at.select_slider(key="sweep.idec.gamma.range").set_range(0.1, 1.0).run()
    at.number_input(key="sweep.idec.gamma.n").set_value(2).run()
    at.text_input(key="sweep.seeds").input("0 2-3").run()
    at.number_input(key="sweep.workers").set_value(2).run()
    at.slider(key="sweep.idec.epochs").set_value(3).run()  # a fixed setting, under the expander
    assert not at.exception, [e.message for e in at.exception]
    spec = at.session_state[sweep_page.SPEC]
    # α over its slider range 0.5 … 2 on its 0.1 step (1.25 → 1.3); γ log-spaced over the narrowed range
    assert spec.grid == {"alpha": [0.5, 1.3, 2.0], "gamma": [0.1, 1.0]}
    assert spec.seeds == [0, 2, 3] and spec.workers == 2 and spec.overrides == {"epochs": 3}
    assert (spec.method, spec.preset, spec.backend) == ("idec", "fast", "local")
    assert [c.value for c in at.caption if c.value.startswith("γ:")] == ["γ: 0.1, 1"]


def test_sweep_page_refuses_seeds_it_cannot_read(app):
    at = open_page(app, "sweep")
    at.text_input(key="sweep.seeds").input("0 one").run()
    (error,) = at.error
    assert "cannot be used" in error.value and "'one'" in error.value


@pytest.mark.parametrize("text, seeds", [("0 1", [0, 1]), ("3, 1 1", [1, 3]), ("0-2 5", [0, 1, 2, 5])])
def test_parse_seeds_by_hand(text, seeds):
    assert sweep_page.parse_seeds(text) == seeds


def test_sweep_page_draws_the_heat_map_of_a_sweep_in_progress(app, written_sweep):
    app.query_params[sweep_page.SWEEP_QUERY] = written_sweep.id  # /sweep?id=… (a reload, a second tab)
    at = open_page(app, "sweep")
    figure = plotly_figures(at)["sweep.map"]
    waiting, means, cells = figure["data"]
    assert figure["layout"]["xaxis"]["categoryarray"] == ["0.5", "1"]  # α
    assert figure["layout"]["yaxis"]["categoryarray"] == ["0.1", "1"]  # γ
    # rows: γ = 0.1, 1; columns: α = 0.5, 1
    assert means["z"][0][0] == pytest.approx(0.85) and means["z"][1][0] == pytest.approx(0.70)
    assert means["z"][0][1] is None and means["z"][1][1] == pytest.approx(0.62)
    assert means["text"] == [["0.850 ± 0.071 (2)", "pending"], ["0.700 (1)<br>1 failed", "0.620 ± 0.028 (2)"]]
    assert waiting["z"] == [[None, 0.0], [None, None]]  # the pending cell is grey
    assert any(FAILURE in text for text in cells["hovertext"])
    progress = at.get("progress")[0].proto.text
    assert "5 of 8 trials finished" in progress and "1 running" in progress and "1 failed" in progress
    assert at.download_button(key="sweep.csv").label == "Table CSV"


def test_stop_then_resume_the_shown_sweep(app, written_sweep, monkeypatch):
    launched = []
    monkeypatch.setattr(control, "launch_scheduler", lambda store: launched.append(store.id))  # no training here
    app.query_params[sweep_page.SWEEP_QUERY] = written_sweep.id
    at = open_page(app, "sweep")
    assert "sweep.resume" not in [b.key for b in at.button] and not at.button(key="sweep.stop").disabled
    at.button(key="sweep.stop").click().run()
    (running,) = [t["run_id"] for t in written_sweep.read_manifest()["trials"]
                  if RunStore(written_sweep.runs_dir() / str(t["run_id"])).read_status().get("state") == "running"]
    assert written_sweep.stop_requested() and RunStore(written_sweep.runs_dir() / running).stop_requested()
    written_sweep.update_manifest(state="stopped")  # what its scheduler writes once the trials have stopped
    at.run()
    assert "sweep.stop" not in [b.key for b in at.button]  # Resume in its place
    at.button(key="sweep.resume").click().run()
    assert launched == [written_sweep.id] and not written_sweep.stop_requested()


def test_a_cell_opens_its_runs_on_the_runs_page(app, written_sweep):
    app.query_params[sweep_page.SWEEP_QUERY] = written_sweep.id
    at = open_page(app, "sweep")
    at.selectbox(key=sweep_page.CELL_KEY).set_value(0).run()  # α = 0.5, γ = 0.1 (what a click on the map picks)
    at.button(key="sweep.open_runs").click().run()
    assert not at.exception, [e.message for e in at.exception]
    table = at.dataframe(key="runs.table").value
    expected = [t["run_id"] for t in written_sweep.read_manifest()["trials"][:2]]
    assert sorted(table["id"]) == sorted(expected)
    overlay = plotly_figures(at)["runs.overlay"]["data"]
    assert sorted(line["name"] for line in overlay) == sorted(expected)  # both seeds' curves, overlaid
    at = open_page(at, "runs")  # AppTest reruns the page it was told to, not the one switched to
    assert len(at.dataframe(key="runs.table").value) == 2  # the cell stays chosen
    at.button(key="runs.all").click().run()
    assert len(at.dataframe(key="runs.table").value) == 7  # every run again


def test_runs_page_filters_by_sweep(app, written_sweep, tmp_path):
    outsider = write_synthetic_run(tmp_path / "runs", "20260102-000000-idec-digits-s0-alone")
    at = open_page(app, "runs")
    assert outsider.id in list(at.dataframe(key="runs.table").value["id"])
    at.selectbox(key="runs.sweep").set_value(written_sweep.id).run()
    shown = list(at.dataframe(key="runs.table").value["id"])
    assert outsider.id not in shown and len(shown) == 7  # the sweep's trials that have a run


def test_start_launches_a_real_sweep_and_its_line_fills(app):
    at = open_page(app, "sweep")
    at.selectbox(key="sweep.method").set_value("kmeans").run()  # k-means on pixels: trials of seconds
    assert at.multiselect(key="sweep.kmeans.knobs").value == ["restarts"]
    at.slider(key="sweep.kmeans.restarts.range").set_range(1, 2).run()
    at.number_input(key="sweep.kmeans.restarts.n").set_value(2).run()
    at.text_input(key="sweep.seeds").input("0").run()
    at.number_input(key="sweep.workers").set_value(2).run()  # both trials at once
    at.button(key="sweep.start").click().run()
    assert not at.exception, [e.message for e in at.exception]
    store = SweepStore(sweep_page.default_sweeps_dir() / at.session_state[sweep_page.SWEEP_ID])
    assert at.query_params[sweep_page.SWEEP_QUERY] == store.id
    assert store.read_manifest()["spec"]["grid"] == {"restarts": [1, 2]}
    deadline = time.monotonic() + 180
    while sweep_state(store) in ("queued", "running") and time.monotonic() < deadline:
        time.sleep(0.5)
    assert sweep_state(store) == "finished", (store.path / "log.txt").read_text()
    at.run()
    (line,) = plotly_figures(at)["sweep.map"]["data"]  # one knob: a line with error bars
    assert list(trace_values(line)) == [1, 2] and all(0 < y <= 1 for y in trace_values(line, "y"))
    trials = store.read_manifest()["trials"]
    assert all(RunStore(store.runs_dir() / t["run_id"]).read_config()["sweep"] == store.id for t in trials)


# -- the figures, from hand-built tables ----------------------------------------------------------------
def hand_table() -> pd.DataFrame:
    """Trials of a 2 × 2 grid (α × γ) over two seeds, as ``sweep_table`` gives them."""
    rows = [(0.5, 0.1, 0, "finished", 0.80), (0.5, 0.1, 1, "finished", 0.90),
            (0.5, 1.0, 0, "finished", 0.70), (0.5, 1.0, 1, "failed", math.nan),
            (1.0, 0.1, 0, "running", math.nan), (1.0, 0.1, 1, "pending", math.nan),
            (1.0, 1.0, 0, "finished", 0.60), (1.0, 1.0, 1, "finished", 0.64)]
    table = pd.DataFrame(rows, columns=["alpha", "gamma", "seed", "state", "acc"])
    table["reason"] = np.where(table["state"] == "failed", FAILURE, "")
    table["run_id"] = [f"run{i}" if state != "pending" else None for i, state in enumerate(table["state"])]
    return table


def test_heatmap_from_a_hand_built_table():
    cells = cell_summary(hand_table(), ["alpha", "gamma"], "acc")
    figure = charts.sweep_heatmap(cells, "alpha", "gamma", "ACC", {"alpha": "α — alpha", "gamma": "γ — gamma"})
    waiting, means, markers = figure.data
    assert list(figure.layout.xaxis.categoryarray) == ["0.5", "1"] and figure.layout.xaxis.title.text == "α — alpha"
    z = np.array(means.z, dtype=float)
    np.testing.assert_allclose(z, [[0.85, np.nan], [0.70, 0.62]], atol=1e-12)
    assert [list(row) for row in means.text] == [["0.850 ± 0.071 (2)", "pending"],
                                                 ["0.700 (1)<br>1 failed", "0.620 ± 0.028 (2)"]]
    np.testing.assert_array_equal(np.array(waiting.z, dtype=float), [[np.nan, 0.0], [np.nan, np.nan]])
    # one clickable marker per cell, carrying its row of the summary and its hover text
    assert list(markers.customdata) == [0, 1, 2, 3] and list(markers.x) == ["0.5", "0.5", "1", "1"]
    hover = dict(zip(zip(markers.x, markers.y), markers.hovertext))
    assert hover["0.5", "1"] == f"α — alpha = 0.5 · γ — gamma = 1<br>ACC 0.700 over 1 seed<br>1 failed: {FAILURE}"
    assert hover["1", "0.1"] == "α — alpha = 1 · γ — gamma = 0.1<br>2 trial(s) pending"


def test_a_cell_whose_trials_all_failed_is_marked_failed():
    table = hand_table()
    table.loc[table["alpha"].eq(1.0) & table["gamma"].eq(0.1), ["state", "reason"]] = ["failed", FAILURE]
    cells = cell_summary(table, ["alpha", "gamma"], "acc")
    figure = charts.sweep_heatmap(cells, "alpha", "gamma", "ACC")
    waiting, means, _ = figure.data
    assert means.text[0][1] == "failed" and waiting.z[0][1] == 1.0  # the pink of FAILED_COLOUR


def test_line_for_one_knob_has_sd_error_bars_and_marks_pending_values():
    table = hand_table()
    one = table[table["gamma"] == 1.0].drop(columns="gamma")
    one = pd.concat([one, pd.DataFrame([{"alpha": 2.0, "seed": 0, "state": "pending", "acc": math.nan, "reason": "",
                                         "run_id": None}])], ignore_index=True)
    cells = cell_summary(one, ["alpha"], "acc")
    figure = charts.sweep_line(cells, "alpha", "ACC")
    (line,) = figure.data
    assert list(line.x) == [0.5, 1.0] and list(line.y) == pytest.approx([0.70, 0.62])
    assert list(line.error_y.array) == pytest.approx([0.0, math.sqrt(0.0008)])  # one seed: no bar; sd(0.60, 0.64)
    (mark,) = figure.layout.annotations
    assert mark.x == 2.0 and mark.text == "pending"


def test_parallel_coordinates_for_three_knobs():
    table = hand_table()
    table["lr"] = 1e-3
    table.loc[table["seed"] == 1, "lr"] = 1e-2  # a third knob: each seed its own lr here
    cells = cell_summary(table, ["alpha", "gamma", "lr"], "acc")
    figure = charts.sweep_parallel(cells, ["alpha", "gamma", "lr"], "ACC", log=frozenset({"lr"}))
    (trace,) = figure.data
    labels = [d.label for d in trace.dimensions]
    assert labels == ["alpha", "gamma", "lr", "mean ACC"]
    scored = cells[cells["n"] > 0]
    assert list(trace.dimensions[3].values) == pytest.approx(list(scored["mean"]))
    assert list(trace.dimensions[2].ticktext) == ["0.001", "0.01"] and list(trace.dimensions[2].tickvals) == [-3, -2]
    assert "still without a finished trial" in figure.layout.title.text


def test_selected_cell_reads_the_clicked_markers_row():
    event = {"selection": {"points": [{"curve_number": 2, "point_index": 3, "customdata": 3}]}}
    assert sweep_page.selected_cell(event) == 3
    assert sweep_page.selected_cell({"selection": {"points": []}}) is None


def test_grid_values_over_a_narrowed_range():
    assert grid_values("idec", "gamma", 3, 0.01, 0.1) == [0.01, 0.0316, 0.1]  # log-spaced, 3 significant digits
    assert grid_values("idec", "alpha", 4, 1.0, 1.6) == [1.0, 1.2, 1.4, 1.6]  # on α's 0.1 step
    assert grid_values("idec", "update_interval", 3, 10, 20) == [10, 15, 20]
