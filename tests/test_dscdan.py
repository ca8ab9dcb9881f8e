"""DSCDAN's pieces against values worked out by hand, where its gradients flow, and a short digits run."""
import math

import numpy as np
import pytest
import torch

from core.data import load_dataset
from core.methods import Batch
from core.methods.dscdan import (DSCDAN, DSCDANConfig, align_labels, categorical_kl_uniform, gaussian_kl, js_mi_loss,
                                 knn_affinity, mean_p_log_p, mixture_kl, orthonormalise, orthonormality_error,
                                 reparameterise, spectral_loss, squared_error)
from core.runs import RunStore
from core.train import AutoencoderCache, RunConfig, Trainer

LINE = torch.tensor([[0.0], [1.0], [3.0], [7.0], [15.0]])  # nearest others at 1, 1, 2, 4, 8 → median 2


# -- the autoencoder's losses ----------------------------------------------------------------------
def test_squared_error_sums_pixels_and_averages_the_batch():
    # image 0: 1² + 2² = 5; image 1: 0 → (5 + 0)/2
    a = torch.tensor([[[[1.0, 2.0]]], [[[0.0, 0.0]]]])
    assert squared_error(a, torch.zeros_like(a)).item() == pytest.approx(2.5)


@pytest.mark.parametrize("positive, negative, expected", [
    (0.0, 0.0, 2 * math.log(2)),                       # softplus(0) = ln 2 on both sides
    (math.log(3), -math.log(3), 2 * math.log(4 / 3)),  # softplus(−ln 3) = ln(1 + 1/3) on both sides
])
def test_js_mi_loss_by_hand(positive, negative, expected):
    loss = js_mi_loss(torch.full((4, 2, 2), positive), torch.full((4, 2, 2), negative))
    assert loss.item() == pytest.approx(expected)


def test_gaussian_kl_by_hand():
    # μ = (1, 0), log σ² = (0, ln 2): ½[(1 + 1 − 0 − 1) + (0 + 2 − ln 2 − 1)] = 1 − ½ ln 2
    kl = gaussian_kl(torch.tensor([[1.0, 0.0]]), torch.tensor([[0.0, math.log(2)]]))
    assert kl.item() == pytest.approx(1 - 0.5 * math.log(2))


def test_mixture_kl_by_hand():
    # d = 1, μ = 0, σ = 1; ν = (0, 2): KL = (0, ½·4) = (0, 2); P = (1/4, 3/4) → 1.5
    kl = mixture_kl(torch.zeros(1, 1), torch.zeros(1, 1), torch.tensor([[0.25, 0.75]]), torch.tensor([[0.0], [2.0]]))
    assert kl.item() == pytest.approx(1.5)
    # one component at the origin with P = 1 is the plain prior KL
    mu, logvar = torch.randn(5, 3), torch.randn(5, 3)
    torch.testing.assert_close(mixture_kl(mu, logvar, torch.ones(5, 1), torch.zeros(1, 3)), gaussian_kl(mu, logvar))


def test_mixture_kl_with_a_variance_and_two_means_by_hand():
    # μ = (1, 0), log σ² = (0, ln 2), so σ² = (1, 2).
    # ν_1 = (0, 0): ½[(1 + 1 − 0 − 1) + (2 + 0 − ln 2 − 1)] = 1 − ½ ln 2
    # ν_2 = (1, 2): ½[(1 + 0 − 0 − 1) + (2 + 4 − ln 2 − 1)] = 2.5 − ½ ln 2
    # P = (½, ½) → 1.75 − ½ ln 2; a second sample with P = (0, 1) at μ = ν_2, σ = 1 adds 0 → batch mean halves it
    mu = torch.tensor([[1.0, 0.0], [1.0, 2.0]])
    logvar = torch.tensor([[0.0, math.log(2)], [0.0, 0.0]])
    p = torch.tensor([[0.5, 0.5], [0.0, 1.0]])
    nu = torch.tensor([[0.0, 0.0], [1.0, 2.0]])
    assert mixture_kl(mu, logvar, p, nu).item() == pytest.approx((1.75 - 0.5 * math.log(2)) / 2)


