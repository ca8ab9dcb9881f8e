"""Shared losses against values worked out by hand."""
import math

import pytest
import torch

from core.losses import kl_clustering_loss, reconstruction_loss, student_t_assign, target_distribution


@pytest.mark.parametrize("alpha", [1.0, 2.0])
def test_student_t_assign_by_hand(alpha):
    # z = (0, 0); centroids at distance² 1 and 4.
    # α = 1: kernels (1+1)^-1 = 1/2 and (1+4)^-1 = 1/5 → q = (1/2, 1/5) / (7/10) = (5/7, 2/7).
    # α = 2: kernels (1+1/2)^-1.5 and (1+2)^-1.5 → q ∝ (2/3)^1.5, (1/3)^1.5 → 2^1.5 : 1.
    z = torch.zeros(1, 2)
    centroids = torch.tensor([[1.0, 0.0], [0.0, 2.0]])
    q = student_t_assign(z, centroids, alpha)
    if alpha == 1.0:
        expected = torch.tensor([[5 / 7, 2 / 7]])
    else:
        ratio = 2 ** 1.5
        expected = torch.tensor([[ratio / (ratio + 1), 1 / (ratio + 1)]])
    torch.testing.assert_close(q, expected)


def test_target_distribution_by_hand():
    # q = [[0.5, 0.5], [0.9, 0.1]]; f = (1.4, 0.6).
    # row 1: q²/f = (0.25/1.4, 0.25/0.6) = (0.17857, 0.41667) → p = (0.3, 0.7).
    # row 2: (0.81/1.4, 0.01/0.6) = (0.57857, 0.016667) → p = (0.97200, 0.02800).
    q = torch.tensor([[0.5, 0.5], [0.9, 0.1]], requires_grad=True)
    p = target_distribution(q)
    torch.testing.assert_close(p, torch.tensor([[0.3, 0.7], [0.578571 / 0.595238, 0.016667 / 0.595238]]),
                               atol=1e-5, rtol=1e-5)
    assert not p.requires_grad  # the target is held fixed: no gradient flows through P


def test_kl_by_hand():
    # One row: p = (0.3, 0.7), q = (0.5, 0.5): 0.3 ln 0.6 + 0.7 ln 1.4 = −0.15325 + 0.23553 = 0.08228.
    # Second row p = q: 0. batchmean → 0.04114.
    p = torch.tensor([[0.3, 0.7], [0.2, 0.8]])
    q = torch.tensor([[0.5, 0.5], [0.2, 0.8]])
    expected = (0.3 * math.log(0.6) + 0.7 * math.log(1.4)) / 2
    assert kl_clustering_loss(p, q).item() == pytest.approx(expected, abs=1e-6)


def test_kl_gradient_reaches_centroids_and_codes_not_target():
    z = torch.tensor([[0.0, 0.2], [2.0, 1.0]], requires_grad=True)
    centroids = torch.tensor([[0.0, 1.0], [1.0, 0.0]], requires_grad=True)
    q = student_t_assign(z, centroids)
    loss = kl_clustering_loss(target_distribution(q), q)
    loss.backward()
    assert z.grad is not None and centroids.grad is not None
    assert z.grad.abs().sum() > 0 and centroids.grad.abs().sum() > 0


def test_reconstruction_is_per_feature_mean():
    # errors 1 and 3 on two features of one sample: (1 + 9) / 2 = 5.
    x = torch.zeros(1, 1, 1, 2)
    assert reconstruction_loss(x, torch.tensor([[[[1.0, 3.0]]]])).item() == 5.0
