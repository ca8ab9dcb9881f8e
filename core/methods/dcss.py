"""DCSS (Sadeghi & Armanfard, arXiv:2405.03590): deep clustering with pairwise self-supervision, spec ``dcss.md``.

Pretraining: the residual conv autoencoder of §b on per-pixel MSE (Adam). Initialisation: k-means on the
codes u. The trainer's clustering phase holds the method's two phases one after the other:

* **phase 1** (the first ``phase1_epochs`` epochs): fuzzy memberships ``p`` (fuzzifier m) of a detached u,
  and the cluster-specific weighted losses summed into one step per batch (§f.2):
  ``L_u = L_r + β_c L_c`` with ``L_r = Σ_ik p_ik^m ||x_i − x̂_i||²`` and ``L_c = Σ_ik p_ik^m ||u_i − μ_k||²``
  (sums, SGD lr 1e-6); the centres μ are no parameters but the fuzzy-c-means M-step on the whole data,
  every ``T1`` epochs.
* **phase 2** (the remaining epochs, ``MaxIter2 = epochs − phase1_epochs``): MNet maps u to q (softmax over
  K) and learns from pairs: ``s = p·p`` for the first ``T2`` phase-2 epochs (μ still updated after each),
  ``q·q`` after; ``L_q = c Σ_ij [1(s > ζ)(1 − q̃_i·q̃_j) + 1(s < γ) q̃_i·q̃_j]`` over all ordered pairs of the
  batch with the diagonal, q̃ = q clipped to 0/1 outside [0.01, 0.99]. Adam: AE lr 1e-5, MNet lr 1e-3.

Read-outs: ``argmax p`` up to the end of phase 1 (so the ``init`` row is k-means on the pretrained codes and
the last ``stage == 1`` row is phase 1's own assignment), ``argmax q`` in phase 2. Nothing is ever selected
by labels: the official code keeps its best-ACC checkpoints (§f.1); here every phase ends at its last epoch.

Per-epoch event scalars: ``stage`` (1 or 2); ``centre_shift`` (mean distance the centres moved, on epochs
with an M-step); ``q_space`` in phase 2 (1 when s is measured in q space); ``pairs_similar``,
``pairs_dissimilar``, ``pairs_ignored`` (unordered pairs i < j within the epoch's batches, split by ζ and γ),
``no_similar`` (samples without a similar partner j ≠ i in their batch, the paper's Figure 3) and
``confidence`` (mean max_k of p or q during training). Phase 2 counts the pairs its loss uses; phase 1
counts the p·p pairs only as a preview of where phase 2 will start. Twice, on the whole data, the risk of a
merge (spec §i.2): before phase 2's first epoch ``partnered_min``, the lowest share, over the clusters of
argmax p, of samples with a similar partner (p_i·p_j > ζ, j ≠ i: a cluster with few gets no pull and can be
split or absorbed); and before the first q·q epoch ``partnered_min`` over the clusters of argmax q with
s = q·q, and ``output_min``, the smallest MNet output's share of samples over N/K: under ``OUTPUT_WARNING``
(or a cluster under ``PARTNERED_WARNING`` partnered) the q·q masks lock that merge in. The losses come as ``loss_recon``
(L_r), ``loss_centering`` (L_c), ``loss_u_space`` (L_u) in phase 1 and ``loss_pairs`` (L_q) in phase 2.
"""
from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor, nn
from torch.nn import functional as F

from core.config import BELOW_ONE, FRACTION, Config, ConfigError, Limits, knob
from core.losses import reconstruction_loss
from core.methods.base import AutoencoderMethod, CurvePanel, encode_all
from core.models import adam, sgd

log = logging.getLogger(__name__)

EPS = 1e-10              # §f.4: added to squared distances before the negative power
PAIR_SCALE = 1e-3        # c of L_q (fixed in the code)
CLIP_LOW, CLIP_HIGH = 0.01, 0.99
OFFICIAL_SIDE = 28       # the official net is built for 28×28 inputs
MNET_WIDTH = 128
# At the switch to q·q, an MNet output holding under 10 % of N/K, or a cluster under 10 % of whose samples have a
# similar partner (no pull left; USPS from the MNIST autoencoder: an output at 17 % of N/K with none emptied
# within the epoch), is a merge the q·q masks lock in.
OUTPUT_WARNING = PARTNERED_WARNING = 0.1


# ------------------------------------------------------------------------------------------------
# Pure functions
# ------------------------------------------------------------------------------------------------