@pytest.mark.parametrize("p, expected", [
    ([0.5, 0.5], 0.0),                                                      # uniform
    ([1.0, 0.0], math.log(2)),                                              # one-hot: 0 + ln 2
    ([0.75, 0.25], 0.75 * math.log(0.75) + 0.25 * math.log(0.25) + math.log(2)),
])
def test_categorical_kl_uniform_by_hand(p, expected):
    assert categorical_kl_uniform(torch.tensor([p])).item() == pytest.approx(expected, abs=1e-6)


def test_categorical_term_averages_the_batch_by_hand():
    # Σ_k P log P per row: (¼, ¼, ¼, ¼) → 4·¼ ln ¼ = −ln 4; (1, 0, 0, 0) → 0 (0 log 0 = 0); batch mean −½ ln 4 = −ln 2
    p = torch.tensor([[0.25, 0.25, 0.25, 0.25], [1.0, 0.0, 0.0, 0.0]])
    assert mean_p_log_p(p).item() == pytest.approx(-math.log(2), abs=1e-6)
    assert categorical_kl_uniform(p).item() == pytest.approx(-math.log(2) + math.log(4), abs=1e-6)  # + ln K


def test_reparameterised_noise_reaches_the_variance():
    mu = torch.zeros(3, 2, requires_grad=True)
    logvar = torch.zeros(3, 2, requires_grad=True)
    torch.manual_seed(0)
    z = reparameterise(mu, logvar)
    torch.manual_seed(0)
    eps = torch.randn(3, 2)
    torch.testing.assert_close(z, eps)  # σ = 1
    z.pow(2).sum().backward()
    torch.testing.assert_close(logvar.grad, eps.pow(2))  # ∂(σε)²/∂ log σ² = σ² ε² at σ = 1


# -- the spectral head ---------------------------------------------------------------------------------
def test_knn_affinity_by_hand():
    # k = 1 nearest other: 0→1, 1→0, 3→1, 7→3, 15→7 at distances 1, 1, 2, 4, 8 → s = median = 2, 2s² = 8.
    # W_01 both ways e^(−1/8); 3→1 one way ½e^(−4/8); 7→3 ½e^(−16/8); 15→7 ½e^(−64/8); the diagonal is 0.
    w, s = knn_affinity(LINE, n_neighbours=1)
    assert s.item() == pytest.approx(2.0)
    expected = torch.zeros(5, 5)
    expected[0, 1] = math.exp(-1 / 8)
    expected[1, 2] = 0.5 * math.exp(-0.5)
    expected[2, 3] = 0.5 * math.exp(-2)
    expected[3, 4] = 0.5 * math.exp(-8)
    torch.testing.assert_close(w, expected + expected.T)


@pytest.mark.parametrize("kwargs, scale", [
    ({"n_neighbours": 1, "kernel_scale": 2.0}, 4.0),                # 2 × the median 2
    ({"n_neighbours": 1, "fixed_scale": 2.62}, 2.62),               # v2's constant
    ({"n_neighbours": 2, "scale_neighbour": 2}, 3.0),               # 2nd nearest others 3, 2, 3, 6, 12 → 3
])
def test_knn_affinity_scale_by_hand(kwargs, scale):
    assert knn_affinity(LINE, **kwargs)[1].item() == pytest.approx(scale)


def test_affinity_carries_no_gradient():
    codes = LINE.clone().requires_grad_(True)
    w, s = knn_affinity(codes, n_neighbours=2)
    assert not w.requires_grad and not s.requires_grad


