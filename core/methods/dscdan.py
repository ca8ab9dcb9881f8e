"""DSCDAN (Yang et al., CVPR 2019): deep spectral clustering with a dual autoencoder, spec ``dscdan.md``.

Pretraining (§a.1–a.5): a conv encoder gives ``μ, log σ²``; the decoder reconstructs from ``μ`` (clean,
``x̄``) and from the re-parameterised sample ``ẑ = μ + σ ε`` (noisy, ``x̂``);
``L_AE = λ_r (‖x − x̄‖² + δ‖x̄ − x̂‖²) + β_g L_G + β_l L_L + γ KL(N(μ, σ²) ‖ N(0, I))`` with the JS
mutual-information estimators L_G (global, code form: ``[ẑ_i, ẑ_i]`` against ``[ẑ_i, ẑ_π(i)]``) and
L_L (local: ``ẑ_i`` against every position of the first conv block's map, negatives from another image).
That N(0, I) prior is the paper's text (``prior=normal``). The released code (spec §j.1, ``prior=mixture``,
the official presets) pretrains a Gaussian-mixture VAE instead: the prior KL becomes
``γ Σ_k P_ik KL(N(μ_i, σ_i²) ‖ N(ν_k, I)) + γ_P Σ_k P_ik log P_ik`` with ``P = softmax(S(μ))`` from the
spectral net S (v2's checkpoint holds it in that role) and learnable means ν, so S and ν reach the joint
phase trained; they are then part of the cached pretrained state.

Initialisation: k-means on μ, the row "ConvAE+MI+RS" of Table 4 (the k-means-on-pretrained-codes figure).

Joint phase (§a.6–a.8, §c): batches of up to ``m`` codes; a kNN Gaussian affinity W on μ (k nearest
*others*, scale = batch median of the distance to a chosen neighbour, no gradient); the spectral net
``Ỹ = S(μ)`` (softmax head, or tanh), orthonormalised per batch ``Y = Ỹ Ω``, ``Ω = √m (L⁻¹)ᵀ`` with
``ỸᵀỸ = LLᵀ`` in float64 plus jitter and gradients *through* the Cholesky factor (pitfalls 3–4);
``L = λ_r L_R + β_g' L_G + β_l L_L + γ' Σ_k P_ik KL(N(μ_i, σ_i²) ‖ N(ν_k, I)) + γ_P KL(P_i ‖ U) + λ_sp L_SN``
with ``P = softmax(S(μ))`` and learnable mixture means ν (K, d) starting at 0.

Readout (§a.9): after every epoch Ω is recomputed on all points and k-means (``kmeans_restarts``) runs
on Y; ``assign`` gives the nearest k-means centre. The argmax of P is the other readout: its ACC/NMI/ARI
are the ``acc_argmax``… columns (``readout=argmax`` swaps the two: v2's readout, then ``acc_kmeans``).
Per-epoch event scalars of the joint phase: ``ortho_error`` (mean over the epoch's batches of
‖YᵀY/m − I‖_F) and ``kernel_scale_s`` (mean affinity scale s); of every epoch that computes P (the joint
phase, mixture pretraining): ``p_log_p``, the batch mean of Σ_k P log P (−ln K while S is uniform).
With ``pretrain_kmeans`` the pretraining rows score k-means on μ (``acc_kmeans_mu``…).
"""
from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from typing import NamedTuple

import numpy as np
import torch
from scipy.optimize import linear_sum_assignment
from torch import Tensor, nn
from torch.nn import functional as F

from core.config import NON_NEGATIVE, Config, knob
from core.data import BUILTIN_SIZES, builtin_side, small_builtin
from core.losses import squared_distances, student_t_assign
from core.methods.base import CurvePanel, Method, kmeans_labels
from core.models import adam
from core.models.autoencoders import mlp

log = logging.getLogger(__name__)

JITTER = 1e-6            # relative to tr(ỸᵀỸ)/K, pitfall 3
LEAKY_SLOPE = 0.2        # LeakyReLU of the official encoder and decoder (§b)
SPECTRAL_HIDDEN = (1024, 1024, 512)
CHUNK = 4096

# What the readout reads: nothing yet, k-means centres on μ (after init), the spectral embedding.
STAGE_NONE, STAGE_LATENT, STAGE_SPECTRAL = 0, 1, 2


# ------------------------------------------------------------------------------------------------
# Pure functions
# ------------------------------------------------------------------------------------------------

def squared_error(a: Tensor, b: Tensor) -> Tensor:
    """``(1/m) Σ_i ‖a_i − b_i‖²``: squared errors summed over pixels, averaged over the batch; a, b (m, ...)."""
    return (a - b).pow(2).flatten(1).sum(1).mean()


def reparameterise(mu: Tensor, logvar: Tensor) -> Tensor:
    """The noisy transformer ``ẑ = μ + σ ⊙ ε``, ε ~ N(0, I) from torch's global RNG; (m, d) → (m, d)."""
    return mu + (0.5 * logvar).exp() * torch.randn_like(mu)


def js_mi_loss(positive: Tensor, negative: Tensor) -> Tensor:
    """The JS mutual-information estimator as a loss (§a.2): ``mean softplus(−T⁺) + mean softplus(T⁻)``.

    positive, negative : critic logits of matched and shuffled pairs, any equal shapes ((m,) global,
    (m, h, w) local: the mean then runs over the batch and the positions). Returns a scalar.
    """
    return F.softplus(-positive).mean() + F.softplus(negative).mean()


def gaussian_kl(mu: Tensor, logvar: Tensor) -> Tensor:
    """``(1/m) Σ_i ½ Σ_j (μ_ij² + σ_ij² − log σ_ij² − 1)``: KL(N(μ, σ²) ‖ N(0, I)); mu, logvar (m, d)."""
    return 0.5 * (mu.pow(2) + logvar.exp() - logvar - 1.0).sum(1).mean()