def fuzzy_memberships(u: Tensor, centroids: Tensor, m: float = 1.5) -> Tensor:
    """Fuzzy-c-means memberships ``p_ik = d_ik^(−1/(m−1)) / Σ_l d_il^(−1/(m−1))`` (§a.1).

    ``d_ik = ||u_i − μ_k||² + 1e-10``, so a code sitting on a centre gets a finite, near one-hot row. Computed
    as a softmax of ``−log d / (m − 1)``, which cannot overflow. Callers pass a detached u: p is a weight.

    u : (B, d), centroids : (K, d) → (B, K) rows summing to 1.
    """
    dist2 = (u[:, None, :] - centroids[None]).pow(2).sum(-1) + EPS  # (B, K)
    return torch.softmax(-dist2.log() / (m - 1.0), dim=1)


def fuzzy_centres(u: Tensor, p: Tensor, m: float = 1.5) -> Tensor:
    """The M-step ``μ_k = Σ_i p_ik^m u_i / Σ_i p_ik^m`` over the whole data (§a.2).

    u : (N, d), p : (N, K) → (K, d).
    """
    w = p.pow(m)  # (N, K)
    return (w.T @ u) / w.sum(0)[:, None]


def phase1_losses(x: Tensor, x_hat: Tensor, u: Tensor, centroids: Tensor, p: Tensor, m: float = 1.5,
                  beta: float = 0.1) -> dict[str, Tensor]:
    """The cluster-specific weighted losses of phase 1, summed over k (§a.2), sums not means (§f.3).

    ``L_r = Σ_k Σ_i p_ik^m ||x_i − x̂_i||²``, ``L_c = Σ_k Σ_i p_ik^m ||u_i − μ_k||²``, ``L_u = L_r + β L_c``.
    The weights ``p^m`` are taken as constants (no gradient through p).

    x, x_hat : (B, C, H, W); u : (B, d); centroids : (K, d); p : (B, K).
    Returns ``{"loss": L_u, "recon": L_r, "centering": L_c, "u_space": L_u}``.
    """
    w = p.detach().pow(m)                                          # (B, K)
    sse = (x - x_hat).pow(2).flatten(1).sum(1)                     # (B,)
    recon = (w.sum(1) * sse).sum()
    centering = (w * (u[:, None, :] - centroids[None]).pow(2).sum(-1)).sum()  # (B, K) summed
    total = recon + beta * centering
    return {"loss": total, "recon": recon, "centering": centering, "u_space": total}


def clip_confident(q: Tensor, low: float = CLIP_LOW, high: float = CLIP_HIGH) -> Tensor:
    """The code's clipping (§a.3): entries above ``high`` become 1, below ``low`` 0, with no gradient. (B, K)."""
    return torch.where(q > high, torch.ones_like(q), torch.where(q < low, torch.zeros_like(q), q))


def pair_loss(q: Tensor, similarity: Tensor, zeta: float = 0.8, gamma: float = 0.2,
              scale: float = PAIR_SCALE) -> Tensor:
    """``L_q = c Σ_ij [1(s_ij > ζ)(1 − q_i·q_j) + 1(s_ij < γ) q_i·q_j]`` over all ordered pairs, i = j included.

    q : (B, K) clipped MNet outputs; similarity : (B, B) s, used only as a mask (detached here).
    """
    s = similarity.detach()
    inner = q @ q.T  # (B, B)
    similar = (s > zeta).to(q.dtype)
    dissimilar = (s < gamma).to(q.dtype)
    return scale * (similar * (1.0 - inner) + dissimilar * inner).sum()


@torch.no_grad()
def pair_counts(similarity: Tensor, zeta: float = 0.8, gamma: float = 0.2) -> dict[str, Tensor]:
    """How the thresholds split a batch: unordered pairs i < j that are similar (s > ζ), dissimilar (s < γ)
    or ignored, and the samples with no similar partner j ≠ i (the paper's Figure 3).

    similarity : (B, B) → four 0-dim float tensors (kept on the device: no synchronisation per batch).
    """
    n = len(similarity)
    off_diagonal = ~torch.eye(n, dtype=torch.bool, device=similarity.device)  # (B, B)
    similar = (similarity > zeta) & off_diagonal
    dissimilar = (similarity < gamma) & off_diagonal
    n_similar, n_dissimilar = similar.sum() / 2, dissimilar.sum() / 2
    return {"pairs_similar": n_similar.float(), "pairs_dissimilar": n_dissimilar.float(),
            "pairs_ignored": (n * (n - 1) / 2 - n_similar - n_dissimilar).float(),
            "no_similar": (~similar.any(1)).sum().float()}


