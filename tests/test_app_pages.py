"""Every page under Streamlit's AppTest, and the plain functions behind the live fragments.

AppTest runs the real ``app.py`` (navigation, sidebar) on the offline default data set. Runs and
caches go to each test's temporary folder (``conftest.isolated_dirs``).
"""
from __future__ import annotations

import base64
import io
import json
import time
from pathlib import Path

import numpy as np
import pytest
from streamlit.testing.v1 import AppTest

from core.data import DataError
from core.embed import compute_frames, epoch_view, epoch_views
from core.launch import run_progress
from core.methods import REGISTRY, get_method
from core.runs import RunStore
from core.train import RunConfig
from pages import charts, common, explore, train
from pages import data as data_page
from conftest import write_synthetic_run

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def app(monkeypatch):
    # No UMAP warm-up: no test here shows UMAP, and the compile would only slow the others down.
    monkeypatch.setenv("CLUSTERLAB_UMAP_WARMUP", "0")
    at = AppTest.from_file(str(ROOT / "app.py"), default_timeout=60)
    at.run()
    assert_no_error_hidden(at)
    return at


def assert_no_error_hidden(at: AppTest) -> None:
    """Neither an exception nor the sentence that stands for one (``common.unexpected_errors_shown_briefly``)."""
    assert not at.exception, [e.message for e in at.exception]
    assert common.UNEXPECTED_ERROR not in [e.value for e in at.error], "a page failed: see the log above"


def open_page(at: AppTest, name: str) -> AppTest:
    at.switch_page(f"pages/{name}.py").run()
    assert_no_error_hidden(at)
    return at


def plotly_figures(at: AppTest) -> dict[str, dict]:
    """The figures drawn on the page, by widget key, as plotly JSON."""
    return {element.proto.id.split("-")[-1] if not element.key else element.key: json.loads(element.proto.spec)
            for element in at.get("plotly_chart")}


def trace_values(trace: dict, axis: str = "x") -> np.ndarray:
    """A plotly trace's x or y, whether a list or plotly's base64 typed array."""
    values = trace.get(axis, [])
    if isinstance(values, dict):
        return np.frombuffer(base64.b64decode(values["bdata"]), dtype=values["dtype"])
    return np.asarray(values)


def n_points(trace: dict) -> int:
    """Points in a plotly trace."""
    return len(trace_values(trace))


# -- Data -----------------------------------------------------------------------------------------
def test_data_page_preselects_digits_and_describes_it(app):
    assert app.selectbox(key="data.builtin").value == "digits"
    assert app.session_state[common.DATA] == "digits"
    shown = {m.label: m.value for m in app.metric}
    assert shown["Images"] == "1,797" and shown["Image size"] == "8×8" and shown["Classes"] == "10"
    assert len(app.image) == 10  # one preview strip per class
    assert "Device:" in " ".join(m.value for m in app.sidebar.caption)


def test_an_unreadable_data_choice_is_an_error_not_a_traceback(app, tmp_path):
    broken = tmp_path / "broken.npz"
    broken.write_bytes(b"this is not an npz file")
    app.session_state[common.DATA] = str(broken)
    at = open_page(app, "train")
    (error,) = at.error
    assert "cannot be loaded" in error.value and "Data page" in error.value


def test_accept_upload_stores_a_valid_npz_and_refuses_a_bad_one():
    buffer = io.BytesIO()
    rng = np.random.default_rng(0)
    np.savez(buffer, x=rng.integers(0, 256, (40, 8, 8), dtype=np.uint8), y=np.repeat(np.arange(4), 10))
    path, sentence = data_page.accept_upload("blobs.npz", buffer.getvalue(), n_clusters=4)
    assert Path(path).is_file() and sentence.startswith("blobs.npz: 40 images of 8×8, 4 classes")
    with pytest.raises(DataError, match="at least"):
        data_page.accept_upload("blobs.npz", buffer.getvalue(), n_clusters=30)


