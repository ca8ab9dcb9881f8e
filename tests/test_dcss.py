"""DCSS's losses against values worked out by hand, where its gradients flow, and its two-phase schedule."""
import numpy as np
import pandas as pd
import pytest
import torch

from core.data import ImageDataset, load_dataset
from core.methods import Batch
from core.methods.base import assign_all, encode_all, kmeans_labels
from core.methods.dcss import (DCSS, DCSSAutoencoder, DCSSConfig, clip_confident, fuzzy_centres, fuzzy_memberships,
                               output_shares, pair_counts, pair_loss, partner_shares, phase1_losses)
from core.runs import RunStore
from core.train import RunConfig, Trainer


# -- memberships and centres ----------------------------------------------------------------------------
@pytest.mark.parametrize("m, expected", [
    (1.5, (16 / 17, 1 / 17)),  # exponent −1/(m−1) = −2 on d² = (1, 4): (1, 1/16) normalised
    (2.0, (4 / 5, 1 / 5)),     # exponent −1: (1, 1/4)
    (3.0, (2 / 3, 1 / 3)),     # exponent −1/2: (1, 1/2)
])
def test_fuzzy_memberships_by_hand(m, expected):
    p = fuzzy_memberships(torch.tensor([[0.0]]), torch.tensor([[1.0], [2.0]]), m)
    torch.testing.assert_close(p, torch.tensor([expected]))


def test_membership_of_a_code_on_a_centre_is_finite_and_one_hot():
    # d² = 1e-10 against 1: p ∝ (1e20, 1) → one-hot, no division by zero (§f.4)
    p = fuzzy_memberships(torch.tensor([[1.0, 2.0]]), torch.tensor([[1.0, 2.0], [1.0, 3.0]]), 1.5)
    assert torch.isfinite(p).all() and p[0, 0] > 1 - 1e-6


def test_fuzzy_centres_by_hand():
    # m = 2: w = p² = (1, 0), (1/4, 1/4), (0, 1); μ_0 = (0 + 2/4)/(5/4) = 0.4, μ_1 = (2/4 + 4)/(5/4) = 3.6
    u = torch.tensor([[0.0], [2.0], [4.0]])
    p = torch.tensor([[1.0, 0.0], [0.5, 0.5], [0.0, 1.0]])
    torch.testing.assert_close(fuzzy_centres(u, p, 2.0), torch.tensor([[0.4], [3.6]]))


# -- phase 1 -----------------------------------------------------------------------------------------
def test_phase1_losses_by_hand():
    # one-pixel images: SSE (1, 0); u = (0, 1), μ = (0, 2); m = 2: w = (1, 0), (1/4, 1/4), Σ_k w = (1, 1/2)
    # L_r = 1·1 + ½·0 = 1; L_c = 1·0 + 0·4 + ¼·1 + ¼·1 = 0.5; β = 0.1: L_u = 1 + 0.05 = 1.05
    x = torch.tensor([[1.0], [0.0]]).view(2, 1, 1, 1)
    u = torch.tensor([[0.0], [1.0]])
    terms = phase1_losses(x, torch.zeros_like(x), u, torch.tensor([[0.0], [2.0]]),
                          torch.tensor([[1.0, 0.0], [0.5, 0.5]]), m=2.0, beta=0.1)
    assert terms["recon"].item() == pytest.approx(1.0) and terms["centering"].item() == pytest.approx(0.5)
    assert terms["loss"].item() == pytest.approx(1.05) and terms["u_space"].item() == pytest.approx(1.05)


def test_phase1_weights_carry_no_gradient_and_pull_codes_to_centres():
    # ∂L_u/∂u_i = 2β Σ_k w_ik (u_i − μ_k) with w fixed: u = 3, μ = (0, 4), w = p² = (1/4, 1/4):
    # 2·0.5·(¼·3 + ¼·(−1)) = 0.5
    u = torch.tensor([[3.0]], requires_grad=True)
    p = torch.tensor([[0.5, 0.5]], requires_grad=True)
    x = torch.zeros(1, 1, 1, 1)
    phase1_losses(x, x, u, torch.tensor([[0.0], [4.0]]), p, m=2.0, beta=0.5)["loss"].backward()
    assert p.grad is None  # the memberships are weights, not a path
    torch.testing.assert_close(u.grad, torch.tensor([[0.5]]))