@torch.no_grad()
def partner_shares(a: Tensor, labels: Tensor, n_clusters: int, zeta: float = 0.8, chunk: int = 2048) -> Tensor:
    """Per cluster, the share of its samples with a similar partner j ≠ i anywhere in the data, s_ij = a_i·a_j > ζ
    (a = p for s = p·p, q for s = q·q). Rows of s are formed ``chunk`` at a time: never the whole N × N.

    a : (N, K), labels : (N,) → (n_clusters,), NaN for an empty cluster.
    """
    n = len(a)
    partnered = torch.empty(n, dtype=torch.bool, device=a.device)
    for start in range(0, n, chunk):
        s = a[start:start + chunk] @ a.T  # (c, N)
        rows = torch.arange(len(s), device=a.device)
        s[rows, rows + start] = 0.0       # j ≠ i
        partnered[start:start + chunk] = (s > zeta).any(1)
    members = torch.bincount(labels, minlength=n_clusters).double()
    with_partner = torch.bincount(labels[partnered], minlength=n_clusters).double()
    return with_partner / members


def output_shares(q: Tensor) -> Tensor:
    """Each output's share of argmax q relative to an even split N/K: 1 balanced, 0 empty. q : (N, K) → (K,)."""
    n, k = q.shape
    return torch.bincount(q.argmax(1), minlength=k).double() * k / n


# ------------------------------------------------------------------------------------------------
# Networks (§b)
# ------------------------------------------------------------------------------------------------

class Bottleneck(nn.Module):
    """ResNet bottleneck: 1×1 c→64, 3×3 64→64, 1×1 64→c (no biases, BN after each), identity added, ReLU."""

    def __init__(self, channels: int, width: int = 64):
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(channels, width, 1, bias=False), nn.BatchNorm2d(width), nn.ReLU(),
            nn.Conv2d(width, width, 3, padding=1, bias=False), nn.BatchNorm2d(width), nn.ReLU(),
            nn.Conv2d(width, channels, 1, bias=False), nn.BatchNorm2d(channels))

    def forward(self, x: Tensor) -> Tensor:
        return F.relu(self.body(x) + x)


def _stage_sizes(side: int) -> tuple[int, int, int, int]:
    """Spatial sizes after the three stride-2 convs of the encoder, and the third conv's padding.

    28 → 14, 7, 3 (padding 0) as in the official net; sides too small for a 3×3 "valid" conv use padding 1.
    """
    first = (side + 1) // 2            # 5×5, stride 2, padding 2
    second = (first + 1) // 2          # same again
    pad = 0 if second >= 3 else 1
    third = (second + 2 * pad - 3) // 2 + 1
    return first, second, third, pad


class DCSSAutoencoder(nn.Module):
    """The official residual conv autoencoder (§b), with its sizes recomputed for other image sides.

    With ``resize`` (the spec's USPS adaptation) every input is bilinearly resized to 28×28 first and
    the decoder returns 28×28 images: the reconstruction target is ``prepare(x)``. Without it the same
    layers run on the native size (the decoder output is cropped to it when the side is not a multiple of 4).
    """

    def __init__(self, input_shape: tuple[int, int, int], latent_dim: int = 10, resize: bool = True):
        super().__init__()
        channels, height, width = input_shape
        self.work_size = (OFFICIAL_SIDE, OFFICIAL_SIDE) if resize else (height, width)
        if min(self.work_size) < 4:
            raise ValueError(f"the DCSS autoencoder needs images of side >= 4, got {height}x{width}")
        (_, h2, h3, ph), (_, w2, w3, pw) = (_stage_sizes(s) for s in self.work_size)
        self.encoder = nn.Sequential(
            nn.Conv2d(channels, 32, 5, stride=2, padding=2, bias=False), nn.BatchNorm2d(32), nn.ReLU(),
            Bottleneck(32),
            nn.Conv2d(32, 64, 5, stride=2, padding=2), nn.ReLU(),
            Bottleneck(64),
            nn.Conv2d(64, 128, 3, stride=2, padding=(ph, pw)), nn.ReLU(),
            Bottleneck(128),
            nn.Flatten(), nn.Linear(128 * h3 * w3, latent_dim))
        # output_padding brings the first transposed conv back to the encoder's second size exactly
        extra = (h2 - (2 * h3 + 1 - 2 * ph), w2 - (2 * w3 + 1 - 2 * pw))
        self.decoder = nn.Sequential(
            nn.Linear(latent_dim, 128 * h3 * w3), nn.ReLU(), nn.Unflatten(1, (128, h3, w3)),
            nn.ConvTranspose2d(128, 64, 3, stride=2, padding=(ph, pw), output_padding=extra), nn.ReLU(),
            nn.ConvTranspose2d(64, 32, 5, stride=2, padding=1), nn.ReLU(),
            nn.ConvTranspose2d(32, channels, 4, stride=2, padding=2))
        for module in self.modules():
            # The official init hook matches Conv2d and Linear only; ConvTranspose2d keeps PyTorch's default.
            if isinstance(module, (nn.Conv2d, nn.Linear)):
                nn.init.xavier_uniform_(module.weight)
                if module.bias is not None:
                    nn.init.zeros_(module.bias)

    def prepare(self, x: Tensor) -> Tensor:
        """The network's input and reconstruction target: x resized to the working size. (B, C, h, w)."""
        if tuple(x.shape[-2:]) == self.work_size:
            return x
        return F.interpolate(x, size=self.work_size, mode="bilinear", align_corners=False)

    def encode(self, x: Tensor) -> Tensor:
        return self.encoder(self.prepare(x))  # (B, d)

    def decode(self, u: Tensor) -> Tensor:
        height, width = self.work_size
        return self.decoder(u)[:, :, :height, :width]  # (B, C, h, w); 4·⌈side/4⌉ before the crop


