"""Loss functions shared by several methods: pure tensor functions, no state, no device logic."""
from __future__ import annotations

import torch
from torch import Tensor


def squared_distances(a: Tensor, b: Tensor) -> Tensor:
    """``||a_i − b_j||²`` for (N, d) and (M, d), (N, M); differentiable at zero distance, unlike ``cdist``."""
    dist2 = a.pow(2).sum(1, keepdim=True) + b.pow(2).sum(1) - 2.0 * a @ b.T
    return dist2.clamp_min(0.0)


def student_t_assign(z: Tensor, centroids: Tensor, alpha: float = 1.0) -> Tensor:
    """Soft assignment of DEC: a Student-t kernel between codes and centroids, row-normalised.

    ``q_ij ∝ (1 + ||z_i − μ_j||² / α)^(−(α+1)/2)``

    Parameters
    ----------
    z : (N, d) latent codes.
    centroids : (K, d) cluster centres.
    alpha : degrees of freedom of the Student-t kernel.

    Returns
    -------
    (N, K) tensor whose rows sum to 1.
    """
    dist2 = squared_distances(z, centroids)  # (N, K)
    kernel = (1.0 + dist2 / alpha).pow(-(alpha + 1.0) / 2.0)
    return kernel / kernel.sum(1, keepdim=True)


def target_distribution(q: Tensor) -> Tensor:
    """DEC's sharpened target ``p_ij = (q_ij² / f_j) / Σ_j' (q_ij'² / f_j')``, ``f_j = Σ_i q_ij``.

    ``q`` is (N, K) and must cover the whole data set: ``f_j`` is a data-set frequency.
    Returns an (N, K) tensor with no gradient.
    """
    q = q.detach()
    weight = q.pow(2) / q.sum(0)  # (N, K)
    return weight / weight.sum(1, keepdim=True)


def kl_clustering_loss(p: Tensor, q: Tensor, eps: float = 1e-10) -> Tensor:
    """``KL(P‖Q)`` averaged over the rows of a batch (PyTorch's ``batchmean``); p, q are (B, K)."""
    return (p * (torch.log(p + eps) - torch.log(q + eps))).sum(1).mean()


def reconstruction_loss(x: Tensor, x_hat: Tensor) -> Tensor:
    """Mean squared error per feature, ``(1/(B·D)) Σ ||x − x̂||²`` (Keras ``mse``); x is (B, ...)."""
    return (x - x_hat).pow(2).mean()