# -- phase 2 -----------------------------------------------------------------------------------------
def test_clip_confident_values_and_gradients():
    q = torch.tensor([[0.995, 0.005], [0.6, 0.4]], requires_grad=True)
    clipped = clip_confident(q)
    torch.testing.assert_close(clipped, torch.tensor([[1.0, 0.0], [0.6, 0.4]]))
    clipped.sum().backward()
    torch.testing.assert_close(q.grad, torch.tensor([[0.0, 0.0], [1.0, 1.0]]))  # clipped entries get none


Q3 = torch.tensor([[1.0, 0.0], [0.0, 1.0], [0.5, 0.5]])     # q_i·q_j: rows (1, 0, .5), (0, 1, .5), (.5, .5, .5)
S3 = torch.tensor([[0.9, 0.1, 0.9], [0.1, 0.9, 0.5], [0.9, 0.5, 0.1]])


def test_pair_loss_by_hand_with_the_diagonal():
    # similar (s > .8): (0,0) 1−1 = 0, (0,2) 1−.5, (1,1) 0, (2,0) 1−.5 → 1; dissimilar (s < .2): (0,1) 0, (1,0) 0,
    # (2,2) .5 → .5; (1,2), (2,1) ignored. Total 1.5, times c = 1e-3
    assert pair_loss(Q3, S3, 0.8, 0.2).item() == pytest.approx(1.5e-3)
    assert pair_loss(Q3, S3, 0.8, 0.2, scale=1.0).item() == pytest.approx(1.5)
    # γ = 0: nothing is dissimilar, only the similar half remains
    assert pair_loss(Q3, S3, 0.8, 0.0, scale=1.0).item() == pytest.approx(1.0)


def test_pair_loss_gradient_by_hand():
    # L = Σ_ij a_ij q_i·q_j + const with a = −1 on similar, +1 on dissimilar pairs: ∂L/∂q_i = Σ_j (a_ij + a_ji) q_j
    # a = [[-1, 1, -1], [1, -1, 0], [-1, 0, 1]] (symmetric): q0: 2(−q0 + q1 − q2) = (−3, 1); q1: 2(q0 − q1) = (2, −2);
    # q2: 2(−q0 + q2) = (−1, 1). The diagonal terms (−q0, −q1, +q2) are in there: i = j counts.
    q = Q3.clone().requires_grad_(True)
    pair_loss(q, S3, 0.8, 0.2, scale=1.0).backward()
    torch.testing.assert_close(q.grad, torch.tensor([[-3.0, 1.0], [2.0, -2.0], [-1.0, 1.0]]))


def test_pair_counts_by_hand():
    # unordered pairs: (0,1) s = .1 dissimilar, (0,2) .9 similar, (1,2) .5 ignored; the diagonal is no pair.
    # sample 1 has no partner above ζ (its .9 is with itself): one sample without a similar neighbour
    counts = {k: v.item() for k, v in pair_counts(S3, 0.8, 0.2).items()}
    assert counts == {"pairs_similar": 1, "pairs_dissimilar": 1, "pairs_ignored": 1, "no_similar": 1}


def test_partner_shares_by_hand_without_the_diagonal():
    # s = a·aᵀ: a0·a1 = 0.9 > ζ pairs samples 0 and 1; sample 2's only s > ζ is with itself (excluded), and
    # sample 3 reaches 0.5 with everyone. Clusters (argmax, ties to the first): {0, 1, 3}, {2}, none.
    a = torch.tensor([[1.0, 0.0, 0.0], [0.9, 0.1, 0.0], [0.0, 1.0, 0.0], [0.5, 0.5, 0.0]])
    for chunk in (1, 3, 2048):  # rows of s formed a chunk at a time give the same answer
        shares = partner_shares(a, a.argmax(1), 3, zeta=0.8, chunk=chunk)
        torch.testing.assert_close(shares[:2], torch.tensor([2 / 3, 0.0], dtype=torch.float64))
        assert torch.isnan(shares[2])