# The official AutoEncoder's state-dict names (Codes/Network.py of Armanfard-Lab/DCSS) → ours, prefix by
# prefix: its shipped MNIST autoencoder then loads strictly and gives bitwise-equal codes (spec §i.1).
# layer4–layer6 are residual stacks the official decoder declares but never calls (§b).
_OFFICIAL_BOTTLENECK = {"conv1": "body.0", "bn1": "body.1", "conv2": "body.3", "bn2": "body.4",
                        "conv3": "body.6", "bn3": "body.7"}
OFFICIAL_NAMES: dict[str, str | None] = {
    "conv1": "encoder.0", "bn1": "encoder.1", "fconv1": "encoder.4", "fconv2": "encoder.7", "fc1": "encoder.11",
    "fc2": "decoder.0", "deconv1": "decoder.3", "deconv2": "decoder.5", "deconv3": "decoder.7",
    **{f"{stack}.0.{theirs}": f"{block}.{ours}" for stack, block in
       (("layer1", "encoder.3"), ("layer2", "encoder.6"), ("layer3", "encoder.9"))
       for theirs, ours in _OFFICIAL_BOTTLENECK.items()},
    "layer4": None, "layer5": None, "layer6": None}


class MNet(nn.Module):
    """u → q: Linear d→128 → BN → ReLU → Linear 128→128 → BN → ReLU → Linear 128→K → softmax (§b)."""

    def __init__(self, latent_dim: int, n_clusters: int, width: int = MNET_WIDTH):
        super().__init__()
        self.layers = nn.Sequential(
            nn.Linear(latent_dim, width), nn.BatchNorm1d(width), nn.ReLU(),
            nn.Linear(width, width), nn.BatchNorm1d(width), nn.ReLU(),
            nn.Linear(width, n_clusters))
        for module in self.layers:
            if isinstance(module, nn.Linear):
                nn.init.xavier_uniform_(module.weight)
                nn.init.zeros_(module.bias)

    def forward(self, u: Tensor) -> Tensor:
        return torch.softmax(self.layers(u), dim=1)  # (B, K)


class DCSSModel(nn.Module):
    """The autoencoder, MNet and the (K, d) centres μ, a buffer: μ is set by k-means and M-steps, never by SGD."""

    def __init__(self, autoencoder: DCSSAutoencoder, n_clusters: int, latent_dim: int):
        super().__init__()
        self.ae = autoencoder
        self.mnet = MNet(latent_dim, n_clusters)
        self.register_buffer("centroids", torch.zeros(n_clusters, latent_dim))
        self.register_buffer("initialised", torch.tensor(False))


class StagedOptimizer:
    """One optimiser per DCSS phase behind the trainer's single one; ``stage()`` says which one steps.

    Phase 1 is SGD with momentum on the autoencoder (§c.3); phase 2 is Adam with the autoencoder and MNet
    at their own learning rates (§c.4; one Adam with two parameter groups is the code's two Adams).
    """

    def __init__(self, optimizers: dict[int, torch.optim.Optimizer], stage: Callable[[], int]):
        self.optimizers = optimizers
        self.stage = stage

    def zero_grad(self, set_to_none: bool = True) -> None:
        for optimizer in self.optimizers.values():
            optimizer.zero_grad(set_to_none=set_to_none)

    def step(self) -> None:
        self.optimizers[self.stage()].step()

    def state_dict(self) -> dict:
        return {stage: optimizer.state_dict() for stage, optimizer in self.optimizers.items()}

    def load_state_dict(self, state: dict) -> None:
        for stage, optimizer in self.optimizers.items():
            optimizer.load_state_dict(state[stage])