def test_orthonormalise_by_hand():
    # Ỹ = [[1, 0], [1, 1]], m = 2: ỸᵀỸ = [[2, 1], [1, 1]] = LLᵀ, L = [[√2, 0], [1/√2, 1/√2]];
    # L⁻¹ = [[1/√2, 0], [−1/√2, √2]] → Ω = √2 (L⁻¹)ᵀ = [[1, −1], [0, 2]] → Y = ỸΩ = [[1, −1], [1, 1]]
    y, omega = orthonormalise(torch.tensor([[1.0, 0.0], [1.0, 1.0]]), jitter=0.0)
    torch.testing.assert_close(omega, torch.tensor([[1.0, -1.0], [0.0, 2.0]], dtype=torch.float64))
    torch.testing.assert_close(y, torch.tensor([[1.0, -1.0], [1.0, 1.0]]))
    assert orthonormality_error(y).item() == pytest.approx(0.0, abs=1e-6)


def test_orthonormalise_survives_a_near_constant_softmax_head():
    # rows that sum to 1 and barely differ: float32 Cholesky fails on such a Gram matrix (pitfall 3)
    torch.manual_seed(0)
    p = (1e-4 * torch.randn(512, 10)).softmax(1)
    y, _ = orthonormalise(p)
    assert y.dtype == torch.float32 and torch.isfinite(y).all()


def test_orthonormality_error_by_hand():
    # Y = [[2, 0], [0, 0]], m = 2: YᵀY/2 − I = [[1, 0], [0, −1]] → √2
    assert orthonormality_error(torch.tensor([[2.0, 0.0], [0.0, 0.0]])).item() == pytest.approx(math.sqrt(2))


def test_spectral_loss_by_hand():
    # Y = (0, 1, 3), W_01 = 1, W_12 = ½ (both ways): Σ_ij W_ij ‖Y_i − Y_j‖² = 2(1·1 + ½·4) = 6 → 6/3 = 2
    y = torch.tensor([[0.0], [1.0], [3.0]])
    w = torch.tensor([[0.0, 1.0, 0.0], [1.0, 0.0, 0.5], [0.0, 0.5, 0.0]])
    assert spectral_loss(y, w).item() == pytest.approx(2.0)
    laplacian = torch.diag(w.sum(1)) - w
    assert spectral_loss(y, w).item() == pytest.approx((2 / 3 * torch.trace(y.T @ laplacian @ y)).item())


def test_gradient_flows_through_the_orthonorm_layer():
    # Y(cỸ) = Y(Ỹ): with Ω differentiated, the gradient of any loss of Y is orthogonal to Ỹ (Euler).
    # Detaching Ω (pitfall 4) breaks that: shrinking Ỹ then lowers L_SN, the collapse the spec warns of.
    torch.manual_seed(0)
    y_tilde = torch.rand(8, 3, dtype=torch.float64).requires_grad_(True)
    w, _ = knn_affinity(torch.randn(8, 2), n_neighbours=2)
    w = w.to(torch.float64)
    loss = spectral_loss(orthonormalise(y_tilde, jitter=0.0)[0], w)
    (grad,) = torch.autograd.grad(loss, y_tilde)
    assert abs((grad * y_tilde).sum().item()) < 1e-9 * loss.item()
    _, omega = orthonormalise(y_tilde.detach(), jitter=0.0)
    detached = spectral_loss(y_tilde @ omega, w)
    (grad,) = torch.autograd.grad(detached, y_tilde)
    assert (grad * y_tilde).sum().item() == pytest.approx(2 * detached.item())  # L is quadratic in Ỹ


def test_align_labels_by_hand():
    # new ids 0, 1, 2 hold the old 2, 0, 1: perm[new] = old
    labels = np.array([0, 0, 1, 1, 2, 2])
    reference = np.array([2, 2, 0, 0, 1, 0])
    perm = align_labels(labels, reference, 3)
    np.testing.assert_array_equal(perm, [2, 0, 1])
    assert (perm[labels] == reference).mean() == pytest.approx(5 / 6)


# -- the method: batches, gradient paths, readouts ----------------------------------------------------
@pytest.mark.parametrize("n, m, expected", [(9298, 1024, 930), (1797, 512, 450), (10000, 1024, 1000), (300, 1024, 300)])
def test_joint_batches_are_even_and_at_most_m(n, m, expected):
    method = DSCDAN(DSCDANConfig(spectral_batch=m), n_clusters=10)
    assert method.batch_size("cluster", n) == expected and method.batch_size("pretrain", n) is None


