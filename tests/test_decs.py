"""DECS's pieces against values worked out by hand, where its gradients flow, and a short digits run."""
import math

import numpy as np
import pytest
import torch

from core.data import load_dataset
from core.losses import student_t_assign
from core.methods import Batch
from core.methods.decs import (DECS, DECSConfig, augment, decs_loss, determinacy, figure2_curves, otsu_threshold,
                               stability, stability_loss)
from core.runs import RunStore
from core.train import RunConfig, Trainer


# -- Otsu ------------------------------------------------------------------------------------------
def test_otsu_on_a_bimodal_batch_by_hand():
    # bins 100, 200, 800, 900 (1000 bins on [0, 1]), π = 1/4 each; μ_T = (100+200+800+900)/4 = 500.
    # b ∈ [100, 199]: ω = 1/4, μ = 25  → (125 − 25)²/(3/16 + 1e-6) ≈ 53 333
    # b ∈ [200, 799]: ω = 1/2, μ = 75  → (250 − 75)²/(1/4 + 1e-6)  ≈ 122 500   ← maximum, first at b = 200
    # b ∈ [800, 899]: ω = 3/4, μ = 275 → (375 − 275)²/(3/16 + 1e-6) ≈ 53 333; below 100 and from 900 on: 0
    q = torch.tensor([[0.1, 0.2], [0.8, 0.9]])
    assert otsu_threshold(q).item() == pytest.approx(0.2)


def test_otsu_takes_the_first_maximum_and_is_clamped():
    # two equal modes at bins 100 and 900: σ² is flat on [100, 899], the first maximum is b = 100 → t = 0.1
    assert otsu_threshold(torch.tensor([0.1, 0.1, 0.9, 0.9])).item() == pytest.approx(0.1)
    # all values in bin 0: σ² = 0 everywhere → b = 0 → t = 0, which φ_t cannot divide by → clamped to 1e-3
    constant = torch.zeros(6)
    assert otsu_threshold(constant, clamp=False).item() == 0.0
    assert otsu_threshold(constant).item() == pytest.approx(1e-3)
    # 1.0 lands in the last bin (999) as in np.histogram: modes 0 and 999 → t = 0 → clamped
    assert otsu_threshold(torch.tensor([0.0, 1.0])).item() == pytest.approx(1e-3)


def test_otsu_has_no_gradient():
    q = torch.tensor([0.1, 0.2, 0.8, 0.9], requires_grad=True)
    assert not otsu_threshold(q).requires_grad


# -- the loss ----------------------------------------------------------------------------------------
def test_student_t_with_alpha_half_by_hand():
    # z = 0, centroids at squared distances 0 and 0.5; α = 0.5: kernel (1 + d²/α)^(−(α+1)/2) = (1 + 2d²)^(−0.75)
    # → 1 and 2^(−0.75) = 0.594604; q = (1, 0.594604)/1.594604 = (0.627115, 0.372885)
    q = student_t_assign(torch.zeros(1, 1), torch.tensor([[0.0], [math.sqrt(0.5)]]), alpha=0.5)
    torch.testing.assert_close(q, torch.tensor([[0.627115, 0.372885]]), atol=1e-6, rtol=0)


def test_determinacy_by_hand():
    # t = 1/4: below t (t − q)/t, from t on (q − t)/(3/4)
    q = torch.tensor([[0.0, 0.125, 0.25, 0.5, 1.0]])
    # p = 1: 1, 0.5, 0, (0.25/0.75) = 1/3, 1
    torch.testing.assert_close(determinacy(q, 0.25, p=1), torch.tensor([[1.0, 0.5, 0.0, 1 / 3, 1.0]]))
    # p = 2: the squares 1, 1/4, 0, 1/9, 1
    torch.testing.assert_close(determinacy(q, 0.25, p=2), torch.tensor([[1.0, 0.25, 0.0, 1 / 9, 1.0]]))