def mixture_kl(mu: Tensor, logvar: Tensor, p: Tensor, nu: Tensor) -> Tensor:
    """``(1/m) Σ_i Σ_k P_ik KL(N(μ_i, σ_i²) ‖ N(ν_k, I))`` (§a.7).

    ``KL_ik = ½ Σ_j (σ_ij² + (μ_ij − ν_kj)² − log σ_ij² − 1)``.
    mu, logvar : (m, d); p : (m, K) cluster posteriors (rows sum to 1); nu : (K, d). Returns a scalar.
    """
    spread = 0.5 * (logvar.exp() - logvar - 1.0).sum(1, keepdim=True)  # (m, 1)
    kl = spread + 0.5 * squared_distances(mu, nu)                        # (m, K)
    return (p * kl).sum(1).mean()


def mean_p_log_p(p: Tensor, eps: float = 1e-12) -> Tensor:
    """``(1/m) Σ_i Σ_k P_ik log P_ik``: −log K for uniform rows, 0 for one-hot ones; p (m, K). Returns a scalar."""
    return (p * (p + eps).log()).sum(1).mean()


def categorical_kl_uniform(p: Tensor, eps: float = 1e-12) -> Tensor:
    """``(1/m) Σ_i KL(P_i ‖ U_K) = (1/m) Σ_i Σ_k P_ik log P_ik + log K``; p (m, K). §a.7's P log P term + log K."""
    return mean_p_log_p(p, eps) + math.log(p.shape[1])


@torch.no_grad()
def knn_affinity(codes: Tensor, n_neighbours: int = 3, scale_neighbour: int = 1, kernel_scale: float = 1.0,
                 fixed_scale: float = 0.0) -> tuple[Tensor, Tensor]:
    """The batch affinity of §a.6 on the k nearest *other* points, symmetrised; no gradient.

    ``W_ij = exp(−‖c_i − c_j‖² / (2 s²))`` for j among the ``n_neighbours`` nearest others of i, else 0;
    then ``W ← (W + Wᵀ)/2``. The scale s is ``fixed_scale`` if positive, else ``kernel_scale`` times the
    batch median of the distance from each point to its ``scale_neighbour``-th nearest other point.

    codes : (m, d) with m > n_neighbours ≥ scale_neighbour ≥ 1 (trusted). Returns W (m, m) and s (0-dim).
    """
    dist2 = squared_distances(codes, codes)
    dist2.fill_diagonal_(float("inf"))
    near2, index = dist2.topk(n_neighbours, dim=1, largest=False)  # (m, k), ascending
    if fixed_scale > 0:
        scale = torch.tensor(fixed_scale, dtype=codes.dtype, device=codes.device)
    else:
        scale = kernel_scale * near2[:, scale_neighbour - 1].sqrt().median()
    weights = torch.zeros_like(dist2).scatter_(1, index, torch.exp(-near2 / (2.0 * scale ** 2)))
    return 0.5 * (weights + weights.T), scale


def orthonormalise(y_tilde: Tensor, jitter: float = JITTER) -> tuple[Tensor, Tensor]:
    """The orthonorm layer (§a.6): ``Y = Ỹ Ω``, ``Ω = √m (L⁻¹)ᵀ``, ``ỸᵀỸ + εI = LLᵀ`` (Cholesky).

    The Gram matrix and the factor are float64 with ``ε = jitter · tr(ỸᵀỸ)/K`` (a softmax or near-constant
    head makes ỸᵀỸ near-singular, pitfall 3). Gradients flow through Ω (pitfall 4): detaching it lets
    the net shrink L_SN by collapsing Ỹ.

    Computed on the CPU, where float64 exists on every machine (Apple's MPS has none): an (m, K) batch and a
    (K, K) factor are small, and gradients follow the transfer.

    y_tilde : (m, K). Returns Y (m, K) in y_tilde's dtype and device, with ``YᵀY/m ≈ I``, and Ω (K, K) float64
    on the CPU.
    """
    m, k = y_tilde.shape
    y64 = y_tilde.to("cpu", torch.float64)
    gram = y64.T @ y64                                                  # (K, K)
    eye = torch.eye(k, dtype=torch.float64)
    factor = torch.linalg.cholesky(gram + jitter * gram.diagonal().sum() / k * eye)
    omega = math.sqrt(m) * torch.linalg.solve_triangular(factor, eye, upper=False).T  # (K, K)
    return (y64 @ omega).to(y_tilde.device, y_tilde.dtype), omega


def orthonormality_error(y: Tensor) -> Tensor:
    """``‖YᵀY/m − I‖_F`` of an (m, K) embedding: 0 for an exactly orthonormalised batch."""
    m, k = y.shape
    return (y.T @ y / m - torch.eye(k, dtype=y.dtype, device=y.device)).norm()


def spectral_loss(y: Tensor, weights: Tensor) -> Tensor:
    """``L_SN = (1/m) Σ_ij W_ij ‖Y_i − Y_j‖² = (2/m) tr(Yᵀ(D − W)Y)`` (v2's 1/m normaliser, §a.6).

    y : (m, K) orthonormalised embedding; weights : (m, m) symmetric affinity. Returns a scalar.
    """
    return (weights * squared_distances(y, y)).sum() / len(y)


def align_labels(labels: np.ndarray, reference: np.ndarray, k: int) -> np.ndarray:
    """The renaming of cluster ids 0…k−1 in ``labels`` that best matches ``reference`` (Hungarian):
    ``perm[label]`` is the reference id it takes; labels, reference (N,). Keeps ids stable across epochs."""
    table = np.zeros((k, k), dtype=np.int64)
    np.add.at(table, (labels, reference), 1)
    rows, cols = linear_sum_assignment(table, maximize=True)
    perm = np.empty(k, dtype=np.int64)
    perm[rows] = cols
    return perm


# ------------------------------------------------------------------------------------------------
# Networks (§b)
# ------------------------------------------------------------------------------------------------