@pytest.fixture
def dscdan_model():
    torch.manual_seed(0)
    method = DSCDAN(DSCDANConfig(latent_dim=8), n_clusters=3)
    model = method.build((1, 8, 8))
    x = torch.rand(24, 1, 8, 8)
    method.init_clusters(model, x)
    return method, model, x


def _has_grad(module):
    return any(p.grad is not None and p.grad.abs().sum() > 0 for p in module.parameters())


def test_pretraining_reaches_the_dual_network_only(dscdan_model):
    method, model, x = dscdan_model
    terms = method.pretrain_step(model, Batch(x, torch.arange(len(x))))
    c = method.config
    expected = (c.lambda_r * (terms["recon"] + c.delta * terms["relative"]) + c.beta_g * terms["global_mi"]
                + c.beta_l * terms["local_mi"] + c.gamma * terms["kl"])
    torch.testing.assert_close(terms["loss"], expected)
    terms["loss"].backward()
    dual = model.dual
    assert all(_has_grad(m) for m in (dual.ae.encoder, dual.ae.decoder, dual.ae.logvar_head, dual.global_critic,
                                      dual.local_critic))
    assert not _has_grad(model.spectral) and model.nu.grad is None


def test_joint_step_terms_and_gradients(dscdan_model):
    method, model, x = dscdan_model
    method.on_epoch_start(model, "cluster", 1, x)
    terms = method.training_step(model, Batch(x, torch.arange(len(x))), "cluster")
    assert set(terms) == {"loss", "recon", "relative", "global_mi", "local_mi", "spectral", "mixture_kl",
                          "cluster_prior"}
    c = method.config
    expected = (c.lambda_r * (terms["recon"] + c.delta * terms["relative"]) + c.beta_g_joint * terms["global_mi"]
                + c.beta_l * terms["local_mi"] + c.gamma_joint * terms["mixture_kl"]
                + c.cluster_prior * terms["cluster_prior"] + c.lambda_sp * terms["spectral"])
    torch.testing.assert_close(terms["loss"], expected)
    terms["loss"].backward()
    assert all(_has_grad(m) for m in (model.dual.ae.encoder, model.dual.ae.decoder, model.dual.global_critic,
                                      model.dual.local_critic, model.spectral))
    assert model.nu.grad.abs().sum() > 0  # ν is learnt (initialised at 0)
    scalars = method.on_epoch_end(model, "cluster", 1)
    assert set(scalars) == {"ortho_error", "kernel_scale_s", "p_log_p"} and scalars["kernel_scale_s"] > 0


def test_mixture_pretraining_trains_the_classifier_and_the_means(dscdan_model):
    method, model, x = dscdan_model
    method.config = DSCDANConfig(latent_dim=8, prior="mixture")
    method.on_epoch_start(model, "pretrain", 0, x)
    terms = method.pretrain_step(model, Batch(x, torch.arange(len(x))))
    assert set(terms) == {"loss", "recon", "relative", "global_mi", "local_mi", "mixture_kl", "cluster_prior"}
    c = method.config
    expected = (c.lambda_r * (terms["recon"] + c.delta * terms["relative"]) + c.beta_g * terms["global_mi"]
                + c.beta_l * terms["local_mi"] + c.gamma * terms["mixture_kl"] + c.cluster_prior * terms["cluster_prior"])
    torch.testing.assert_close(terms["loss"], expected)
    terms["loss"].backward()
    assert _has_grad(model.spectral) and model.nu.grad.abs().sum() > 0 and _has_grad(model.dual.ae.mu_head)
    optimised = {id(p) for group in method.optimizer(model, "pretrain").param_groups for p in group["params"]}
    assert optimised == {id(p) for p in [*model.dual.parameters(), *model.spectral.parameters(), model.nu]}
    # the epoch's Σ P log P: KL(P ‖ U) − ln K of the one batch
    p_log_p = method.on_epoch_end(model, "pretrain", 0)["p_log_p"]
    assert p_log_p == pytest.approx(terms["cluster_prior"].item() - math.log(3), abs=1e-5)