def test_output_shares_by_hand():
    # argmax (0, 0, 2, 1, 0, 2): counts (3, 1, 2) against N/K = 2
    q = torch.tensor([[.6, .3, .1], [.5, .4, .1], [.1, .2, .7], [.2, .7, .1], [.8, .1, .1], [.1, .1, .8]])
    torch.testing.assert_close(output_shares(q), torch.tensor([1.5, 0.5, 1.0], dtype=torch.float64))


# -- the network -------------------------------------------------------------------------------------
@pytest.mark.parametrize("shape, resize, work", [((1, 28, 28), True, 28), ((1, 16, 16), True, 28),
                                                 ((1, 16, 16), False, 16), ((1, 8, 8), False, 8),
                                                 ((3, 30, 30), False, 30)])
def test_autoencoder_reconstructs_its_working_size(shape, resize, work):
    ae = DCSSAutoencoder(shape, latent_dim=10, resize=resize)
    x = torch.rand(2, *shape)
    assert ae.encode(x).shape == (2, 10)
    assert ae.decode(ae.encode(x)).shape == ae.prepare(x).shape == (2, shape[0], work, work)


def test_official_net_sizes():
    # §b: 28 → 14 → 7 → 3, Linear 1152 → 10; decoder 3 → 7 → 15 → 28
    ae = DCSSAutoencoder((1, 28, 28))
    assert ae.encoder[-1].in_features == 1152 and ae.decoder[0].out_features == 1152
    h = ae.decoder[:4](torch.zeros(1, 10))
    assert h.shape[-1] == 7 and ae.decoder[:6](torch.zeros(1, 10)).shape[-1] == 15


# -- the method's phases and gradient paths -------------------------------------------------------------
@pytest.fixture
def dcss_model():
    # random images give soft p and q: with γ = 0.98 nearly every pair is "dissimilar", so L_q has gradients
    torch.manual_seed(0)
    config = DCSSConfig(zeta=0.99, gamma=0.98, phase1_epochs=2, update_period=2, switch_epoch=1, resize=False,
                        kmeans_restarts=2)
    method = DCSS(config, n_clusters=3)
    model = method.build((1, 8, 8))
    x = torch.rand(24, 1, 8, 8)
    method.init_clusters(model, x)
    return method, model, x


def _grads(module):
    # a bias right before a BatchNorm gets exactly zero gradient (BN removes it): weights only
    return [p.grad for name, p in module.named_parameters() if name.endswith("weight")]


def test_phase1_trains_the_autoencoder_not_mnet_nor_the_centres(dcss_model):
    method, model, x = dcss_model
    method.on_epoch_start(model, "cluster", 0, x)
    terms = method.training_step(model, Batch(x, torch.arange(len(x))), "cluster")
    assert set(terms) == {"loss", "recon", "centering", "u_space"}
    terms["loss"].backward()
    assert all(g is not None and g.abs().sum() > 0 for g in _grads(model.ae.encoder[-1]))
    assert all(g is not None and g.abs().sum() > 0 for g in _grads(model.ae.decoder[-1]))
    assert all(g is None for g in _grads(model.mnet))
    assert not model.centroids.requires_grad  # μ moves only by the M-step


@pytest.mark.parametrize("clip_q", [True, False])
def test_clipping_switch_decides_whether_saturated_outputs_learn(dcss_model, clip_q):
    # MNet's last bias at 30 puts every q above 0.99 / below 0.01: clipped, L_q is constant and MNet learns nothing
    method, model, x = dcss_model
    method.config = method.config.replace(clip_q=clip_q)
    method.epochs_done = 2
    method.on_epoch_start(model, "cluster", 2, x)
    with torch.no_grad():
        model.mnet.layers[-1].bias[0] = 30.0
    method.training_step(model, Batch(x, torch.arange(len(x))), "cluster")["loss"].backward()
    assert (model.mnet.layers[-1].weight.grad.abs().sum() == 0) == clip_q


def test_phase2_trains_encoder_and_mnet_not_the_decoder(dcss_model):
    method, model, x = dcss_model
    method.epochs_done = 2
    method.on_epoch_start(model, "cluster", 2, x)
    terms = method.training_step(model, Batch(x, torch.arange(len(x))), "cluster")
    assert set(terms) == {"loss", "pairs"}
    terms["loss"].backward()
    assert all(g is not None and g.abs().sum() > 0 for g in _grads(model.mnet))
    assert all(g is not None and g.abs().sum() > 0 for g in _grads(model.ae.encoder[-1]))
    assert all(g is None for g in _grads(model.ae.decoder))