# ------------------------------------------------------------------------------------------------
# The method
# ------------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class DCSSConfig(Config):
    zeta: float = knob(0.8, symbol="ζ", min=0.5, max=0.99, step=0.01,
                       help="pairs with similarity above ζ are pulled together (q_i·q_j → 1)", limits=FRACTION)
    gamma: float = knob(0.2, symbol="γ", min=0.0, max=0.5, step=0.01,
                        help="pairs with similarity below γ are pushed apart (q_i·q_j → 0); between γ and ζ ignored", limits=FRACTION)
    beta: float = knob(0.1, symbol="β", min=0.0, max=1.0, step=0.01,
                       help="centering weight β_c in phase 1: L_u = L_r + β_c·L_c pulls codes to their centres")
    m: float = knob(1.5, symbol="m", min=1.1, max=3.0, step=0.1,
                    help="fuzzifier of the memberships p: near 1 almost hard, larger softer", limits=Limits(1, None, low_open=True))
    update_period: int = knob(2, symbol="T₁", min=1, max=10, step=1,
                              help="phase-1 epochs between closed-form centre updates on the whole data")
    switch_epoch: int = knob(5, symbol="T₂", min=0, max=50, step=1,
                             help="phase-2 epochs measuring similarity as p·p in u space before switching to q·q")
    phase1_epochs: int = knob(200, symbol="MaxIter₁", min=0, max=200, step=1,
                              help="clustering epochs of phase 1; the rest of `epochs` is phase 2 (MaxIter₂)")
    phase1_lr: float = knob(1e-6, symbol="lr₁", min=1e-8, max=1e-4, log=True,
                            help="SGD learning rate of phase 1 (the losses are sums over batch and pixels)")
    phase1_momentum: float = knob(0.9, min=0.0, max=0.99, step=0.01, help="SGD momentum of phase 1", limits=BELOW_ONE)
    ae_lr: float = knob(1e-5, symbol="lr_AE", min=1e-7, max=1e-3, log=True,
                        help="Adam learning rate of the autoencoder in phase 2")
    mnet_lr: float = knob(1e-3, symbol="lr_M", min=1e-5, max=1e-2, log=True,
                          help="Adam learning rate of MNet in phase 2")
    clip_q: bool = knob(True, help="clip q to 0/1 outside [0.01, 0.99] before L_q as the official code does "
                                   "(those entries get no gradient, so an output that falls below 0.01 stays dead)")
    resize: bool = knob(True, help="resize images to 28×28 for the official net (off: the same layers at the "
                                   "native size, cheaper on small images)")
    latent_dim: int = knob(10, symbol="d", min=2, max=64, step=1, help="size of the u space (MNet's input)")
    pretrain_lr: float = knob(1e-3, min=1e-4, max=1e-2, log=True, help="Adam learning rate of autoencoder pretraining")
    kmeans_restarts: int = knob(10, min=1, max=50, step=1,
                                help="k-means restarts for the initial centres (scikit-learn's old default, 10)")

    def __post_init__(self):
        super().__post_init__()
        if not self.gamma < self.zeta:
            raise ConfigError(f"γ (gamma={self.gamma}) must be below ζ (zeta={self.zeta})")


PAPER = {"batch_size": 500, "pretrain_epochs": 200, "epochs": 220, "phase1_epochs": 200, "switch_epoch": 5,
         "resize": True}