class Encoding(NamedTuple):
    mu: Tensor         # (m, d)
    logvar: Tensor     # (m, d)
    local_map: Tensor  # (m, c_1, h_1, w_1): the first conv block's output, for the local MI
    features: Tensor   # (m, F): the flattened last conv map, the paper form's encoding of x


def conv_plan(layers: int, channel_scale: int) -> tuple[tuple[int, ...], tuple[int, ...]]:
    """Channels and strides of the encoder: Table 2 (4 layers 16-16-32-32, strides 2-1-2-1; USPS: 2 layers
    16-32, strides 2-2), times ``channel_scale`` (the official code doubles them)."""
    if layers == 2:
        return (16 * channel_scale, 32 * channel_scale), (2, 2)
    return tuple(c * channel_scale for c in (16, 16, 32, 32)), (2, 1, 2, 1)


class DualAutoencoder(nn.Module):
    """Conv encoder to (μ, log σ²), a mirrored transposed-conv decoder with a sigmoid output (§b)."""

    def __init__(self, input_shape: tuple[int, int, int], latent_dim: int, layers: int = 4, channel_scale: int = 1):
        super().__init__()
        channels, strides = conv_plan(layers, channel_scale)
        c, h, w = input_shape
        self.sizes = [(h, w)]                   # the spatial size entering each conv layer, then the last
        for stride in strides:
            h, w = (h - 1) // stride + 1, (w - 1) // stride + 1  # 3×3 kernel, padding 1
            self.sizes.append((h, w))
        self.code_shape = (channels[-1], h, w)
        flat = channels[-1] * h * w
        self.encoder = nn.ModuleList(nn.Conv2d(c_in, c_out, 3, stride, padding=1)
                                     for c_in, c_out, stride in zip((c, *channels[:-1]), channels, strides))
        self.mu_head = nn.Linear(flat, latent_dim)
        self.logvar_head = nn.Linear(flat, latent_dim)
        self.expand = nn.Linear(latent_dim, flat)
        # Decoder layer j mirrors encoder layer L+1−j: same stride, channels back down to the first block's.
        self.decoder = nn.ModuleList(nn.ConvTranspose2d(channels[i], channels[max(i - 1, 0)], 3, strides[i], padding=1)
                                     for i in reversed(range(len(channels))))
        self.output = nn.ConvTranspose2d(channels[0], c, 3, 1, padding=1)
        self.local_channels = channels[0]

    def encode(self, x: Tensor) -> Encoding:
        h = x
        maps = []
        for conv in self.encoder:
            h = F.leaky_relu(conv(h), LEAKY_SLOPE)
            maps.append(h)
        features = h.flatten(1)
        return Encoding(self.mu_head(features), self.logvar_head(features), maps[0], features)

    def decode(self, z: Tensor) -> Tensor:
        h = F.leaky_relu(self.expand(z), LEAKY_SLOPE).view(-1, *self.code_shape)
        for conv, size in zip(self.decoder, reversed(self.sizes[:-1])):
            h = F.leaky_relu(conv(h, output_size=size), LEAKY_SLOPE)
        return torch.sigmoid(self.output(h))


class GlobalCritic(nn.Module):
    """T_g: an MLP (a + d) → d → d → d → 1 on the concatenated pair, one logit per row."""

    def __init__(self, pair_dim: int, latent_dim: int):
        super().__init__()
        self.net = mlp([pair_dim + latent_dim, latent_dim, latent_dim, latent_dim, 1])

    def forward(self, a: Tensor, z: Tensor) -> Tensor:
        return self.net(torch.cat([a, z], 1)).squeeze(1)  # (m,)


class LocalCritic(nn.Module):
    """T_l: 1×1 convs (c_m + d) → d → d → d → 1 on ``[M(u, v); ẑ]`` at every position.

    The first layer is split into its map and code parts, ``W_M M(u, v) + W_z ẑ``, so the code part is
    computed once per image instead of once per position: the same function, a fraction of the cost.
    """

    def __init__(self, map_channels: int, latent_dim: int):
        super().__init__()
        self.from_map = nn.Linear(map_channels, latent_dim)
        self.from_code = nn.Linear(latent_dim, latent_dim, bias=False)
        self.rest = nn.Sequential(nn.ReLU(), mlp([latent_dim, latent_dim, latent_dim, 1]))

    def forward(self, local_map: Tensor, z: Tensor, shuffle: Tensor) -> tuple[Tensor, Tensor]:
        """Logits (m, h, w) of ``[M_i; ẑ_i]`` and of ``[M_π(i); ẑ_i]`` (π = ``shuffle``)."""
        mapped = self.from_map(local_map.permute(0, 2, 3, 1))  # (m, h, w, d)
        code = self.from_code(z)[:, None, None, :]             # (m, 1, 1, d)
        return self.rest(mapped + code).squeeze(-1), self.rest(mapped[shuffle] + code).squeeze(-1)


class DualNetwork(nn.Module):
    """What pretraining produces and the cache stores: the dual autoencoder and both MI critics."""

    def __init__(self, input_shape, latent_dim, layers, channel_scale, paper_pairs: bool):
        super().__init__()
        self.ae = DualAutoencoder(input_shape, latent_dim, layers, channel_scale)
        pair_dim = math.prod(self.ae.code_shape) if paper_pairs else latent_dim
        self.global_critic = GlobalCritic(pair_dim, latent_dim)
        self.local_critic = LocalCritic(self.ae.local_channels, latent_dim)


class MixturePretrained(nn.Module):
    """What pretraining under the mixture prior produces and the cache stores: the dual network, the
    classifier S and the means ν, the model's own modules (not copies), so loading it fills the model."""

    def __init__(self, dual: DualNetwork, spectral: nn.Module, nu: nn.Parameter):
        super().__init__()
        self.dual, self.spectral, self.nu = dual, spectral, nu


