"""Teaching: every method explains itself, its loss-response panels against hand-computed points, and the
centroid trails of Explore.

The pages' side (the "How it works" panel under AppTest, the class demo, the trails checkbox) is at the end.
"""
from __future__ import annotations

import math
import re

import numpy as np
import pytest
import torch
from sklearn.decomposition import PCA
from sklearn.datasets import load_digits

from core.embed import Frame, centroid_trails, compute_frames, epoch_views
from core.methods import REGISTRY, get_method
from core.methods.ae_kmeans import linear_reconstruction_errors
from core.methods.cdc import pair_curves
from core.methods.dcss import membership_curves, pair_band
from core.methods.dec import two_centroid_curves
from core.methods.dscdan import affinity_curves, split_pair_loss
from core.methods.idec import balance_curves
from core.methods.kmeans import inertia, restart_inertias, restarts_panel
from core.methods.secu import dual_ascent_sizes, hardness_curves
from pages import charts

# A knob of each method that its panels must follow, and a second value for it.
MOVED_KNOB = {"kmeans": ("restarts", 7), "ae-kmeans": ("latent_dim", 4), "dec": ("alpha", 1.8),
              "idec": ("gamma", 1.0), "cdc": ("eta", 0.25), "decs": ("lam", 1.0), "secu": ("gamma", 0.5),
              "dcss": ("m", 2.5), "dscdan": ("n_neighbours", 6)}


def at(curves: dict, value: float, axis: str = "z") -> int:
    """The grid index of ``value``."""
    index = int(np.abs(np.asarray(curves[axis]) - value).argmin())
    assert abs(curves[axis][index] - value) < 1e-9, f"{value} is not on the grid"
    return index


# -- every method explains itself ---------------------------------------------------------------------
@pytest.mark.parametrize("name", list(REGISTRY))
def test_every_method_has_an_objective_its_symbols_sliders_and_a_short_text(name):
    method = get_method(name)
    assert method.objective and method.explanation and method.demo, name
    fields = {knob.name for knob in method.Config.knobs()}
    for symbol, knob in method.symbols.items():
        assert knob in fields, (name, knob)
        assert symbol in method.objective, (name, symbol)
    sentences = re.findall(r"[.!?](?:\s|$)", method.explanation)
    assert 3 <= len(sentences) <= 5, (name, len(sentences))
    assert re.search(r"ACC \d\.\d{3}", method.demo), method.demo  # the measured number, from bench/teaching.py


def test_the_cli_explains_every_method_on_request():
    from core.cli import describe_methods

    plain, explained = describe_methods(), describe_methods(explain=True)
    for method in REGISTRY.values():
        assert method.objective not in plain and f"objective: {method.objective}" in explained
    assert "α → alpha" in explained.replace("\\alpha", "α")


@pytest.mark.parametrize("name", list(REGISTRY))
def test_every_methods_panels_move_with_its_knob(name):
    method = get_method(name)
    knob, value = MOVED_KNOB[name]
    before = method.loss_curves(method.Config())
    after = method.loss_curves(method.Config().replace(**{knob: value}))
    assert before and len(before) == len(after)

    def content(panels):
        return [(p.title, p.marks, {k: (np.round(x, 9).tolist(), np.round(y, 9).tolist())
                                    for k, (x, y) in p.lines.items()}) for p in panels]

    assert content(before) != content(after), (name, knob)


# -- k-means and AE + k-means ----------------------------------------------------------------------------
def test_inertia_by_hand():
    points = np.array([[0.0], [1.0], [10.0], [11.0]])
    # each point is 0.5 from its centre: 4 × 0.25
    assert inertia(points, np.array([0, 0, 1, 1]), np.array([[0.5], [10.5]])) == pytest.approx(1.0)


def test_restarts_panel_keeps_the_best_start_so_far():
    single = restart_inertias(50)
    assert single.min() < single.max()  # the toy set has local minima, so restarts matter
    panel = restarts_panel(5)
    _, best = panel.lines["best of the first r"]
    np.testing.assert_allclose(best, np.minimum.accumulate(single))
    assert panel.lines["best of 5"][1][0] == pytest.approx(single[:5].min()) and panel.marks == {"r = 5": 5.0}


def test_linear_autoencoder_errors_are_pcas_discarded_variance():
    errors = linear_reconstruction_errors()
    x = load_digits().data / 16.0
    variances = PCA().fit(x).explained_variance_ * (len(x) - 1) / len(x)  # population variances per axis
    # a code of size d keeps the first d axes; the per-pixel MSE is what the others hold, over 64 pixels
    for d in (1, 10, 30):
        assert errors[d - 1] == pytest.approx(variances[d:].sum() / 64, rel=1e-6)
    assert errors[63] == pytest.approx(0.0, abs=1e-12)