# -- Train ----------------------------------------------------------------------------------------
def test_train_page_widgets_reach_the_run_config(app):
    at = open_page(app, "train")
    config = at.session_state[common.TRAIN_CONFIG]
    assert config["method"] == "idec" and config["preset"] == "fast" and config["data"] == "digits"
    assert config["trainer"] == RunConfig.build("idec", "digits", preset="fast").trainer.to_dict()
    at.slider(key="train.idec.alpha").set_value(1.5)
    at.slider(key="train.idec.epochs").set_value(7)
    at.select_slider(key="train.idec.gamma").set_value(0.2)
    at.slider(key="train.k").set_value(8)
    at.number_input(key="train.seed").set_value(3)
    at.run()
    config = at.session_state[common.TRAIN_CONFIG]
    assert config["params"]["alpha"] == 1.5 and config["params"]["gamma"] == 0.2
    assert config["trainer"]["epochs"] == 7 and config["n_clusters"] == 8 and config["seed"] == 3


def test_train_page_preset_sets_its_knobs_and_keeps_the_others(app):
    at = open_page(app, "train")
    at.slider(key="train.idec.epochs").set_value(7).run()
    at.slider(key="train.idec.alpha").set_value(1.5).run()
    at.segmented_control(key="train.preset").set_value("paper").run()
    config = at.session_state[common.TRAIN_CONFIG]
    fast, paper = RunConfig.build("idec", "digits", preset="fast"), RunConfig.build("idec", "digits", preset="paper")
    assert config["preset"] == "paper"
    assert config["trainer"]["epochs"] == paper.trainer.epochs != 7  # the preset sets the epochs
    assert config["params"]["alpha"] == 1.5 != paper.params.alpha    # and leaves α alone
    at.segmented_control(key="train.preset").set_value("fast").run()
    config = at.session_state[common.TRAIN_CONFIG]
    assert config["trainer"]["epochs"] == fast.trainer.epochs and config["params"]["alpha"] == 1.5


def test_train_page_knobs_follow_the_defaults_of_a_new_data_set(app):
    at = open_page(app, "train")
    at.segmented_control(key="train.preset").set_value("paper").run()
    at.slider(key="train.idec.alpha").set_value(1.5).run()
    at.slider(key="train.idec.update_interval").set_value(50).run()
    at.session_state[common.DATA] = "usps"  # what the Data page sets
    at.run()
    config = at.session_state[common.TRAIN_CONFIG]
    usps, digits = RunConfig.build("idec", "usps", preset="paper"), RunConfig.build("idec", "digits", preset="paper")
    assert config["data"] == "usps"
    assert config["params"]["update_interval"] == usps.params.update_interval != 50  # USPS has its own T
    assert config["trainer"]["pretrain_epochs"] == usps.trainer.pretrain_epochs != digits.trainer.pretrain_epochs
    assert config["params"]["alpha"] == 1.5  # the same default on both sets: the user's value stays


def test_train_page_offers_each_methods_own_presets(app):
    at = open_page(app, "train")
    at.selectbox(key="train.method").set_value("dscdan").run()
    control = at.segmented_control(key="train.preset")
    assert control.options == ["fast demo", "CPU budget", "paper", "official-v2", "official-v1", "defaults"]
    control.set_value("official-v1").run()
    assert at.session_state[common.TRAIN_CONFIG]["params"]["head"] == "tanh"  # official-v1's head
    at.selectbox(key="train.method").set_value("idec").run()  # IDEC has no official-v1: back to the demo
    assert at.session_state[common.TRAIN_CONFIG]["preset"] == "fast"
    assert at.segmented_control(key="train.preset").options == ["fast demo", "paper", "defaults"]


def test_dscdan_prior_reads_as_paper_text_against_official_code_and_the_official_presets_pick_the_code(app):
    at = open_page(app, "train")
    at.selectbox(key="train.method").set_value("dscdan").run()
    at.segmented_control(key="train.preset").set_value("cpu").run()
    prior = at.selectbox(key=train.knob_key("dscdan", "prior"))
    assert prior.options == ["paper text: N(0, I)", "official code: mixture N(ν_k, I)"]
    assert prior.value == "normal"
    at.segmented_control(key="train.preset").set_value("official-v1").run()
    assert at.selectbox(key=train.knob_key("dscdan", "prior")).value == "mixture"
    assert at.session_state[common.TRAIN_CONFIG]["params"]["prior"] == "mixture"