def _tiny_digits_run(tmp_path, name, prior, snapshots):
    """One pretraining epoch and no joint epoch on 300 digits; ``snapshots`` gets S and ν as the init saw them."""
    digits = load_dataset("digits")
    digits.x, digits.y = digits.x[:300], digits.y[:300]
    config = RunConfig.build("dscdan", "digits", seed=0, preset="fast",
                             overrides={"prior": prior, "latent_dim": 8, "beta_l": 0.0, "pretrain_epochs": 1,
                                        "epochs": 0, "kmeans_restarts": 1, "pretrain_kmeans": True})
    trainer = Trainer(config, digits, RunStore.create(tmp_path, name, config.to_dict()), cache=AutoencoderCache(
        tmp_path / "cache"))

    def on_event(event):
        if event["phase"] == "init":
            snapshots[name] = {k: v.clone() for k, v in trainer.model.state_dict().items()
                               if k.startswith(("spectral.", "nu"))}
    trainer.callbacks.append(on_event)
    trainer.run()
    return trainer


def test_mixture_pretraining_carries_the_classifier_and_means_to_the_joint_phase(tmp_path):
    snapshots = {}
    first = _tiny_digits_run(tmp_path, "first", "mixture", snapshots)
    pretrain = first.store.read_metrics().query("phase == 'pretrain'")
    assert {"acc_kmeans_mu", "p_log_p"} <= set(pretrain.columns) and pretrain["acc_kmeans_mu"].notna().all()
    cached = AutoencoderCache(tmp_path / "cache").load(first.pretrain_key, torch.device("cpu"))
    assert cached["nu"].abs().sum() > 0  # ν left 0 in pretraining
    for key, value in snapshots["first"].items():  # the init saw what pretraining left, and the cache holds it
        torch.testing.assert_close(value, cached[key])
    second = _tiny_digits_run(tmp_path, "second", "mixture", snapshots)
    assert second.store.read_metrics().query("phase == 'pretrain'")["cached"].tolist() == [1.0]
    for key, value in snapshots["first"].items():
        torch.testing.assert_close(snapshots["second"][key], value)
    # the N(0, I) prior caches the dual network alone, under another key
    normal = _tiny_digits_run(tmp_path, "normal", "normal", snapshots)
    assert normal.pretrain_key != first.pretrain_key
    assert not any(key.startswith(("spectral.", "nu")) for key in
                   AutoencoderCache(tmp_path / "cache").load(normal.pretrain_key, torch.device("cpu")))
    assert "p_log_p" not in normal.store.read_metrics()  # no classifier in its pretraining


def test_spectral_loss_reaches_the_encoder_through_the_head_not_the_affinity(dscdan_model):
    method, model, x = dscdan_model
    method.config = DSCDANConfig(latent_dim=8, lambda_r=0.0, beta_g_joint=0.0, beta_l=0.0, gamma_joint=0.0,
                                 cluster_prior=0.0)
    method.training_step(model, Batch(x, torch.arange(len(x))), "cluster")["loss"].backward()
    assert _has_grad(model.dual.ae.mu_head) and _has_grad(model.spectral)
    assert not _has_grad(model.dual.ae.decoder) and not _has_grad(model.dual.ae.logvar_head)


def test_paper_form_global_pairs_score_the_conv_features_of_x():
    torch.manual_seed(0)
    method = DSCDAN(DSCDANConfig(latent_dim=8, global_pairs="paper", beta_l=0.0), n_clusters=3)
    model = method.build((1, 8, 8))  # 4 layers: the last conv map is 32 × 2 × 2 = 128 features
    assert model.dual.global_critic.net[0].in_features == 128 + 8
    terms = method.pretrain_step(model, Batch(torch.rand(6, 1, 8, 8), torch.arange(6)))
    assert "local_mi" not in terms  # β_l = 0 skips the costliest term
    terms["loss"].backward()
    assert _has_grad(model.dual.global_critic) and _has_grad(model.dual.ae.encoder)