class DCSS(AutoencoderMethod):
    name = "dcss"
    title = "DCSS"
    Config = DCSSConfig
    # The spec (§e) could not recover the paper's results table: nothing is shown until it is copied from
    # arXiv:2405.03590's main comparison table. Not filled from memory on purpose.
    published = {}
    diagnostics = {"pairs per epoch (similar > ζ, dissimilar < γ)": ("pairs_similar", "pairs_dissimilar",
                                                                   "pairs_ignored"),
                   "samples with no similar partner (Figure 3)": ("no_similar",),
                   "mean largest membership": ("confidence",), "centre shift": ("centre_shift",),
                   "merge risk at phase 2's start and at the switch to q·q": ("partnered_min", "output_min")}
    weight_layouts = {"the official DCSS code (Armanfard-Lab/DCSS)": OFFICIAL_NAMES}
    objective = (r"\begin{gathered}p_{ik}=\frac{d_{ik}^{-1/(m-1)}}{\sum_l d_{il}^{-1/(m-1)}},\quad "
                 r"d_{ik}=\lVert u_i-\mu_k\rVert^2\\"
                 r"L_u=\sum_{i,k}p_{ik}^m\big(\lVert x_i-\hat x_i\rVert^2+\beta\lVert u_i-\mu_k\rVert^2\big)\\"
                 r"L_q=c\sum_{i,j}\big[\mathbb 1(s_{ij}>\zeta)(1-q_i^\top q_j)"
                 r"+\mathbb 1(s_{ij}<\gamma)\,q_i^\top q_j\big]\\"
                 r"s_{ij}=p_i^\top p_j\ (q_i^\top q_j\text{ after }T_2\text{ epochs})\end{gathered}")
    symbols = {"m": "m", r"\beta": "beta", r"\zeta": "zeta", r"\gamma": "gamma", "T_2": "switch_epoch"}
    explanation = (
        "DCSS starts from an autoencoder and k-means, then works in two phases. Phase 1 gives each code a fuzzy "
        "membership p in every cluster (fuzzifier m: larger m, fuzzier; left panel) and trains the autoencoder "
        "to rebuild and to gather codes around the centres, each term weighted by p^m. Phase 2 trains a small "
        "network MNet on pairs: a pair whose similarity s = p_i·p_j is above ζ must land in the same cluster, "
        "one below γ in different ones, and pairs between the two are ignored (middle and right panels). While "
        "it trains, the diagnostics count the pairs in each band and the samples with no similar partner: if "
        "m is large or ζ high, few pairs pass ζ and phase 2 has little to learn from.")
    demo = ("Fast demo on digits (seed 0, `bench/teaching.py`): ACC 0.795, NMI 0.782, against 0.792 for k-means on "
            "the pixels: it draws level with the pixels; about two minutes.")

    def __init__(self, config, n_clusters, seed=0):
        super().__init__(config, n_clusters, seed)
        self.epochs_done = 0     # clustering-phase epochs finished (phase 1 and 2 together)
        self.stage = 1           # DCSS phase of the running (or last) epoch; decides the read-out
        self.pair_totals: dict[str, Tensor] = {}  # pair counts and summed confidence of the running epoch
        self.samples_seen = 0

    @classmethod
    def dataset_defaults(cls, dataset):
        return dict(PAPER)

    @classmethod
    def presets(cls, dataset):
        digits = dataset == "digits"
        small_images = dataset in ("digits", "usps")
        return {"paper": dict(PAPER),
                # a demo budget: digits in about a minute on one CPU thread (small batches: more steps)
                "fast": {"batch_size": 64 if digits else 256, "pretrain_epochs": 12 if digits else 8,
                         "epochs": 18 if digits else 10, "phase1_epochs": 8 if digits else 4, "switch_epoch": 3,
                         "resize": False, "kmeans_restarts": 5},
                # the benchmark's CPU budget, ≤ 20 minutes a seed on one CPU thread, with the official 28×28 net
                # everywhere (§b resizes USPS: at its native 16×16 the third stage shrinks to 1×1): the clustering
                # schedule of the imported MNIST run (4 + 6 epochs, T₂ = 2, spec §i.2); USPS (9,298 images, about
                # MNIST-test's cost an epoch once resized) and digits pretrain 50 epochs, MNIST-test 20
                "cpu": {"batch_size": 256, "pretrain_epochs": 50 if small_images else 20,
                        "epochs": 10, "phase1_epochs": 4, "switch_epoch": 2, "resize": True}}

    @classmethod
    def loss_curves(cls, config):
        return dcss_panels(config)

    @classmethod
    def ablations(cls) -> dict[str, dict]:
        """Columns for ``bench/ablation.py``: ``epochs`` 0 ends the run at its init row, i.e. k-means on the
        very autoencoder DCSS starts from (cached, shared with the full run of the same seed)."""
        return {"AE + k-means (same autoencoder)": {"epochs": 0}, "DCSS": {}}

    @classmethod
    def warnings(cls, metrics):
        if "output_min" not in metrics or not metrics["output_min"].notna().any():
            return []
        switch = metrics[metrics["output_min"].notna()].iloc[-1]
        reasons = []
        if switch["output_min"] < OUTPUT_WARNING:
            reasons.append(f"the smallest MNet output holds {switch['output_min']:.0%} of an even share N/K")
        if switch.get("partnered_min", 1.0) < PARTNERED_WARNING:
            reasons.append(f"in one cluster only {switch['partnered_min']:.0%} of the samples have a similar partner")
        if not reasons:
            return []
        return [f"Merge warning: at the switch to q·q similarity (epoch {int(switch['epoch'])}) "
                f"{' and '.join(reasons)} (under {OUTPUT_WARNING:.0%}). From here the q·q masks lock that merge "
                "in. A better-pretrained autoencoder, or a later switch (T₂: more p·p epochs, which undo such a "
                "passing merge from a good start), avoids it."]

    # -- model and optimisation ------------------------------------------------------------------------
    def build(self, input_shape):
        c = self.config
        return DCSSModel(DCSSAutoencoder(input_shape, c.latent_dim, c.resize), self.n_clusters, c.latent_dim)

    def optimizer(self, model, phase):
        c = self.config
        if phase == "pretrain":
            return adam(model.ae.parameters(), lr=c.pretrain_lr)
        phase1 = sgd(model.ae.parameters(), lr=c.phase1_lr, momentum=c.phase1_momentum)
        phase2 = adam([{"params": model.ae.parameters(), "lr": c.ae_lr},
                       {"params": model.mnet.parameters(), "lr": c.mnet_lr}], lr=c.mnet_lr)
        return StagedOptimizer({1: phase1, 2: phase2}, lambda: self.stage)

    def pretrain_step(self, model, batch):
        target = model.ae.prepare(batch.x)
        loss = reconstruction_loss(target, model.ae.decode(model.ae.encoder(target)))
        return {"loss": loss, "recon": loss}

    # -- the two phases --------------------------------------------------------------------------------
    def _phase2_epoch(self) -> int:
        return self.epochs_done - self.config.phase1_epochs

    def on_epoch_start(self, model, phase, epoch, x):
        if phase != "cluster":
            return {}
        c = self.config
        self.stage = 1 if self.epochs_done < c.phase1_epochs else 2
        if self._phase2_epoch() == 0:
            log.info("DCSS phase 2 (MNet) starts at clustering epoch %d", self.epochs_done + 1)
        self.pair_totals = {}
        self.samples_seen = 0
        extras = {"stage": float(self.stage)}
        if self.stage == 1:
            # the code updates at T mod T1 = 1 (epochs 1, 3, 5, … for T1 = 2); T1 = 1 updates every epoch
            update = self.epochs_done % c.update_period == 1 % c.update_period
        else:
            # the code updates after each phase-2 epoch T < T2; done here, before epoch T + 1, where the
            # trainer hands over the data (the same μ trains the next epoch; a resumed run needs no extra state)
            update = 1 <= self._phase2_epoch() <= c.switch_epoch
            extras["q_space"] = float(self._phase2_epoch() >= c.switch_epoch)
        if update:
            extras["centre_shift"] = self.update_centres(model, x)
        # NaN on the epochs that do not measure the merge risk, so every row of the clustering phase has its columns
        extras.update(partnered_min=float("nan"), output_min=float("nan"))
        if self.stage == 2 and self._phase2_epoch() in (0, c.switch_epoch):
            extras.update(self.merge_risk(model, x, q_space=self._phase2_epoch() == c.switch_epoch))
        return extras

    def training_step(self, model, batch, phase):
        c = self.config
        target = model.ae.prepare(batch.x)
        u = model.ae.encoder(target)  # (B, d), train mode as in the code (§f.7)
        p = fuzzy_memberships(u.detach(), model.centroids, c.m)  # (B, K)
        if self.stage == 1:
            # the pair split is only watched here: it previews the p·p pairs phase 2 will start from
            self._tally(p @ p.T, p)
            return phase1_losses(target, model.ae.decode(u), u, model.centroids, p, c.m, c.beta)
        q = model.mnet(u)  # (B, K), its gradient reaches the encoder
        in_q_space = self._phase2_epoch() >= c.switch_epoch
        similarity = (q @ q.T if in_q_space else p @ p.T).detach()  # (B, B), a mask only
        loss = pair_loss(clip_confident(q) if c.clip_q else q, similarity, c.zeta, c.gamma)
        self._tally(similarity, q)
        return {"loss": loss, "pairs": loss}

    @torch.no_grad()
    def _tally(self, similarity: Tensor, assignment: Tensor) -> None:
        """Add a batch's pair counts and the sum of its max_k assignment to the running epoch's totals."""
        values = {**pair_counts(similarity, self.config.zeta, self.config.gamma),
                  "confidence": assignment.max(1).values.sum()}
        for name, value in values.items():
            self.pair_totals[name] = self.pair_totals.get(name, 0.0) + value
        self.samples_seen += len(assignment)

    def on_epoch_end(self, model, phase, epoch):
        if phase != "cluster":
            return {}
        extras = {}
        if self.samples_seen:
            extras = {name: float(value) for name, value in self.pair_totals.items()}
            extras["confidence"] /= self.samples_seen
        self.epochs_done += 1
        return extras

    @torch.no_grad()
    def update_centres(self, model: nn.Module, x: Tensor) -> float:
        """The fuzzy-c-means M-step on the whole data, AE in eval mode; returns the mean centre shift."""
        u = encode_all(self, model, x)  # (N, d)
        p = fuzzy_memberships(u, model.centroids, self.config.m)
        centres = fuzzy_centres(u, p, self.config.m)
        shift = (centres - model.centroids).norm(dim=1).mean().item()
        model.centroids.copy_(centres)
        return shift

    @torch.no_grad()
    def merge_risk(self, model: nn.Module, x: Tensor, q_space: bool) -> dict[str, float]:
        """The per-cluster diagnostic of phase 2 on the whole data, in eval mode (see the module docstring):
        ``partnered_min`` and, in q space, ``output_min``; the per-cluster values go to the log."""
        was_training = model.training
        model.eval()
        u = encode_all(self, model, x)  # (N, d)
        a = model.mnet(u) if q_space else fuzzy_memberships(u, model.centroids, self.config.m)  # (N, K)
        model.train(was_training)
        shares = partner_shares(a, a.argmax(1), self.n_clusters, self.config.zeta)
        space = "q·q" if q_space else "p·p"
        log.info("DCSS %s: share of each cluster's samples with a similar partner %s", space,
                 " ".join(f"{v:.2f}" for v in shares.tolist()))
        risk = {"partnered_min": float(shares.nan_to_num(0.0).min())}
        if q_space:
            outputs = output_shares(a)
            log.info("DCSS q·q: MNet outputs' shares of N/K %s", " ".join(f"{v:.2f}" for v in outputs.tolist()))
            risk["output_min"] = float(outputs.min())
        return risk

    # -- read-outs -------------------------------------------------------------------------------------
    def assign(self, model, x):
        u = model.ae.encode(x)
        q = fuzzy_memberships(u, model.centroids, self.config.m) if self.stage == 1 else model.mnet(u)
        return q, q.argmax(1)

    def centroids(self, model):
        return model.centroids if bool(model.initialised) else None

    def state_dict(self):
        return {"epochs_done": self.epochs_done, "stage": self.stage}

    def load_state_dict(self, state):
        self.epochs_done, self.stage = state["epochs_done"], state["stage"]

    def pretrain_signature(self):
        c = self.config
        return {"autoencoder": "dcss-resnet", "latent_dim": c.latent_dim, "pretrain_lr": c.pretrain_lr,
                "resize": c.resize}