class DSCDANModel(nn.Module):
    """The dual network, the spectral net S (d → 1024 → 1024 → 512 → K), the mixture means ν and the
    readout state (Ω and k-means centres of the last evaluation) as buffers, so checkpoints carry it."""

    def __init__(self, dual: DualNetwork, latent_dim: int, n_clusters: int):
        super().__init__()
        self.dual = dual
        self.spectral = mlp([latent_dim, *SPECTRAL_HIDDEN, n_clusters])
        self.nu = nn.Parameter(torch.zeros(n_clusters, latent_dim))
        self.register_buffer("omega", torch.eye(n_clusters))  # float32: it lives on the device (MPS has no float64)
        self.register_buffer("y_centres", torch.zeros(n_clusters, n_clusters))
        self.register_buffer("mu_centres", torch.zeros(n_clusters, latent_dim))
        self.register_buffer("stage", torch.tensor(STAGE_NONE))
        for module in self.modules():
            if isinstance(module, (nn.Linear, nn.Conv2d, nn.ConvTranspose2d)):
                # Keras' Glorot-uniform default of the official code; torch's default makes the spectral
                # net's outputs ~10× smaller, so ỸᵀỸ starts further below the orthonorm layer's jitter.
                nn.init.xavier_uniform_(module.weight)
                if module.bias is not None:
                    nn.init.zeros_(module.bias)


# ------------------------------------------------------------------------------------------------
# The method
# ------------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class DSCDANConfig(Config):
    latent_dim: int = knob(120, symbol="d", min=10, max=128, step=1, help="size of the latent space (paper: 120)")
    conv_layers: int = knob(4, choices=(2, 4),
                            help="encoder conv layers: 4 (16-16-32-32, strides 2-1-2-1) or 2 (USPS in Table 2: "
                                 "16-32, strides 2-2)")
    channel_scale: int = knob(1, choices=(1, 2), help="channel multiplier: 1 as Table 2, 2 as the official code")
    lambda_r: float = knob(5.0, symbol="λ_r", min=0.5, max=20.0, step=0.5,
                           help="weight of the reconstruction loss L_R (official code: 5; the paper's value was lost)",
                           limits=NON_NEGATIVE)
    delta: float = knob(0.5, symbol="δ", min=0.0, max=2.0, step=0.05,
                        help="weight of the relative (clean vs noisy) reconstruction ‖x̄ − x̂‖² in L_R (v2 code: 0.5)")
    data_term: str = knob("clean", choices=("clean", "noisy"),
                          help="L_R's data term ‖x − x̄‖² from μ (paper, v1) or ‖x − x̂‖² from ẑ (v2 joint code)")
    beta_g: float = knob(0.01, symbol="β_g", min=0.0, max=1.0, step=0.001,
                         help="weight of the global MI loss in pretraining (official code: 0.01)")
    beta_g_joint: float = knob(0.001, symbol="β_g′", min=0.0, max=1.0, step=0.001,
                               help="weight of the global MI loss in the joint phase (official code: 0.001)")
    beta_l: float = knob(0.01, symbol="β_l", min=0.0, max=2.0, step=0.001,
                         help="weight of the local MI loss, both phases (off in the official code; 0 skips it)")
    global_pairs: str = knob("code", choices=("code", "paper"),
                             help="global MI pairs: code [ẑ_i, ẑ_i] vs [ẑ_i, ẑ_π(i)]; paper: the conv features of "
                                  "x_i instead of the first ẑ_i")
    prior: str = knob("normal", symbol="q(z)", choices=("normal", "mixture"),
                      choice_labels={"normal": "paper text: N(0, I)", "mixture": "official code: mixture N(ν_k, I)"},
                      help="pretraining prior. normal = paper text: N(0, I). mixture = official code: a Gaussian "
                           "mixture N(ν_k, I) weighted by the spectral net's softmax P on μ, so S and ν start the "
                           "joint phase trained")
    gamma: float = knob(1.0, symbol="γ", min=0.0, max=2.0, step=0.05,
                        help="weight of the prior KL in pretraining, KL(p(z|x) ‖ N(0, I)) or the mixture's "
                             "Σ_k P_k KL(p(z|x) ‖ N(ν_k, I)) (official code: 1)")
    gamma_joint: float = knob(1.5, symbol="γ′", min=0.0, max=2.0, step=0.05,
                              help="weight of the mixture KL Σ_k P_ik KL(p(z|x_i) ‖ N(ν_k, I)) in the joint phase "
                                   "(v2 code: 1.5)")
    cluster_prior: float = knob(1.0, symbol="γ_P", min=0.0, max=2.0, step=0.05,
                                help="weight of KL(P_i ‖ uniform), the P log P term of the mixture KL, in the joint "
                                     "phase and in mixture pretraining (official code: 1)")
    lambda_sp: float = knob(1.0, symbol="λ_sp", min=0.1, max=10.0, log=True,
                            help="weight of the spectral loss (1/m)·Σ W_ij ‖Y_i − Y_j‖²")
    n_neighbours: int = knob(3, symbol="k", min=2, max=15, step=1,
                             help="affinity neighbours, counted without the point itself (paper: 3; v2 code: 5)")
    scale_neighbour: int = knob(1, min=1, max=15, step=1,
                                help="the kernel scale is the batch median distance to this nearest other point "
                                     "(1: SpectralNet's convention); at most k")
    kernel_scale: float = knob(1.0, symbol="s×", min=0.25, max=4.0, log=True,
                               help="factor on the median kernel scale s")
    fixed_scale: float = knob(0.0, symbol="s", min=0.0, max=10.0, step=0.01,
                              help="a fixed kernel scale s instead of the batch median (0: median; v2 code: 2.62)")
    spectral_batch: int = knob(1024, symbol="m", min=256, max=2048, step=64,
                               help="largest joint-phase batch; batches are spread evenly over the data")
    head: str = knob("softmax", choices=("softmax", "tanh"),
                     help="last activation of the spectral net before the orthonorm layer: softmax (v2) or tanh "
                          "(SpectralNet, v1); P is the softmax either way")
    readout: str = knob("kmeans", choices=("kmeans", "argmax"),
                        help="main cluster readout: k-means on Y (paper) or argmax P (v2, faster); the other is "
                             "scored beside it")
    joint_autoencoder: bool = knob(True, help="train the autoencoder jointly (v2); off: only the spectral net, on "
                                              "fixed codes (v1's two stages)")
    lr: float = knob(1e-3, symbol="η", min=1e-4, max=3e-3, log=True, help="Adam learning rate of both phases")
    max_iter: int = knob(5000, symbol="T", min=0, max=5000, step=50, help="cap on joint-phase iterations")
    tol: float = knob(1e-4, symbol="tol", min=0.0, max=0.01, step=0.0001,
                      help="stop the joint phase when the epoch-mean loss changes by less than this (0: never)")
    kmeans_restarts: int = knob(10, min=1, max=50, step=1, help="k-means restarts of every readout")
    pretrain_kmeans: bool = knob(False, help="score k-means on μ after every pretraining epoch (the acc_kmeans_mu "
                                             "columns; one k-means of the whole data per epoch)")