def test_stability_by_hand():
    # row 0: fq (1, 0, 0.5, 0.5): mean 0.5, Var = (0.25 + 0.25 + 0 + 0)/4 = 0.125 → sq = 0.5 − 0.4·0.125 = 0.45
    # row 1: all ones: mean 1, Var 0 → sq = 1
    fq = torch.tensor([[1.0, 0.0, 0.5, 0.5], [1.0, 1.0, 1.0, 1.0]])
    torch.testing.assert_close(stability(fq, lam=0.4), torch.tensor([0.45, 1.0]))
    torch.testing.assert_close(stability(fq, lam=0.0), torch.tensor([0.5, 1.0]))


def test_stability_loss_by_hand():
    # sq (0.45, 1): mean 0.725, population Var = (0.275² + 0.275²)/2 = 0.075625
    sq = torch.tensor([0.45, 1.0])
    assert stability_loss(sq, rho=0.0).item() == pytest.approx(0.275)                 # 1 − 0.725
    assert stability_loss(sq, rho=1.0).item() == pytest.approx(1 - 0.725 - 0.075625)   # 0.199375


def test_decs_loss_official_and_paper_forms_by_hand():
    # t = 0.5, K = 2. Row 0 q (0.9, 0.1): fq = (0.4/0.5, 0.4/0.5) = (0.8, 0.8); row 1 q (0.6, 0.4): fq (0.2, 0.2).
    # p = 1: Var_j = 0 → sq = (0.8, 0.2): mean 0.5, Var_i = 0.09. ρ = 1: 1 − 0.5 − 0.09 = 0.41; ρ = 0: 0.5
    # p = 2: fq (0.64, 0.64), (0.04, 0.04) → sq (0.64, 0.04): mean 0.34, Var_i 0.09 → ρ = 1: 0.57; ρ = 0: 0.66
    q = torch.tensor([[0.9, 0.1], [0.6, 0.4]])
    official = decs_loss(q, 0.5, lam=0.4, p=1, rho=1.0)
    assert official["loss"].item() == pytest.approx(0.41)
    assert official["mean_sq"].item() == pytest.approx(0.5) and official["var_sq"].item() == pytest.approx(0.09)
    assert decs_loss(q, 0.5, p=1, rho=0.0)["loss"].item() == pytest.approx(0.5)
    assert decs_loss(q, 0.5, p=2, rho=1.0)["loss"].item() == pytest.approx(0.57)
    assert decs_loss(q, 0.5, p=2, rho=0.0)["loss"].item() == pytest.approx(0.66)


def test_determinacy_gradient_by_hand_and_none_into_t():
    # p = 1, t = 0.25: d fq/dq = −1/t = −4 below t, 1/(1 − t) = 4/3 above. p = 2 at q = 0.125: 2·(0.5)·(−4) = −4
    q = torch.tensor([0.125, 0.5], requires_grad=True)
    t = torch.tensor(0.25, requires_grad=True)
    determinacy(q, t, p=1).sum().backward()
    torch.testing.assert_close(q.grad, torch.tensor([-4.0, 4 / 3]))
    assert t.grad is None  # the threshold is a constant of the loss
    q.grad = None
    determinacy(q[:1], 0.25, p=2).sum().backward()
    torch.testing.assert_close(q.grad, torch.tensor([-4.0, 0.0]))


def test_degenerate_threshold_gives_finite_gradients():
    # Otsu of a confident batch can hit bin 0; clamped t keeps both branches of φ_t finite (spec §f.3)
    q = torch.tensor([[1.0, 0.0], [0.0, 1.0]], requires_grad=True)
    t = otsu_threshold(q)
    decs_loss(q, t)["loss"].backward()
    assert torch.isfinite(q.grad).all()


# -- augmentation ------------------------------------------------------------------------------------
def test_augment_is_batched_seeded_and_bounded():
    x = torch.rand(32, 1, 8, 8)
    torch.manual_seed(0)
    a = augment(x)
    torch.manual_seed(0)
    torch.testing.assert_close(augment(x), a)           # the global RNG decides the parameters
    assert a.shape == x.shape and not torch.equal(a, x)
    assert a.min() >= x.min() - 1e-6 and a.max() <= x.max() + 1e-6  # bilinear + border fill stays in range
    assert augment(x, shift=0.0, degrees=0.0).sub(x).abs().max() < 1e-5  # the identity transform