def test_schedule_of_phases_centre_updates_similarity_space_and_optimisers(dcss_model):
    # phase1_epochs 2, T1 = 2, T2 = 1: epochs 0, 1 in phase 1 (M-step at T = 1), 2, 3 in phase 2 (p·p in its
    # epoch 0, then an M-step and q·q); SGD steps in phase 1 leave MNet alone, Adam moves it in phase 2
    method, model, x = dcss_model
    optimizer = method.optimizer(model, "cluster")
    batch = Batch(x, torch.arange(len(x)))
    events = []
    for epoch in range(4):
        event = method.on_epoch_start(model, "cluster", epoch, x)
        mnet_before = [p.detach().clone() for p in model.mnet.parameters()]
        optimizer.zero_grad(set_to_none=True)
        method.training_step(model, batch, "cluster")["loss"].backward()
        optimizer.step()
        moved = any(not torch.equal(a, b) for a, b in zip(mnet_before, model.mnet.parameters()))
        events.append({**event, **method.on_epoch_end(model, "cluster", epoch), "mnet_moved": moved})
    assert [e["stage"] for e in events] == [1, 1, 2, 2]
    assert ["centre_shift" in e for e in events] == [False, True, False, True]
    assert [e.get("q_space") for e in events] == [None, None, 0.0, 1.0]
    assert [e["mnet_moved"] for e in events] == [False, False, True, True]
    assert events[2]["pairs_similar"] + events[2]["pairs_dissimilar"] + events[2]["pairs_ignored"] == 24 * 23 / 2
    assert 0 < events[3]["confidence"] <= 1 and 0 <= events[3]["no_similar"] <= 24


def test_merge_risk_is_measured_before_phase_2_and_before_the_first_q_q_epoch(dcss_model):
    # phase1_epochs 2, T2 = 1: phase 2's epoch 0 measures p·p partners, its epoch 1 (the switch) q·q and MNet
    method, model, x = dcss_model
    events = []
    for epoch in range(4):
        events.append(method.on_epoch_start(model, "cluster", epoch, x))
        method.on_epoch_end(model, "cluster", epoch)
    measured = [(not np.isnan(e["partnered_min"]), not np.isnan(e["output_min"])) for e in events]
    assert measured == [(False, False), (False, False), (True, False), (True, True)]
    q = model.mnet(encode_all(method, model.eval(), x))
    assert events[3]["output_min"] == pytest.approx(float(output_shares(q).min()))
    assert 0.0 <= events[2]["partnered_min"] <= 1.0


@pytest.mark.parametrize("output_min, partnered_min, expected", [
    (0.05, 0.5, "the smallest MNet output holds 5% of an even share N/K (under 10%)"),
    (0.17, 0.0, "in one cluster only 0% of the samples have a similar partner (under 10%)"),
    (0.05, 0.02, "the smallest MNet output holds 5% of an even share N/K and in one cluster only 2% of the samples"),
    (0.5, 0.5, None),
    (float("nan"), float("nan"), None),
])
def test_merge_warning_reads_the_switch_row(output_min, partnered_min, expected):
    # the row before holds phase 2's p·p measurement, which never warns: only the switch row counts
    nan = float("nan")
    metrics = pd.DataFrame({"epoch": [5, 6, 7], "output_min": [nan, output_min, nan],
                            "partnered_min": [0.0, partnered_min, nan]})
    warnings = DCSS.warnings(metrics)
    assert len(warnings) == (expected is not None)
    assert expected is None or warnings[0].startswith("Merge warning: at the switch to q·q similarity (epoch 6) "
                                                      + expected)
    assert DCSS.warnings(pd.DataFrame({"epoch": [1]})) == []


def test_read_out_is_p_in_phase1_and_q_in_phase2(dcss_model):
    method, model, x = dcss_model
    p, _ = assign_all(method, model, x)
    u = encode_all(method, model, x)
    torch.testing.assert_close(p, fuzzy_memberships(u, model.centroids, 1.5))
    method.stage = 2
    q, _ = assign_all(method, model.eval(), x)
    torch.testing.assert_close(q, model.mnet(u))