# -- DEC and IDEC ------------------------------------------------------------------------------------
def test_dec_q_and_p_between_two_centroids_by_hand():
    curves = two_centroid_curves(alpha=1.0)
    i = at(curves, -1.0)
    # on μ₁: kernels 1 and (1 + 4)^−1 = 0.2, so q₁ = 1/1.2 = 5/6; the grid is symmetric (f₁ = f₂), so
    # p₁ = q₁²/(q₁² + q₂²) = (25/36)/(26/36) = 25/26
    assert curves["q"][i, 0] == pytest.approx(5 / 6) and curves["p"][i, 0] == pytest.approx(25 / 26)
    # KL = 25/26·ln((25/26)/(5/6)) + 1/26·ln((1/26)/(1/6)) = 0.961538·0.143101 − 0.038462·1.466337
    assert curves["kl"][i] == pytest.approx(0.0811994, abs=1e-6)
    assert curves["q"][at(curves, 0.0), 0] == pytest.approx(0.5)
    # α = 2: kernels 1 and (1 + 4/2)^−1.5 = 3^−1.5 = 0.192450, q₁ = 1/1.192450
    assert two_centroid_curves(alpha=2.0)["q"][i, 0] == pytest.approx(0.838609, abs=1e-6)


def test_idec_balance_by_hand():
    curves = balance_curves(gamma=0.1, alpha=1.0)
    i = at(curves, -1.0)
    # z₀ = −0.25: kernels 1/1.5625 = 0.64 and 1/2.5625 = 0.390244 → q = (0.621212, 0.378788),
    # p = q²/Σq² = (0.728969, 0.271031). At z = −1, q = (5/6, 1/6):
    # KL = 0.728969·ln(0.728969/0.833333) + 0.271031·ln(0.271031/0.166667) = −0.097539 + 0.131786
    assert curves["kl"][i] == pytest.approx(0.034247, abs=1e-5)
    assert curves["recon"][i] == pytest.approx(0.05 * 0.75 ** 2)  # 0.05·(−1 + 0.25)²
    assert curves["total"][i] == pytest.approx(0.028125 + 0.1 * 0.034247, abs=1e-5)
    # γ → 0: the code stays where it reconstructs best; a larger γ moves it towards μ₁, short of q = p
    assert balance_curves(gamma=1e-6)["z_best"] == pytest.approx(-0.25)
    assert -0.5 < balance_curves(gamma=1.0)["z_best"] < balance_curves(gamma=0.1)["z_best"] < -0.25


# -- CDC -------------------------------------------------------------------------------------------
def test_cdc_pair_losses_by_hand():
    curves = pair_curves(np.array([0.0, 1.0, 3.0]))
    # inputs 1 apart: kernel 1/(1 + 1) = 0.5, rows of C_X = (1, 0.5)/1.5. Codes r apart: kernel k = 1/(1 + r²),
    # sharpened rows (1, k²)/(1 + k²) (columns of a symmetric row-stochastic 2×2 sum to 1).
    # r = 0: (0.5, 0.5) → 0.5·ln(0.5/0.6667) + 0.5·ln(0.5/0.3333) = 0.5·(−0.287682 + 0.405465)
    assert curves["corr"][0] == pytest.approx(0.0588915, abs=1e-6)
    # r = 1: k = 0.5, (0.8, 0.2) → 0.8·ln(1.2) + 0.2·ln(0.6) = 0.145857 − 0.102165
    assert curves["corr"][1] == pytest.approx(0.043692, abs=1e-6)
    # affinity, centroids 0 and 3: at r = 0 both codes assign alike and sit together: nothing to correct
    assert curves["affinity"][0] == pytest.approx(0.0, abs=1e-9)
    # r = 3: q = (10/11, 1/11) and (1/11, 10/11); ‖Δq‖² = 2·(9/11)² = 1.338843 → k = 0.427562, sharpened
    # (1, k²)/(1 + k²) = (0.845446, 0.154554); codes: kernel 1/10 → (0.909091, 0.090909);
    # KL = 0.845446·ln(0.929991) + 0.154554·ln(1.700094) = −0.061363 + 0.082020
    assert curves["affinity"][2] == pytest.approx(0.020657, abs=1e-5)