def test_train_page_draws_every_preset_of_every_method(app):
    at = open_page(app, "train")
    for method in REGISTRY:
        at.selectbox(key="train.method").set_value(method).run()
        for preset in get_method(method).presets("digits"):
            at.segmented_control(key="train.preset").set_value(preset).run()
            assert not at.exception, (method, preset)
            config = at.session_state[common.TRAIN_CONFIG]
            expected = RunConfig.build(method, "digits", preset=preset)
            assert (config["preset"], config["trainer"]) == (preset, expected.trainer.to_dict()), (method, preset)


def test_train_page_labels_sliders_with_symbols(app):
    at = open_page(app, "train")
    labels = {s.label for s in at.slider} | {s.label for s in at.select_slider}
    assert {"α — alpha", "γ — gamma", "T — update_interval", "tol"} <= labels


def test_start_launches_the_configured_run_and_the_panel_follows_it(app, tmp_path):
    at = open_page(app, "train")
    at.selectbox(key="train.method").set_value("kmeans").run()  # k-means on pixels: a run of seconds
    at.slider(key="train.kmeans.restarts").set_value(2).run()
    at.button(key="train.start").click().run()
    run_id = at.session_state[common.ACTIVE_RUN]
    store = RunStore(tmp_path / "runs" / run_id)
    config = store.read_config()
    assert config["method"] == "kmeans" and config["params"]["restarts"] == 2
    deadline = time.monotonic() + 120
    while run_progress(store).active and time.monotonic() < deadline:
        time.sleep(0.5)
    assert store.read_status()["state"] == "finished", (store.path / "log.txt").read_text()
    at.run()
    assert not at.exception
    assert any(run_id in m.value for m in at.markdown)
    assert any(s.value.startswith("Finished") for s in at.success)


def test_live_figures_show_every_epoch_of_the_run(synthetic_run):
    progress = run_progress(synthetic_run)
    figures = train.live_figures(progress, synthetic_run)
    scores = {t.name: len(t.x) for t in figures["scores"].data}
    assert scores["ACC"] == 4 and scores["NMI"] == 4  # init + 3 cluster epochs
    assert {t.name for t in figures["loss"].data} == {"total", "recon", "kl"}
    (bars,) = figures["sizes"].data
    assert list(bars.y) == list(progress.sizes) and len(bars.y) == 10
    assert train.progress_text(progress).startswith("cluster · epoch 6/6 · took")


def test_live_figures_draw_the_methods_diagnostics_and_other_readouts(synthetic_run):
    config = synthetic_run.read_config()
    synthetic_run.write_config({**config, "method": "dscdan"})  # its diagnostics: ortho_error, kernel_scale_s
    metrics = synthetic_run.read_metrics()
    cluster = metrics["phase"] == "cluster"
    metrics.loc[cluster, "ortho_error"] = [0.3, 0.2, 0.1]
    metrics["acc_argmax"] = metrics["acc"] - 0.2  # the readout DSCDAN scores beside k-means on Y
    synthetic_run.write_metrics(metrics.to_dict("records"))
    figures = train.live_figures(run_progress(synthetic_run), synthetic_run)
    (line,) = figures["diagnostics"].data  # kernel_scale_s was never recorded: no empty panel for it
    assert line.name == "ortho error" and list(line.x) == [4, 5, 6] and list(line.y) == [0.3, 0.2, 0.1]
    dashed = {t.name: t for t in figures["scores"].data if t.line.dash == "dash"}
    assert set(dashed) == {"ACC (argmax)"} and len(dashed["ACC (argmax)"].x) == 4


def test_live_figures_have_no_diagnostics_for_a_method_without_them(synthetic_run):
    assert train.live_figures(run_progress(synthetic_run), synthetic_run)["diagnostics"] is None  # IDEC


@pytest.mark.parametrize("sizes, expected", [
    ([10, 10, 10], None),                                 # balanced
    ([25, 3, 2], None),                                   # 25 · 3 / 30 = 2.5 × its share: not above 3
    ([50, 4, 3, 3], "cluster 0 holds 3.3× its balanced share."),  # 50 · 4 / 60 = 3.33
    ([5, 0, 5], "1 cluster is empty."),
    ([0, 40, 0, 0], "cluster 1 holds 4.0× its balanced share and 3 clusters are empty."),
])
def test_collapse_warning_by_hand(sizes, expected):
    warning = train.collapse_warning(np.array(sizes))
    assert warning is None if expected is None else warning.startswith("Collapse warning: " + expected)