def test_init_row_is_kmeans_on_the_codes(dcss_model):
    # argmax p with the k-means centres is the nearest centre: the init row is AE + k-means on the same AE
    method, model, x = dcss_model
    z = encode_all(method, model, x).numpy()
    labels, _ = kmeans_labels(z, 3, seed=0, restarts=2)
    np.testing.assert_array_equal(assign_all(method, model, x)[1].numpy(), labels)


def test_thresholds_must_be_ordered():
    with pytest.raises(ValueError, match="gamma"):
        RunConfig.build("dcss", overrides={"gamma": "0.9", "zeta": "0.8"})


def test_presets_follow_the_spec():
    paper = RunConfig.build("dcss", "mnist", preset="paper")
    c, t = paper.params, paper.trainer
    assert (c.zeta, c.gamma, c.beta, c.m, c.update_period, c.switch_epoch) == (0.8, 0.2, 0.1, 1.5, 2, 5)
    assert (c.phase1_lr, c.phase1_momentum, c.ae_lr, c.mnet_lr) == (1e-6, 0.9, 1e-5, 1e-3)
    assert (t.batch_size, t.pretrain_epochs, c.phase1_epochs, t.epochs - c.phase1_epochs) == (500, 200, 200, 20)
    assert {"paper", "fast", "cpu"} <= set(DCSS.presets("usps")) and DCSS.published == {}
    # §b and §i.3: the CPU budget runs USPS through the official 28×28 net (third stage 3×3, not 1×1)
    usps = RunConfig.build("dcss", "usps", preset="cpu")
    ae = DCSS(usps.params, 10).build((1, 16, 16)).ae
    assert ae.work_size == (28, 28) and ae.encoder[-1].in_features == 128 * 3 * 3
    assert DCSS.ablations()["AE + k-means (same autoencoder)"] == {"epochs": 0}


def test_stop_in_phase2_and_resume_finishes_the_same_schedule(tmp_path):
    # the staged optimiser and the method's epoch counter survive a checkpoint
    data = load_dataset("digits")
    small = ImageDataset("digits-200", data.x[:200], data.y[:200], data.class_names)
    config = RunConfig.build("dcss", "digits", seed=0, preset="fast",
                             overrides={"pretrain_epochs": 1, "epochs": 4, "phase1_epochs": 2, "switch_epoch": 1,
                                        "snapshot_size": 200})
    store = RunStore.create(tmp_path, "dcss-resume", config.to_dict())
    Trainer(config, small, store, callbacks=[lambda event: event.get("stage") == 2]).run()
    assert store.read_status()["state"] == "stopped"
    Trainer(RunConfig.from_dict(store.read_config()), small, store).run(resume=True)
    metrics = store.read_metrics()
    assert store.read_status()["state"] == "finished" and list(metrics["epoch"]) == list(range(1, 1 + 1 + 4 + 1))
    assert list(metrics["stage"].iloc[2:]) == [1, 1, 2, 2] and list(metrics["q_space"].iloc[4:]) == [0, 1]


# -- a short run on real digits ------------------------------------------------------------------------
# Not asserted: that this run beats k-means on pixels (0.792). It did with one thread (0.816) and did not
# with two (0.761, CI): phase 2 can merge clusters (see the issue note), so the claim is not reliable yet.
def test_fast_preset_on_digits_reports_the_pairs(tmp_path):
    digits = load_dataset("digits")
    config = RunConfig.build("dcss", "digits", seed=0, preset="fast")
    store = RunStore.create(tmp_path, "dcss", config.to_dict())
    Trainer(config, digits, store).run()
    metrics = store.read_metrics()
    phase1, phase2 = metrics[metrics["stage"] == 1], metrics[metrics["stage"] == 2]
    assert phase1["loss_u_space"].is_monotonic_decreasing  # §g: phase 1 lowers L_u
    # every phase-2 epoch splits all within-batch pairs: 1797 = 28 batches of 64 and one of 5
    pairs = phase2[["pairs_similar", "pairs_dissimilar", "pairs_ignored"]].sum(axis=1)
    assert (pairs == 28 * 64 * 63 / 2 + 5 * 4 / 2).all()
    assert phase2["no_similar"].iloc[-1] < phase2["no_similar"].iloc[0]  # Figure 3: isolated samples become fewer