def joint_epochs(dataset: str, iterations: int, spectral_batch: int) -> int:
    """Trainer epochs that hold ``iterations`` joint steps on a known data set (2000 otherwise)."""
    n = BUILTIN_SIZES.get(dataset)
    return math.ceil(iterations / math.ceil(n / spectral_batch)) if n else 2000


class DSCDAN(Method):
    name = "dscdan"
    title = "DSCDAN"
    Config = DSCDANConfig
    phases = ("pretrain", "cluster")
    diagnostics = {"orthonormality error ‖YᵀY/m − I‖": ("ortho_error",), "kernel scale s": ("kernel_scale_s",),
                   "Σ_k P log P of S (−ln K: uniform, 0: one-hot)": ("p_log_p",)}
    objective = (r"\begin{gathered}W_{ij}=\exp\!\Big(-\frac{\lVert\mu_i-\mu_j\rVert^2}{2s^2}\Big)\ "
                 r"(j\text{ among the }k"
                 r"\text{ nearest})\\s=s_\times\cdot\operatorname{median}_i\lVert\mu_i-\mu_{i,(1)}\rVert\\"
                 r"L_{SN}=\frac1m\sum_{i,j}W_{ij}\lVert Y_i-Y_j\rVert^2,\quad Y^\top Y/m=I\\"
                 r"L=\lambda_r L_R+\beta_g' L_G+\beta_l L_L\\+\gamma'\textstyle\sum_k P_{ik}\mathrm{KL}"
                 r"(\mathcal N(\mu_i,\sigma_i^2)\Vert\mathcal N(\nu_k,I))+\gamma_P\mathrm{KL}(P_i\Vert U)"
                 r"+\lambda_{sp}L_{SN}\end{gathered}")
    symbols = {"k": "n_neighbours", r"s_\times": "kernel_scale", r"\lambda_{sp}": "lambda_sp", r"\lambda_r": "lambda_r",
               r"\gamma'": "gamma_joint", r"\gamma_P": "cluster_prior"}
    explanation = (
        "DSCDAN pretrains a dual autoencoder (it rebuilds each image from its code and from a noisy copy of it, "
        "and keeps the code informative about the image), then learns a spectral embedding Y of the codes: "
        "points joined by a large affinity W must get the same Y. W is a Gaussian of the distance with scale s "
        "(the batch median distance to a near neighbour, times the s× slider), kept only for each point's k "
        "nearest others: the left panel. The right panel is the spectral loss of two points split into two "
        "clusters: splitting close points is expensive, splitting far ones is free. While it trains, watch the "
        "orthonormality error stay small and ACC (k-means on Y) against the dashed argmax-P readout; if the "
        "pretrained codes mix digits, the affinity joins them and the spectral phase cannot separate them.")
    demo = ("Fast demo on digits (seed 0, `bench/teaching.py`): ACC 0.707, NMI 0.774, against 0.792 for k-means on "
            "the pixels: it ends below the pixels (its short pretraining mixes digits); about a minute.")
    published = {"usps": (0.869, 0.857, "DSCDAN paper Table 3, mean of 10"),
                 "mnist-test": (0.980, 0.946, "DSCDAN paper Table 3, mean of 10"),
                 "mnist": (0.978, 0.941, "DSCDAN paper Table 3, mean of 10"),
                 "fashion-mnist": (0.662, 0.645, "DSCDAN paper Table 3, mean of 10")}

    # Table 4 of the seed, ACC / NMI, in the order of ``ablations``.
    published_ablation = {
        "usps": [(0.698, 0.652), (0.785, 0.744), (0.798, 0.752), (0.831, 0.827), (0.869, 0.857)],
        "mnist-test": [(0.781, 0.751), (0.844, 0.796), (0.850, 0.801), (0.961, 0.914), (0.980, 0.946)],
        "mnist": [(0.776, 0.745), (0.835, 0.800), (0.841, 0.803), (0.957, 0.910), (0.978, 0.941)],
        "fashion-mnist": [(0.546, 0.556), (0.592, 0.609), (0.614, 0.597), (0.656, 0.640), (0.662, 0.645)]}

    def __init__(self, config, n_clusters, seed=0):
        super().__init__(config, n_clusters, seed)
        self.previous: np.ndarray | None = None  # (N,) main labels of the last readout, to keep ids stable
        self.last_loss = float("nan")            # epoch-mean joint loss, for the tol stop
        self.converged = False
        self._reset_epoch()

    def _reset_epoch(self) -> None:
        self.loss_sum, self.ortho_sum, self.scale_sum, self.steps = 0.0, 0.0, 0.0, 0
        self.p_log_p_sum, self.p_batches = 0.0, 0

    def _record_posteriors(self, p: Tensor) -> None:
        self.p_log_p_sum += float(mean_p_log_p(p.detach()))
        self.p_batches += 1

    # -- presets -----------------------------------------------------------------------------------
    @classmethod
    def dataset_defaults(cls, dataset):
        return {"conv_layers": 2 if dataset == "usps" else 4, "batch_size": 100, "pretrain_epochs": 100,
                "epochs": joint_epochs(dataset, 5000, 1024)}

    @classmethod
    def presets(cls, dataset):
        paper = cls.dataset_defaults(dataset)
        official = {**paper, "conv_layers": 4, "channel_scale": 2, "beta_l": 0.0, "prior": "mixture"}
        small = small_builtin(dataset)
        wide = (builtin_side(dataset) or 0) >= 28  # 28×28: a joint step costs ~3× USPS's
        cpu_batch = 512 if wide else 1024
        return {
            "paper": paper,
            "official-v2": {**official, "n_neighbours": 5, "fixed_scale": 2.62, "data_term": "noisy", "delta": 0.5,
                            "readout": "argmax", "head": "softmax"},
            "official-v1": {**official, "joint_autoencoder": False, "head": "tanh", "lambda_r": 2.5, "delta": 2.0,
                            "data_term": "clean", "n_neighbours": 2, "scale_neighbour": 1, "lambda_sp": 0.5},
            # §g's calibrated prototype: 4 conv layers, 20 epochs at 256, the joint KL at γ = 1, SpectralNet's
            # 1/(2m) normaliser (λ_sp 0.5 here), s from the 2nd-nearest other point. USPS seed 0, same
            # pretraining: k-means on Y 0.946 after 300 iterations; with the §d values 0.812 (4 and 9 merged).
            # At 28×28 the local MI (14×14 positions) took ~3/4 of every step and its critic stayed at chance
            # (L_L ≈ 2 ln 2); off, as in the official code, a MNIST-test seed fits the budget (22 → ~7 min).
            "cpu": {"conv_layers": 4, "batch_size": 256, "pretrain_epochs": 20, "spectral_batch": cpu_batch,
                    "max_iter": 300, "epochs": joint_epochs(dataset, 300, cpu_batch), "gamma_joint": 1.0,
                    "lambda_sp": 0.5, "scale_neighbour": 2, **({"beta_l": 0.0} if wide else {})},
            # Adam at the top of the spec's lr range: 15 epochs at 3e-3 pretrain digits as far as 30 at 1e-3
            # (k-means on μ 0.75–0.77, seeds 0–2; 0.45 after 10 epochs at 1e-3).
            "fast": {"conv_layers": 4, "batch_size": 64 if small else 256, "pretrain_epochs": 15, "lr": 3e-3,
                     "spectral_batch": 512, "max_iter": 40, "epochs": joint_epochs(dataset, 40, 512)},
        }

    @classmethod
    def loss_curves(cls, config):
        return dscdan_panels(config)

    @classmethod
    def ablations(cls) -> dict[str, dict]:
        """Table 4's columns as overrides. The four autoencoder rows stop after the k-means on μ (no joint
        epochs). "RS" keeps the prior KL: without it σ → 0 and the relative loss vanishes with the noise."""
        no_mi = {"beta_g": 0.0, "beta_g_joint": 0.0, "beta_l": 0.0}
        return {"ConvAE": {**no_mi, "gamma": 0.0, "delta": 0.0, "epochs": 0},
                "ConvAE+MI": {"delta": 0.0, "epochs": 0},
                "ConvAE+RS": {**no_mi, "epochs": 0},
                "ConvAE+MI+RS": {"epochs": 0},
                "ConvAE+MI+RS+SN (full)": {}}

    # -- model -------------------------------------------------------------------------------------
    def build(self, input_shape):
        c = self.config
        dual = DualNetwork(input_shape, c.latent_dim, c.conv_layers, c.channel_scale, c.global_pairs == "paper")
        return DSCDANModel(dual, c.latent_dim, self.n_clusters)

    def optimizer(self, model, phase):
        if phase == "pretrain":
            return adam(self.pretrained_part(model).parameters(), lr=self.config.lr)
        if self.config.joint_autoencoder:
            return adam(model.parameters(), lr=self.config.lr)
        return adam([*model.spectral.parameters(), model.nu], lr=self.config.lr)

    def batch_size(self, phase, n_samples):
        if phase != "cluster":
            return None
        # Evenly sized batches of at most m: no small trailing batch for the orthonorm layer and the kNN graph.
        n_batches = math.ceil(n_samples / self.config.spectral_batch)
        return math.ceil(n_samples / n_batches)

    # -- losses --------------------------------------------------------------------------------------
    def dual_terms(self, model, x: Tensor, beta_g: float) -> tuple[dict[str, Tensor], Encoding]:
        """The autoencoder's terms on a batch x (m, C, H, W): ``{"loss": λ_r L_R + β_g L_G + β_l L_L, ...}``."""
        c = self.config
        dual = model.dual
        enc = dual.ae.encode(x)
        z_noisy = reparameterise(enc.mu, enc.logvar)
        x_clean, x_noisy = dual.ae.decode(enc.mu), dual.ae.decode(z_noisy)
        recon = squared_error(x, x_noisy if c.data_term == "noisy" else x_clean)
        relative = squared_error(x_clean, x_noisy)
        shuffle = torch.randperm(len(x), device=x.device)
        pair = z_noisy if c.global_pairs == "code" else enc.features
        global_mi = js_mi_loss(dual.global_critic(pair, z_noisy), dual.global_critic(pair, z_noisy[shuffle]))
        terms = {"recon": recon, "relative": relative, "global_mi": global_mi}
        loss = c.lambda_r * (recon + c.delta * relative) + beta_g * global_mi
        if c.beta_l > 0:  # the costliest term: skipped when it has no weight
            terms["local_mi"] = js_mi_loss(*dual.local_critic(enc.local_map, z_noisy, shuffle))
            loss = loss + c.beta_l * terms["local_mi"]
        return {"loss": loss, **terms}, enc

    def pretrain_step(self, model, batch):
        c = self.config
        terms, enc = self.dual_terms(model, batch.x, c.beta_g)
        if c.prior == "normal":
            kl = gaussian_kl(enc.mu, enc.logvar)
            return {**terms, "loss": terms["loss"] + c.gamma * kl, "kl": kl}
        p = model.spectral(enc.mu).softmax(1)  # (m, K): the classifier of the official pretraining
        self._record_posteriors(p)
        kl, categorical = mixture_kl(enc.mu, enc.logvar, p, model.nu), categorical_kl_uniform(p)
        return {**terms, "loss": terms["loss"] + c.gamma * kl + c.cluster_prior * categorical, "mixture_kl": kl,
                "cluster_prior": categorical}

    def spectral_terms(self, model, mu: Tensor) -> tuple[dict[str, Tensor], Tensor]:
        """L_SN on codes mu (m, d) and the cluster posteriors P (m, K); records the batch's diagnostics."""
        c = self.config
        logits = model.spectral(mu)
        p = logits.softmax(1)
        self._record_posteriors(p)
        y, _ = orthonormalise(p if c.head == "softmax" else logits.tanh())
        weights, scale = knn_affinity(mu, c.n_neighbours, min(c.scale_neighbour, c.n_neighbours), c.kernel_scale,
                                      c.fixed_scale)
        self.ortho_sum += float(orthonormality_error(y.detach()))
        self.scale_sum += float(scale)
        return {"spectral": spectral_loss(y, weights)}, p

    def training_step(self, model, batch, phase):
        c = self.config
        if not c.joint_autoencoder:  # v1: SpectralNet on the fixed pretrained codes
            with torch.no_grad():
                mu = model.dual.ae.encode(batch.x).mu
            terms, _ = self.spectral_terms(model, mu)
            loss = c.lambda_sp * terms["spectral"]
        else:
            terms, enc = self.dual_terms(model, batch.x, c.beta_g_joint)
            spectral, p = self.spectral_terms(model, enc.mu)
            terms.update(spectral, mixture_kl=mixture_kl(enc.mu, enc.logvar, p, model.nu),
                         cluster_prior=categorical_kl_uniform(p))
            loss = (terms.pop("loss") + c.gamma_joint * terms["mixture_kl"] + c.cluster_prior * terms["cluster_prior"]
                    + c.lambda_sp * terms["spectral"])
        self.loss_sum += float(loss.detach())
        self.steps += 1
        return {"loss": loss, **terms}

    # -- phases and hooks ------------------------------------------------------------------------------
    @torch.no_grad()
    def codes(self, model, x: Tensor) -> Tensor:
        """μ of the whole data x (N, C, H, W) in chunks, (N, d)."""
        return torch.cat([model.dual.ae.encode(x[i:i + CHUNK]).mu for i in range(0, len(x), CHUNK)])

    def init_clusters(self, model, x):
        labels, centres = kmeans_labels(self.codes(model, x).cpu().numpy(), self.n_clusters, self.seed,
                                        self.config.kmeans_restarts)
        model.mu_centres.copy_(torch.as_tensor(centres, dtype=model.mu_centres.dtype))
        model.stage.fill_(STAGE_LATENT)
        self.previous = labels

    def on_epoch_start(self, model, phase, epoch, x):
        self._reset_epoch()
        if phase == "cluster":
            model.stage.fill_(STAGE_SPECTRAL)
        return {}

    def on_epoch_end(self, model, phase, epoch):
        scalars = {"p_log_p": self.p_log_p_sum / self.p_batches} if self.p_batches else {}
        if phase != "cluster" or not self.steps:
            return scalars
        loss = self.loss_sum / self.steps
        self.converged = self.config.tol > 0 and abs(loss - self.last_loss) < self.config.tol
        self.last_loss = loss
        return {**scalars, "ortho_error": self.ortho_sum / self.steps, "kernel_scale_s": self.scale_sum / self.steps}

    def before_step(self, model, step, x):
        if step >= self.config.max_iter:
            return "all iterations done"
        return "converged: the loss changed less than the tolerance" if self.converged else None

    @torch.no_grad()
    def readouts(self, model, x):
        """Before init, k-means on μ when ``pretrain_kmeans`` asks for it; in the joint phase Ω from all points,
        k-means on Y (cluster ids aligned to the last readout's), argmax P."""
        c = self.config
        if int(model.stage) == STAGE_NONE and c.pretrain_kmeans:
            return {"kmeans_mu": torch.from_numpy(kmeans_labels(self.codes(model, x).cpu().numpy(), self.n_clusters,
                                                                self.seed, c.kmeans_restarts)[0])}
        if int(model.stage) != STAGE_SPECTRAL:
            return {}
        was_training = model.training
        model.eval()
        mu = self.codes(model, x)
        logits = torch.cat([model.spectral(mu[i:i + CHUNK]) for i in range(0, len(mu), CHUNK)])  # (N, K)
        model.train(was_training)
        y, omega = orthonormalise(logits.softmax(1) if c.head == "softmax" else logits.tanh())
        kmeans, centres = kmeans_labels(y.cpu().numpy(), self.n_clusters, self.seed, c.kmeans_restarts)
        argmax = logits.argmax(1).cpu().numpy()
        if np.all(argmax == argmax[0]):
            log.warning("DSCDAN: argmax P puts every point in one cluster (a red flag of spec §g)")
        if c.readout == "kmeans" and self.previous is not None:
            perm = align_labels(kmeans, self.previous, self.n_clusters)
            aligned = np.empty_like(centres)
            aligned[perm] = centres
            kmeans, centres = perm[kmeans], aligned
        main, other = (kmeans, argmax) if c.readout == "kmeans" else (argmax, kmeans)
        model.omega.copy_(omega)
        model.y_centres.copy_(torch.as_tensor(centres, dtype=model.y_centres.dtype))
        self._set_mu_centres(model, mu, main)
        self.previous = main
        return {"argmax" if c.readout == "kmeans" else "kmeans": torch.from_numpy(other)}

    def _set_mu_centres(self, model, mu: Tensor, labels: np.ndarray) -> None:
        """The centroids shown in Explore: each cluster's mean μ (an empty cluster keeps its last one)."""
        index = torch.as_tensor(labels, device=mu.device)
        counts = torch.bincount(index, minlength=self.n_clusters)
        sums = torch.zeros_like(model.mu_centres).index_add_(0, index, mu)
        filled = counts > 0
        model.mu_centres[filled] = sums[filled] / counts[filled, None]

    # -- read-outs ---------------------------------------------------------------------------------------
    def embed(self, model, x):
        return model.dual.ae.encode(x).mu

    def assign(self, model, x):
        mu = model.dual.ae.encode(x).mu
        if int(model.stage) == STAGE_LATENT:
            q = student_t_assign(mu, model.mu_centres)
            return q, q.argmax(1)
        logits = model.spectral(mu)
        if self.config.readout == "argmax":
            q = logits.softmax(1)
            return q, q.argmax(1)
        y_tilde = logits.softmax(1) if self.config.head == "softmax" else logits.tanh()
        y = y_tilde.to("cpu", torch.float64) @ model.omega.to("cpu", torch.float64)  # (N, K), as orthonormalise
        q = student_t_assign(y.to(mu.device, mu.dtype), model.y_centres)
        return q, q.argmax(1)

    def centroids(self, model):
        return model.mu_centres.detach() if int(model.stage) != STAGE_NONE else None

    # -- state and cache -----------------------------------------------------------------------------------
    def state_dict(self):
        previous = None if self.previous is None else torch.from_numpy(self.previous)
        return {"previous": previous, "last_loss": self.last_loss, "converged": self.converged}

    def load_state_dict(self, state):
        self.previous = None if state["previous"] is None else state["previous"].numpy()
        self.last_loss, self.converged = state["last_loss"], state["converged"]

    def pretrained_part(self, model):
        return model.dual if self.config.prior == "normal" else MixturePretrained(model.dual, model.spectral, model.nu)

    def pretrain_signature(self):
        c = self.config
        signature = {"method": "dscdan", "latent_dim": c.latent_dim, "conv_layers": c.conv_layers,
                     "channel_scale": c.channel_scale, "lambda_r": c.lambda_r, "delta": c.delta,
                     "data_term": c.data_term, "beta_g": c.beta_g, "beta_l": c.beta_l, "global_pairs": c.global_pairs,
                     "gamma": c.gamma, "lr": c.lr}
        if c.prior == "normal":  # the key earlier versions wrote, so their cache entries still serve
            return signature
        return {**signature, "prior": c.prior, "cluster_prior": c.cluster_prior, "n_clusters": self.n_clusters}