def test_collapse_warning_names_decs_known_behaviour_instead_of_general_advice():
    from core.methods.decs import DECS
    warning = train.collapse_warning(np.array([5, 0, 5]), DECS.known_collapse)
    assert warning == "Collapse warning: 1 cluster is empty. " + DECS.known_collapse
    assert "official code empties the same clusters" in warning and "balance term" not in train.collapse_warning(
        np.array([5, 0, 5]), "Known.")


def test_train_page_draws_the_decs_loss_curves_and_they_follow_the_knobs(app):
    at = open_page(app, "train")
    at.selectbox(key="train.method").set_value("decs").run()

    def sq_at_fq1_zero_with_fq2_one():
        (trace,) = [t for t in plotly_figures(at)["train.loss_curves"]["data"] if t["name"] == "fq₂ = 1"]
        return float(trace_values(trace, "y")[0])

    # sq = (fq₁ + fq₂)/2 − λ((fq₁ − fq₂)/2)²; at fq₁ = 0, fq₂ = 1: 1/2 − λ/4, so 0.4 at λ = 0.4 (the default)
    assert sq_at_fq1_zero_with_fq2_one() == pytest.approx(0.4)
    at.slider(key="train.decs.lam").set_value(1.0).run()
    assert sq_at_fq1_zero_with_fq2_one() == pytest.approx(0.25)  # 1/2 − 1/4
    at.slider(key="train.decs.threshold").set_value(0.5).run()
    shapes = plotly_figures(at)["train.loss_curves"]["layout"]["shapes"]
    assert 0.5 in [shape["x0"] for shape in shapes]  # the mark of t moved to the new value


def test_log_grid_has_one_two_five_steps_and_keeps_the_value():
    assert train.log_grid(1e-4, 1e-2, 3e-3) == [1e-4, 2e-4, 5e-4, 1e-3, 2e-3, 3e-3, 5e-3, 1e-2]


# -- Explore --------------------------------------------------------------------------------------
def test_explore_page_without_runs_says_how_to_start(app):
    at = open_page(app, "explore")
    assert any("Train" in i.value for i in at.info)


def test_explore_page_draws_the_epoch_with_centroids_and_confusion(app, synthetic_run):
    app.session_state[explore.KIND_KEY] = "pca"
    at = open_page(app, "explore")
    figures = plotly_figures(at)
    samples, centroids = figures["explore.scatter"]["data"]
    assert n_points(samples) == 300 and n_points(centroids) == 10
    assert centroids["marker"]["symbol"] == "x" and centroids["marker"]["color"] == "black"
    assert "explore.confusion" in figures
    assert at.select_slider(key=explore.EPOCH_KEY).value == 6


def test_replay_carries_every_ready_epoch_as_a_browser_side_frame(synthetic_run):
    compute_frames(synthetic_run, "pca")
    views = epoch_views(synthetic_run, "pca")
    figure = charts.scatter_figure(views[-1], "cluster", np.arange(10), [str(i) for i in range(10)],
                                   animation=views, phases={1: "pretrain", 3: "init"})
    assert [f.name for f in figure.frames] == [str(e) for e in synthetic_run.snapshot_epochs()]
    first, init = figure.frames[0], figure.frames[2]
    assert len(first.data[1].x) == 0 and len(init.data[1].x) == 10  # centroids from the init epoch on
    assert set(np.asarray(first.data[0].marker.color)) == {10}  # "no cluster yet" during pretraining
    assert first.layout.annotations[0].text == "epoch 1 · pretrain"
    (menu,) = figure.layout.updatemenus
    assert menu.buttons[0].method == "animate"


def test_selected_points_ignore_centroid_clicks():
    event = {"selection": {"points": [{"curve_number": 0, "point_index": 7}, {"curve_number": 1, "point_index": 2},
                                      {"curve_number": 0, "point_index": 3}]}}
    assert explore.selected_points(event) == [3, 7]