# -- SeCu ------------------------------------------------------------------------------------------
def test_secu_hardness_weight_by_hand():
    curves = hardness_curves(np.array([0.0, 0.1, 1.0]), temperature=0.05)
    # s = 0: all ten logits 0, p = 0.1: weight 1 − p = 0.9, loss ln 10
    assert curves["hardness"][0] == pytest.approx(0.9) and curves["loss"][0] == pytest.approx(math.log(10))
    # s = 0.1: logit 0.1/0.05 = 2, p = e²/(e² + 9) = 7.389056/16.389056, 1 − p = 9/16.389056
    assert curves["hardness"][1] == pytest.approx(0.549147, abs=1e-6)
    # s = 1: p = e²⁰/(e²⁰ + 9), 1 − p ≈ 9e⁻²⁰ = 1.855e-8: an easy instance leaves its centre alone
    assert curves["hardness"][2] == pytest.approx(9 * math.exp(-20), rel=1e-4)


def test_secu_dual_ascent_by_hand():
    scores = torch.tensor([[0.05, 0.0]] * 4, dtype=torch.float64)
    sizes = dual_ascent_sizes(scores, gamma=0.9, eta=0.1, steps=3)
    # round 1: all four in cluster 0; ρ = max(0, 0.1·(0.45 − (1, 0))) = (0, 0.045): 0.05 > 0.045, still 0;
    # round 2 again, ρ = (0, 0.09); round 3: 0.09 > 0.05, all move to cluster 1
    np.testing.assert_array_equal(sizes, [[4, 0], [4, 0], [0, 4]])


# -- DCSS ------------------------------------------------------------------------------------------
def test_dcss_memberships_and_pair_band_by_hand():
    # centres ±1; u = −0.5: d = (0.25, 2.25). m = 2: p ∝ d^−1 = (4, 0.4444) → 0.9; m = 1.5: ∝ d^−2 = (16, 0.19753)
    assert membership_curves(2.0, np.array([-0.5]))["p"][0, 0] == pytest.approx(0.9)
    assert membership_curves(1.5, np.array([-0.5]))["p"][0, 0] == pytest.approx(16 / 16.197531, abs=1e-6)
    assert membership_curves(2.0, np.array([0.0]))["p"][0, 0] == pytest.approx(0.5)
    assert membership_curves(2.0, np.array([-0.5]))["weight"][0, 0] == pytest.approx(0.81)  # 0.9²
    band = pair_band(np.array([0.1, 0.2, 0.5, 0.8, 0.9]), zeta=0.8, gamma=0.2)
    # strict inequalities: s = γ and s = ζ are both ignored
    assert band["dissimilar"].tolist() == [1, 0, 0, 0, 0]
    assert band["ignored"].tolist() == [0, 1, 1, 1, 0]
    assert band["similar"].tolist() == [0, 0, 0, 0, 1]


# -- DSCDAN ------------------------------------------------------------------------------------------
def test_dscdan_affinity_and_spectral_loss_by_hand():
    curves = affinity_curves(n_neighbours=3)
    # nearest-other distances of the toy codes, sorted: 0.3 0.3 0.35 0.35 0.4 0.4 0.4 0.4 0.45 0.55 0.6 → s = 0.4
    assert curves["s"] == pytest.approx(0.4)
    # the code at 1.2: its 3 nearest are 0.8, 1.7, 0.35, and each of them has 1.2 among its own 3 nearest:
    # exp(−0.4²/0.32) = 0.606531, exp(−0.5²/0.32) = 0.457833, exp(−0.85²/0.32) = 0.104579.
    # 0 and 2.1 have 1.2 among theirs, not the other way round: half of exp(−1.2²/0.32) and exp(−0.9²/0.32)
    expected = [0.011109 / 2, 0.104579, 0.606531, 0.0, 0.457833, 0.079560 / 2] + [0.0] * 5
    np.testing.assert_allclose(curves["weight"], expected, atol=2e-6)
    # two codes d apart, split: W = exp(−d²/2s²) both ways, ‖Y₁ − Y₂‖² = 4, L = (1/2)·2·W·4 = 4W
    np.testing.assert_allclose(split_pair_loss(np.array([0.0, 1.0, 2.0]), 1.0),
                               [4.0, 4 * math.exp(-0.5), 4 * math.exp(-2.0)], rtol=1e-9)


# -- centroid trails -----------------------------------------------------------------------------------
def test_centroid_trails_follow_the_frames_with_centroids_up_to_the_epoch():
    def frame(epoch, centroids):
        return Frame(epoch, np.zeros((3, 2)), None if centroids is None else np.array(centroids, float), None, 0.0)

    frames = [frame(3, [[2, 2], [5, 5]]), frame(1, None), frame(2, [[0, 0], [4, 4]]), frame(4, [[3, 3], [6, 6]])]
    assert centroid_trails(frames, upto=1) is None  # pretraining: no centroids yet
    trails = centroid_trails(frames, upto=3)  # (K, F, 2): epochs 2 and 3, in order
    np.testing.assert_array_equal(trails, [[[0, 0], [2, 2]], [[4, 4], [5, 5]]])