# ------------------------------------------------------------------------------------------------
# Teaching: memberships and the pair-selection band on a 1-D toy (codes on a line, centres at −1 and +1)
# ------------------------------------------------------------------------------------------------

TOY_CENTRES = (-1.0, 1.0)
TOY_PARTNER = -0.5  # the code whose pairs the middle panel follows


def membership_curves(m: float, codes: np.ndarray) -> dict[str, np.ndarray]:
    """``fuzzy_memberships`` of 1-D codes to the two toy centres: ``p`` (n, 2) and the loss weight ``p^m``."""
    p = fuzzy_memberships(torch.as_tensor(codes, dtype=torch.float64)[:, None],
                          torch.tensor(TOY_CENTRES, dtype=torch.float64)[:, None], m)
    return {"u": np.asarray(codes, dtype=float), "p": p.numpy(), "weight": p.pow(m).numpy()}


def pair_band(similarities: np.ndarray, zeta: float, gamma: float) -> dict[str, np.ndarray]:
    """How ``pair_counts`` classes one pair of similarity s, for each s: 1/0 per band, (n,) each."""
    bands = {"similar": [], "dissimilar": [], "ignored": []}
    for s in similarities:
        counts = pair_counts(torch.tensor([[1.0, float(s)], [float(s), 1.0]]), zeta, gamma)
        for band in bands:
            bands[band].append(counts[f"pairs_{band}"].item())
    return {"s": np.asarray(similarities, dtype=float), **{band: np.array(v) for band, v in bands.items()}}