def test_two_stage_mode_trains_only_the_spectral_net(dscdan_model):
    method, model, x = dscdan_model
    method.config = DSCDANConfig(latent_dim=8, joint_autoencoder=False)
    terms = method.training_step(model, Batch(x, torch.arange(len(x))), "cluster")
    assert set(terms) == {"loss", "spectral"}
    terms["loss"].backward()
    assert _has_grad(model.spectral) and not _has_grad(model.dual)
    optimised = {id(p) for group in method.optimizer(model, "cluster").param_groups for p in group["params"]}
    assert optimised == {id(p) for p in [*model.spectral.parameters(), model.nu]}


def test_readout_is_kmeans_on_y_and_assign_agrees(dscdan_model):
    method, model, x = dscdan_model
    _, init_labels = method.assign(model, x)
    np.testing.assert_array_equal(init_labels.numpy(), method.previous)  # after init: k-means on μ
    assert method.readouts(model, x) == {}                              # nothing else to score yet
    method.on_epoch_start(model, "cluster", 1, x)
    other = method.readouts(model, x)
    assert list(other) == ["argmax"] and other["argmax"].shape == (len(x),)
    _, labels = method.assign(model, x)
    np.testing.assert_array_equal(labels.numpy(), method.previous)      # nearest k-means centre on Y
    method.config = DSCDANConfig(latent_dim=8, readout="argmax")
    other = method.readouts(model, x)
    assert list(other) == ["kmeans"]
    np.testing.assert_array_equal(method.assign(model, x)[1].numpy(), method.previous)


def test_presets_and_ablation_columns():
    presets = DSCDAN.presets("usps")
    assert {"paper", "fast", "cpu", "official-v1", "official-v2"} <= set(presets)
    paper = RunConfig.build("dscdan", "usps", preset="paper")
    assert (paper.params.conv_layers, paper.params.n_neighbours, paper.params.lambda_r) == (2, 3, 5.0)
    assert paper.trainer.batch_size == 100 and paper.trainer.epochs == 500  # 5000 iterations, 10 per epoch
    v2 = RunConfig.build("dscdan", "mnist-test", preset="official-v2").params
    assert (v2.n_neighbours, v2.fixed_scale, v2.readout, v2.data_term, v2.beta_l) == (5, 2.62, "argmax", "noisy", 0.0)
    assert v2.prior == "mixture" and paper.params.prior == "normal"  # official code against paper text
    cpu = RunConfig.build("dscdan", "usps", preset="cpu")
    assert (cpu.params.gamma_joint, cpu.params.lambda_sp, cpu.params.scale_neighbour) == (1.0, 0.5, 2)
    assert cpu.trainer.epochs == 30 and cpu.params.max_iter == 300  # 10 batches of ≤ 1024 per epoch
    v1 = RunConfig.build("dscdan", "mnist-test", preset="official-v1").params
    assert not v1.joint_autoencoder and (v1.head, v1.delta, v1.lambda_r, v1.prior) == ("tanh", 2.0, 2.5, "mixture")
    assert list(DSCDAN.ablations()) == ["ConvAE", "ConvAE+MI", "ConvAE+RS", "ConvAE+MI+RS", "ConvAE+MI+RS+SN (full)"]
    assert all(len(row) == 5 for row in DSCDAN.published_ablation.values())


# -- a short run on real digits ------------------------------------------------------------------------
def test_fast_preset_on_digits_beats_kmeans_on_pixels(tmp_path):
    digits = load_dataset("digits")
    config = RunConfig.build("kmeans", "digits", seed=0, preset="fast")
    pixels = Trainer(config, digits, RunStore.create(tmp_path, "kmeans", config.to_dict())).run()["acc"]
    config = RunConfig.build("dscdan", "digits", seed=0, preset="fast")
    store = RunStore.create(tmp_path, "dscdan", config.to_dict())
    last = Trainer(config, digits, store).run()
    metrics = store.read_metrics()
    assert {"acc_argmax", "ortho_error", "kernel_scale_s", "loss_spectral"} <= set(metrics.columns)
    assert last["acc"] > pixels, (last["acc"], pixels)