def test_scatter_colours_by_what_the_epoch_has(synthetic_run):
    compute_frames(synthetic_run, "pca")
    pretraining = epoch_view(synthetic_run, "pca", 1)
    figure = charts.scatter_figure(pretraining, "cluster", np.arange(10), [str(i) for i in range(10)])
    samples, centroids = figure.data
    assert {stop[1] for stop in samples.marker.colorscale} == {"#4e79a7"} and len(centroids.x) == 0
    clustered = epoch_view(synthetic_run, "pca", 6)
    figure = charts.scatter_figure(clustered, "changed", np.arange(10), [str(i) for i in range(10)])
    np.testing.assert_array_equal(figure.data[0].marker.color, clustered.changed.astype(int))
    assert list(figure.data[0].marker.colorbar.ticktext) == ["same cluster", "changed"]


# -- Runs -----------------------------------------------------------------------------------------
def test_runs_page_lists_runs_with_downloads(app, synthetic_run):
    at = open_page(app, "runs")
    (table,) = at.dataframe
    assert synthetic_run.id in list(table.value["id"]) and list(table.value["state"]) == ["finished"]
    assert {b.label for b in at.download_button} == {"Metrics CSV", "Assignments CSV"}
    figures = plotly_figures(at)
    (line,) = figures["runs.overlay"]["data"]
    assert line["name"] == synthetic_run.id and n_points(line) == 4


def test_train_again_opens_train_with_the_runs_settings(app, tmp_path):
    # beyond what the sliders offer: 3,000 epochs (max 2,000) and a learning rate off the 1-2-5 grid
    overrides = {"alpha": 1.3, "epochs": 3000, "update_interval": 70, "pretrain_lr": 3e-4}
    config = RunConfig.build("dec", "usps", seed=4, preset="paper", overrides=overrides).to_dict()
    store = RunStore.create(tmp_path / "runs", "20260102-000000-dec-usps-s4-test", {**config, "n_clusters": 12})
    at = open_page(app, "train")
    at.slider(key="train.idec.alpha").set_value(1.5).run()  # the page shows other settings before
    at = open_page(at, "runs")
    at.button(key=f"runs.again.{store.id}").click().run()
    assert not at.exception, [e.message for e in at.exception]
    shown = at.session_state[common.TRAIN_CONFIG]  # what the Train page's widgets now describe
    assert shown == {**config, "n_clusters": 12}
    assert at.session_state[common.ACTIVE_RUN] == store.id


def test_explore_button_opens_the_run_it_belongs_to(app, synthetic_run, tmp_path):
    older = write_synthetic_run(tmp_path / "runs", run_id="20251231-000000-idec-digits-s1-test")
    oldest = write_synthetic_run(tmp_path / "runs", run_id="20251230-000000-idec-digits-s2-test")
    at = open_page(app, "explore")
    assert at.selectbox(key=common.EXPLORE_RUN).value == synthetic_run.id  # the newest, first time
    at.session_state[common.ACTIVE_RUN] = oldest.id  # Train follows another run now: Explore's default moves
    at = open_page(at, "runs")
    at.button(key=f"runs.explore.{older.id}").click().run()
    assert not at.exception, [e.message for e in at.exception]
    assert at.selectbox(key=common.EXPLORE_RUN).value == older.id


def test_runs_page_shows_the_settings_that_differ(app, synthetic_run, tmp_path):
    other = write_synthetic_run(tmp_path / "runs", run_id="20251231-000000-idec-digits-s1-test")
    other.write_config({**other.read_config(), "seed": 1, "params": {**other.read_config()["params"], "alpha": 0.7}})
    at = open_page(app, "runs")  # with no row selected, the newest runs are compared
    (table,) = [frame for frame in at.dataframe if frame.key != "runs.table"]
    assert list(table.value.columns) == ["seed", "alpha"]
    assert table.value.loc[other.id].tolist() == ["1", "0.7"] and table.value.loc[synthetic_run.id].tolist() == ["0", "1.0"]


def test_runs_page_without_runs(app):
    at = open_page(app, "runs")
    assert any("No runs" in i.value for i in at.info)