def dcss_panels(config) -> list[CurvePanel]:
    codes = np.linspace(-3.0, 3.0, 121)
    member = membership_curves(config.m, codes)
    partner = membership_curves(config.m, np.array([TOY_PARTNER]))["p"][0]  # (2,)
    similarity = member["p"] @ partner  # (n,) s of the partner with each code
    band = pair_band(np.linspace(0.0, 1.0, 101), config.zeta, config.gamma)
    marks = {"μ₁": TOY_CENTRES[0], "μ₂": TOY_CENTRES[1]}
    flat = np.ones_like(codes)
    return [CurvePanel(f"fuzzy membership, m = {config.m:g}", "code u (μ₁ = −1, μ₂ = +1)",
                       {"p to μ₁": (codes, member["p"][:, 0]), "weight p^m": (codes, member["weight"][:, 0])}, marks),
            CurvePanel(f"similarity to the code at u = {TOY_PARTNER:g}", "the other code u",
                       {"s = p·p": (codes, similarity), f"ζ = {config.zeta:g}": (codes, config.zeta * flat),
                        f"γ = {config.gamma:g}": (codes, config.gamma * flat)}, marks),
            CurvePanel("which pairs the loss uses", "similarity s of a pair",
                       {"similar (pulled together)": (band["s"], band["similar"]),
                        "dissimilar (pushed apart)": (band["s"], band["dissimilar"]),
                        "ignored": (band["s"], band["ignored"])},
                       {"γ": config.gamma, "ζ": config.zeta})]