def test_augment_shifts_by_the_fraction_of_the_side():
    # a 20×20 image with one bright column: the largest shift is 10 % = 2 pixels, never more
    x = torch.zeros(64, 1, 20, 20)
    x[:, :, :, 10] = 1.0
    torch.manual_seed(1)
    moved = augment(x, degrees=0.0).sum(2).argmax(-1).squeeze(1)  # column of the brightest pixel
    assert (moved - 10).abs().max() <= 2 and (moved != 10).any()


# -- the method's gradient paths ---------------------------------------------------------------------
@pytest.fixture
def decs_model():
    torch.manual_seed(0)
    method = DECS(DECSConfig(), n_clusters=3)
    model = method.build((1, 8, 8))
    x = torch.rand(24, 1, 8, 8)
    method.init_clusters(model, x)
    return method, model, x


def test_clustering_updates_encoder_and_centroids_not_decoder(decs_model):
    method, model, x = decs_model
    terms = method.training_step(model, Batch(x, torch.arange(len(x))), "cluster")
    assert set(terms) == {"loss", "mean_sq", "var_sq"}
    torch.testing.assert_close(terms["loss"], 1 - terms["mean_sq"] - terms["var_sq"])  # ρ = 1
    terms["loss"].backward()
    assert model.centroids.grad.abs().sum() > 0
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in model.ae.encoder[-1].parameters())
    assert all(p.grad is None for p in [*model.ae.decoder.parameters(), *model.ae.unflatten.parameters()])
    optimised = {id(p) for group in method.optimizer(model, "cluster").param_groups for p in group["params"]}
    assert id(model.centroids) in optimised and not optimised & {id(p) for p in model.ae.decoder.parameters()}


def test_eval_pass_threshold_leaves_train_mode_and_batch_norm_stats_alone(decs_model):
    method, model, x = decs_model
    method.config = DECSConfig(t_eval_pass=True, augment=False)
    model.train()
    bn = model.ae.encoder[2]
    before = bn.running_mean.clone()
    q = student_t_assign(model.ae.encode(x), model.centroids, 0.5).detach()
    after_train_pass = bn.running_mean.clone()
    t = method.threshold(model, x, q)
    assert model.training and not t.requires_grad and 0 < t.item() < 1
    torch.testing.assert_close(bn.running_mean, after_train_pass)  # the eval pass moves no statistics
    assert not torch.equal(before, after_train_pass)


def test_manual_threshold_is_used(decs_model):
    method, model, x = decs_model
    method.config = DECSConfig(auto_threshold=False, threshold=0.35)
    assert method.threshold(model, x, torch.rand(4, 3)).item() == pytest.approx(0.35)


def test_presets_are_the_two_variants_of_the_spec():
    presets = DECS.presets("usps")
    assert {"paper", "fast", "cpu", "DECS-official", "DECS-paper"} <= set(presets)
    official = RunConfig.build("decs", "usps", preset="DECS-official")
    paper_form = RunConfig.build("decs", "usps", preset="DECS-paper")
    assert (official.params.p, official.params.rho, official.params.recalibrate_bn) == (1, 1.0, False)
    assert (paper_form.params.p, paper_form.params.rho) == (2, 0.0)
    paper = RunConfig.build("decs", "usps", preset="paper")
    assert paper.params.alpha == 0.5 and paper.params.lam == 0.4 and paper.params.autoencoder == "conv"
    # 20 000 iterations of 256 on 9 298 images: 37 batches per epoch → 541 epochs
    assert paper.trainer.epochs == 541 and paper.trainer.pretrain_epochs == 500
    # the CPU budget: 2 000 iterations → 55 epochs of 37 batches on USPS, 50 of 40 on MNIST-test
    cpu_usps, cpu_mnist = (RunConfig.build("decs", name, preset="cpu") for name in ("usps", "mnist-test"))
    assert (cpu_usps.trainer.pretrain_epochs, cpu_usps.trainer.epochs, cpu_usps.params.max_iter) == (200, 55, 2000)
    assert (cpu_mnist.trainer.pretrain_epochs, cpu_mnist.trainer.epochs) == (40, 50)


