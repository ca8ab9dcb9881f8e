"""CDC's losses against values worked out by hand, and where its gradients flow."""
import math

import pytest
import torch

from core.methods import Batch
from core.methods.cdc import (CDC, CDCConfig, affinity_loss, correlation_joint, correlation_loss, correlation_rows,
                              kl_rows, sharpen)
from core.train import RunConfig

THREE_POINTS = torch.tensor([[0.0], [1.0], [3.0]])  # squared distances 1, 9, 4 → κ = 1/2, 1/10, 1/5


def test_correlation_rows_by_hand():
    # row 0: (1, 1/2, 1/10)/1.6; row 1: (1/2, 1, 1/5)/1.7; row 2: (1/10, 1/5, 1)/1.3
    expected = torch.tensor([[1, 0.5, 0.1], [0.5, 1, 0.2], [0.1, 0.2, 1]]) / torch.tensor([[1.6], [1.7], [1.3]])
    torch.testing.assert_close(correlation_rows(THREE_POINTS), expected)


def test_correlation_joint_by_hand():
    # off-diagonal kernels 1/2, 1/10, 1/5, each twice: total 1.6; diagonal excluded
    c = correlation_joint(THREE_POINTS)
    torch.testing.assert_close(c[0, 1], torch.tensor(0.3125))
    torch.testing.assert_close(c[0, 2], torch.tensor(0.0625))
    torch.testing.assert_close(c[1, 2], torch.tensor(0.125))
    assert c.diagonal().abs().sum() == 0 and torch.isclose(c.sum(), torch.tensor(1.0))


def test_sharpen_is_dec_target_transform():
    # f = (1.4, 0.6): row 1 (0.25/1.4, 0.25/0.6) → (0.3, 0.7)
    a = torch.tensor([[0.5, 0.5], [0.9, 0.1]])
    torch.testing.assert_close(sharpen(a)[0], torch.tensor([0.3, 0.7]))


def test_kl_rows_clips_zeros_like_keras():
    # 1·ln(1/0.5) + 1e-7·ln(1e-7/0.5)
    value = kl_rows(torch.tensor([[1.0, 0.0]]), torch.tensor([[0.5, 0.5]]))
    assert value.item() == pytest.approx(math.log(2) + 1e-7 * math.log(2e-7), abs=1e-7)


def test_correlation_loss_code_form_by_hand():
    # Z = {0, 1}: C_Z rows (2/3, 1/3), (1/3, 2/3); column sums 1 → S(C_Z) rows (0.8, 0.2), (0.2, 0.8).
    # X = two equal points: C_X rows (0.5, 0.5). KL per row: 0.8 ln 1.6 + 0.2 ln 0.4 = 0.192745.
    z = torch.tensor([[0.0], [1.0]])
    x = torch.zeros(2, 1, 1, 1)
    assert correlation_loss(z, x).item() == pytest.approx(0.8 * math.log(1.6) + 0.2 * math.log(0.4), abs=1e-6)


def test_correlation_loss_paper_form_by_hand():
    # Z = {0, 1, 3}: joint C_Z (0.3125, 0.0625, 0.125 per pair, twice); X: three equal points → 1/6 each pair.
    # KL = 2·[0.3125 ln(1.875) + 0.0625 ln(0.375) + 0.125 ln(0.75)]; diagonals clip to 1e-7 on both sides → 0.
    x = torch.zeros(3, 1)
    expected = 2 * (0.3125 * math.log(1.875) + 0.0625 * math.log(0.375) + 0.125 * math.log(0.75))
    assert correlation_loss(THREE_POINTS, x, paper_forms=True).item() == pytest.approx(expected, abs=1e-6)


def test_affinity_loss_by_hand():
    # q one-hot (1,0), (0,1): ||Δq||² = 2 → κ = 1/3 → C_Q rows (0.75, 0.25) → S → (0.9, 0.1).
    # Z = {0, 1}: C_Z rows (2/3, 1/3). KL per row: 0.9 ln 1.35 + 0.1 ln 0.3 = 0.149697.
    q = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    z = torch.tensor([[0.0], [1.0]])
    assert affinity_loss(q, z).item() == pytest.approx(0.9 * math.log(1.35) + 0.1 * math.log(0.3), abs=1e-6)


def test_affinity_target_carries_gradient_unless_detached():
    q = torch.tensor([[0.7, 0.3], [0.2, 0.8], [0.5, 0.5]], requires_grad=True)
    z = torch.tensor([[0.0], [1.0], [2.5]])  # constant: only the target side can reach q
    affinity_loss(q, z).backward()
    assert q.grad.abs().sum() > 0  # the official code back-propagates through S(C_Q)
    assert not affinity_loss(q, z, detach_target=True).requires_grad


@pytest.fixture
def cdc_model():
    torch.manual_seed(0)
    method = CDC(CDCConfig(beta=0.0), n_clusters=3)
    model = method.build((1, 4, 4))
    x = torch.rand(12, 1, 4, 4)
    method.init_clusters(model, x)
    method.before_step(model, 0, x)  # computes the target P
    return method, model, x


def _grads(method, model, x):
    model.zero_grad(set_to_none=True)
    index = torch.arange(len(x))
    method.training_step(model, Batch(x, index), "cluster")["loss"].backward()
    decoder = [p.grad for p in model.ae.decoder.parameters()]
    return model.centroids.grad, decoder


def test_fine_tuning_reaches_the_decoder_only_through_beta(cdc_model):
    method, model, x = cdc_model
    centroids, decoder = _grads(method, model, x)
    assert centroids.abs().sum() > 0  # L_c + η L_a update μ (Algorithm 1, line 12)
    assert all(g is None or g.abs().sum() == 0 for g in decoder)  # β = 0: no path into W'
    method.config = CDCConfig(beta=1e-3)
    _, decoder = _grads(method, model, x)
    assert any(g is not None and g.abs().sum() > 0 for g in decoder)  # β L_cr(Z, X') updates W' (line 13)


def test_pretraining_loss_terms(cdc_model):
    method, model, x = cdc_model
    terms = method.pretrain_step(model, Batch(x, torch.arange(len(x))))
    expected = terms["recon"] + method.config.lam * terms["corr"]
    torch.testing.assert_close(terms["loss"], expected)


def test_ablation_columns_name_table_3():
    assert list(CDC.ablations()) == ["AE + L_r", "AE + L_AE (AE*)", "AE* + L_c", "AE* + L_c + L_a", "AE* + L_DC"]


@pytest.mark.parametrize("data, kind, lr, momentum", [
    ("fashion-mnist", torch.optim.SGD, 0.1, 0.9),  # the official code's FMNIST schedule (spec §c)
    ("usps", torch.optim.Adam, 1e-3, None),         # its default for the data sets it has no schedule for
])
def test_pretraining_optimiser_follows_the_official_schedule(data, kind, lr, momentum):
    config = RunConfig.build("cdc", data=data, preset="cpu")
    method = CDC(config.params, n_clusters=10)
    model = method.build((1, 4, 4))
    optimiser = method.optimizer(model, "pretrain")
    assert type(optimiser) is kind
    assert optimiser.defaults["lr"] == lr
    assert optimiser.defaults.get("momentum") == momentum
    assert isinstance(method.optimizer(model, "cluster"), torch.optim.SGD)