# ------------------------------------------------------------------------------------------------
# Teaching: the kNN affinity and the spectral loss on a 1-D toy batch
# ------------------------------------------------------------------------------------------------

# Two groups of codes on a line (distinct gaps: no ties among neighbours); the panel follows TOY_POINTS[TOY_ANCHOR].
TOY_POINTS = (0.0, 0.35, 0.8, 1.2, 1.7, 2.1, 4.0, 4.45, 4.75, 5.3, 5.9)
TOY_ANCHOR = 3


def affinity_curves(n_neighbours: int, scale_neighbour: int = 1, kernel_scale: float = 1.0,
                    fixed_scale: float = 0.0) -> dict[str, np.ndarray | float]:
    """``knn_affinity`` on ``TOY_POINTS``: the anchor's row of W (``position``, ``weight``, (n,)), the scale
    ``s`` found, and the full Gaussian ``exp(−d²/2s²)`` against the signed offset ``d`` from the anchor
    (``offset``, ``kernel``, (121,) over [−3, 3], from ``knn_affinity`` of two points with that fixed scale)."""
    points = torch.tensor(TOY_POINTS, dtype=torch.float64)[:, None]  # (n, 1)
    k = min(n_neighbours, len(TOY_POINTS) - 1)
    weights, scale = knn_affinity(points, k, min(scale_neighbour, k), kernel_scale, fixed_scale)
    offsets = np.linspace(-3.0, 3.0, 121)
    kernel = [knn_affinity(torch.tensor([[0.0], [d]], dtype=torch.float64), 1, 1, fixed_scale=scale.item())[0][0, 1]
              for d in offsets]
    return {"position": np.asarray(TOY_POINTS), "weight": weights[TOY_ANCHOR].numpy(), "s": scale.item(),
            "offset": offsets, "kernel": torch.stack(kernel).numpy()}