def test_scatter_draws_trails_in_the_clusters_colours_and_every_replay_frame_its_own(synthetic_run):
    compute_frames(synthetic_run, "pca")
    views = epoch_views(synthetic_run, "pca")
    slots = np.arange(10)[::-1]
    figure = charts.scatter_figure(views[-1], "cluster", slots, [str(i) for i in range(10)], animation=views,
                                   trails=True)
    samples, centroids, *trails = figure.data
    assert len(trails) == 10 and trails[0].mode == "lines" and trails[0].line.color == charts.colour(slots[0])
    clustered = [v for v in views if v.frame.centroids is not None]
    assert len(trails[0].x) == len(clustered)  # one point per epoch with centroids
    np.testing.assert_allclose([trails[3].x[-1], trails[3].y[-1]], views[-1].frame.centroids[3])
    lengths = [len(frame.data[2].x) for frame in figure.frames]  # the trail of centroid 0, frame by frame
    assert lengths == [0] * (len(views) - len(clustered)) + list(range(1, len(clustered) + 1))
    plain = charts.scatter_figure(views[-1], "cluster", slots, [str(i) for i in range(10)], animation=views)
    assert len(plain.data) == 2 and all(len(frame.data) == 2 for frame in plain.frames)


# -- the pages ---------------------------------------------------------------------------------------
@pytest.fixture
def app(monkeypatch):
    from test_app_pages import app as page_app  # the same app under AppTest as the other page tests

    return page_app.__wrapped__(monkeypatch)


def test_how_it_works_of_every_method_renders_and_follows_its_knob(app):
    from test_app_pages import open_page, plotly_figures

    at = open_page(app, "train")
    for name, (knob, value) in MOVED_KNOB.items():
        method = get_method(name)
        at.selectbox(key="train.method").set_value(name).run()
        assert not at.exception, (name, [e.message for e in at.exception])
        assert any(e.label == f"How {method.title} works" for e in at.expander), name
        assert [e.value.strip("$\n") for e in at.latex] == [method.objective]
        assert any(" → slider **" in m.value and knob_symbol_shown(method, m.value) for m in at.markdown), name
        before = plotly_figures(at)["train.loss_curves"]
        widget_key = f"train.{name}.{knob}"
        log_knob = next(k for k in method.Config.knobs() if k.name == knob).log
        (at.select_slider if log_knob else at.slider)(key=widget_key).set_value(value).run()
        assert not at.exception, (name, [e.message for e in at.exception])
        assert plotly_figures(at)["train.loss_curves"] != before, (name, knob)


def knob_symbol_shown(method, markdown: str) -> bool:
    """Each symbol of the objective is on the line that names the sliders."""
    return all(f"${symbol}$" in markdown for symbol in method.symbols)


def test_class_demo_starts_the_fast_preset_on_digits_and_explore_follows_it(app, tmp_path):
    import time

    from core.launch import run_progress
    from core.runs import RunStore
    from pages import common, explore
    from test_app_pages import open_page, plotly_figures

    at = open_page(app, "train")
    at.selectbox(key="train.method").set_value("kmeans").run()  # k-means on pixels: a demo of seconds
    at.session_state[common.DATA] = "usps"  # the demo is on digits whatever was chosen
    at.slider(key="train.kmeans.restarts").set_value(7).run()
    at.button(key="train.demo").click().run()
    assert not at.exception, [e.message for e in at.exception]
    run_id = at.session_state[common.ACTIVE_RUN]
    store = RunStore(tmp_path / "runs" / run_id)
    config = store.read_config()
    assert (config["method"], config["data"], config["preset"], config["seed"]) == ("kmeans", "digits", "fast", 0)
    assert config["params"]["restarts"] == get_method("kmeans").presets("digits")["fast"]["restarts"]
    assert at.session_state[common.TRAIN_CONFIG]["data"] == "digits"  # the widgets show what runs
    deadline = time.monotonic() + 120
    while run_progress(store).active and time.monotonic() < deadline:
        time.sleep(0.5)
    assert store.read_status()["state"] == "finished", (store.path / "log.txt").read_text()
    at.session_state[explore.KIND_KEY] = "pca"
    at = open_page(at, "explore")
    assert at.session_state[common.EXPLORE_RUN] == run_id and at.checkbox(key=common.TRAILS).value
    _, _, *trails = plotly_figures(at)["explore.scatter"]["data"]
    assert len(trails) == 10 and all(t["mode"] == "lines" for t in trails)
    at.checkbox(key=common.TRAILS).uncheck().run()
    assert len(plotly_figures(at)["explore.scatter"]["data"]) == 2