# -- the teaching extra -------------------------------------------------------------------------------
def test_figure2_curves_by_hand():
    curves = figure2_curves(t=0.25, alpha=0.5, lam=0.4, p=1, n_points=5)  # grid 0, 0.25, 0.5, 0.75, 1
    a, b, c = curves["a"], curves["b"], curves["c"]
    # (a) sq(1, 0) = 0.5 − 0.4·(1/2)² = 0.4; ∂sq/∂fq1 = 1/2 − λ(fq1 − fq2)/2 = 0.5 − 0.2 = 0.3
    assert a["sq"][4, 0] == pytest.approx(0.4) and a["dsq_dfq1"][4, 0] == pytest.approx(0.3)
    assert a["sq"][2, 2] == pytest.approx(0.5) and a["dsq_dfq1"][2, 2] == pytest.approx(0.5)
    # (b) φ_0.25 at q = 0, 0.25, 0.5, 0.75, 1: 1, 0, 1/3, 2/3, 1; slopes −4 below t, 4/3 above
    np.testing.assert_allclose(b["fq"], [1, 0, 1 / 3, 2 / 3, 1], atol=1e-12)
    np.testing.assert_allclose(b["dfq_dq"][[0, 2, 3]], [-4, 4 / 3, 4 / 3], atol=1e-12)
    # (c) z = 0 sits midway between centroids −1 and +1: κ_1 = κ_2 = κ = (1 + 2·1)^(−0.75) = 3^(−0.75), q = 1/2.
    # dκ_1/dz = −0.75·(1 + 2(z+1)²)^(−1.75)·4(z+1) = −3·3^(−1.75) at z = 0, dκ_2/dz = +3·3^(−1.75), so
    # dq_1/dz = (dκ_1·2κ − κ·(dκ_1 + dκ_2))/(2κ)² = dκ_1/(2κ) = −3·3^(−1.75)/(2·3^(−0.75)) = −1/2
    assert c["q1"][2] == pytest.approx(0.5) and c["dq1_dz"][2] == pytest.approx(-0.5)
    assert c["q1"][0] > 0.5 > c["q1"][4]  # z = −3 is nearer centroid 1 (at −1)


# -- a short run on real digits ------------------------------------------------------------------------
# Measured (1 thread, seed 0): k-means on pixels 0.685; DECS fast = 20 augmented pretraining epochs, k-means
# init 0.657, then the stability loss lowers ACC every epoch to 0.331 after 15 epochs (largest cluster 5.3×
# its share). The assertion is the issue's; it is marked as a known failure, not weakened.
@pytest.mark.xfail(strict=True, reason="short DECS on digits degrades below its k-means init (0.657 → 0.331 vs "
                                       "pixels 0.685); see the report of issue 4")
def test_fast_preset_on_digits_beats_kmeans_on_pixels(tmp_path):
    digits = load_dataset("digits")
    config = RunConfig.build("kmeans", "digits", seed=0, preset="fast")
    pixels = Trainer(config, digits, RunStore.create(tmp_path, "kmeans", config.to_dict())).run()["acc"]
    config = RunConfig.build("decs", "digits", seed=0, preset="fast")
    store = RunStore.create(tmp_path, "decs", config.to_dict())
    last = Trainer(config, digits, store).run()
    assert last["acc"] > pixels, (last["acc"], pixels)


def test_recalibrated_codes_do_not_drift_without_learning(decs_model):
    # lr 0: only the BN running statistics could move the inference-mode codes; after recalibration they do not
    method, model, x = decs_model
    method.config = DECSConfig(augment=False)
    method.init_clusters(model, x)
    before = method.assign(model.eval(), x)[0]
    model.train()
    for _ in range(5):
        model.ae.encode(x)  # train-mode passes update the running statistics
    torch.testing.assert_close(method.assign(model.eval(), x)[0], before, atol=1e-4, rtol=1e-3)