def split_pair_loss(distances: np.ndarray, scale: float) -> np.ndarray:
    """``spectral_loss`` of two codes ``d`` apart (W from ``knn_affinity`` with the fixed ``scale``) whose
    embeddings are split into two clusters, ``Y = (1, −1)ᵀ`` (orthonormal: YᵀY/2 = 1); (n,)."""
    y = torch.tensor([[1.0], [-1.0]], dtype=torch.float64)
    return np.array([spectral_loss(y, knn_affinity(torch.tensor([[0.0], [float(d)]], dtype=torch.float64), 1, 1,
                                                   fixed_scale=scale)[0]).item() for d in distances])


def dscdan_panels(config) -> list[CurvePanel]:
    curves = affinity_curves(config.n_neighbours, config.scale_neighbour, config.kernel_scale, config.fixed_scale)
    anchor = TOY_POINTS[TOY_ANCHOR]
    distances = np.linspace(0.0, 4.0, 81)
    split = config.lambda_sp * split_pair_loss(distances, curves["s"])
    return [CurvePanel(f"affinity W of the code at {anchor:g}: k = {config.n_neighbours}, s = {curves['s']:.2f}",
                       "position of the other code (toy batch of 11 codes in two groups)",
                       {"exp(−d²/2s²)": (anchor + curves["offset"], curves["kernel"]),
                        "W (k nearest, symmetrised)": (curves["position"], curves["weight"])},
                       {"the code": anchor}),
            CurvePanel(f"spectral loss of two codes put in different clusters, λ_sp = {config.lambda_sp:g}",
                       "distance d between the two codes", {"λ_sp·L_SN": (distances, split)},
                       {f"s = {curves['s']:.2f}": curves["s"]})]
