"""SeCu (Qian, ICCV 2023): stable cluster discrimination, spec ``secu.md`` (rebuilt from the official code).

One stage, no autoencoder: an encoder trained from scratch on two augmented views, with several
clustering heads of cosine centres (K = C, 2C, …). Per batch and head:

* assignment (no gradient) ``y = argmax_k(s_ik + ρ_k)``, ``s = ½(z¹ + z²)ᵀ W̄``, with online dual ascent
  ``ρ ← max(0, ρ + η(γ/K − n_k/|B|))`` for the lower bound γN/K on every cluster's size (§a.3), or
  the greedy global-entropy variant with weight α (§a.4);
* centre loss ``L_c``: a cross-entropy in which only the *assigned* centre gets gradient and the
  features get none (two gradient stops, §a.2);
* representation loss ``L_x``: each view against the other view's soft prediction mixed with τ times
  the previous epoch's label, against the centres as they were at the start of the epoch (§a.5).

``L = (L_x + L_c) / 2H`` summed over heads; epoch 0 trains the centres only (encoder lr 0, §c), then a
linear warm-up and a cosine decay of the encoder lr. The K = C head is evaluated by ``argmax zᵀw̄``
without the duals (§a.7).

Two recipes (§b, §g): the default is the small-scale one for 1-channel images (a 4-conv CNN, random
affine + noise views, no flips); the ``paper-resnet18`` preset is the paper's CIFAR recipe (ResNet-18
with a CIFAR stem, asymmetric crop/colour/blur/solarise views), meant for RGB data on a GPU.

Departures from §g, measured: batch 32 instead of 256 (on a CPU time goes per sample, and at equal epochs
more steps win); on 28×28 images a 2×2 max-pool after the first convolution (MNIST-test, 40 epochs, seeds
0 and 1: ACC 0.828 and 0.633 without it, 0.969 and 0.944 with it); and the readout's BN statistics are
recomputed on clean images after every epoch (the EMA over augmented views has not converged in short
runs; in long runs the two readouts agree within 0.01).

Design-card sliders (§g): λ is the temperature (here split as λₓ and λ_w), η the dual step, the
threshold is γ, α the entropy weight (shown as α/N), and β has no counterpart: its slot is τ.

Per-epoch event scalars (``on_epoch_end``, head K = C): ``train_min_size`` / ``train_max_size`` of
the online assignments made during the epoch (with the duals; ``min_size`` / ``max_size`` of the
trainer are the evaluation readout without them), ``dual_mean`` / ``dual_max`` of ρ at the epoch's end
(size constraint), ``size_entropy`` H(q)/log K of the label memory, and ``encoder_lr`` at the end.
"""
from __future__ import annotations

import logging
import math
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor, nn
from torch.nn import functional as F

from core.config import BELOW_ONE, FRACTION, NON_NEGATIVE, Config, Limits, knob
from core.data import small_builtin
from core.methods.base import CurvePanel, Method
from core.models import recalibrate_batch_norm

log = logging.getLogger(__name__)

# §f.4: γN/K must not exceed the smallest class, γ ≤ K·min share: USPS has 7.6 % sixes, MNIST's test split
# 8.92 % fives (γ = 0.9 would ask for 9 %)
GAMMA = {"usps": 0.7, "mnist-test": 0.85}
ERASE_SIDE = 0.25       # §g: a 4×4 patch on 16×16 images, a quarter of the side
RESNET_POOL_SIDE = 64   # §b: the STL-10 network adds a max-pool to the stem for large inputs
EARLY_POOL_SIDE = 24     # the small CNN pools after its first convolution from this side on (28×28 data)
CALIBRATION_SIZE = 2048  # clean images whose exact BN statistics the readout uses


# ------------------------------------------------------------------------------------------------
# Pure functions: losses, assignments, dual and schedule
# ------------------------------------------------------------------------------------------------

def centre_loss(z: Tensor, centres: Tensor, labels: Tensor, temperature: float) -> Tensor:
    """SeCu's centre loss ``ℓ_SeCu`` (§a.2), averaged over the batch.

    The forward value is the cross-entropy of ``zᵀw̄ / λ_w`` with the assigned labels. Its gradient
    reaches only the assigned centre of each instance: ``z`` is detached and so is every logit
    except ``S_{i, y_i}``; a centre without members in the batch gets no gradient at all.

    z : (B, d) unit embeddings; centres : (d, K) unit columns; labels : (B,) int64. Returns a scalar.
    """
    logits = z.detach() @ centres  # (B, K)
    target = F.one_hot(labels, logits.shape[1]).bool()  # (B, K)
    logits = torch.where(target, logits, logits.detach())
    return F.cross_entropy(logits / temperature, labels)


def soft_targets(logits_other: Tensor, labels: Tensor, tau: float) -> Tensor:
    """``t = (1 − τ) softmax(u_other) + τ e_y`` without gradient (§a.5); (B, K), (B,) → (B, K)."""
    probs = F.softmax(logits_other.detach(), dim=1)
    return (1.0 - tau) * probs + tau * F.one_hot(labels, probs.shape[1]).to(probs.dtype)


def representation_loss(logits_1: Tensor, logits_2: Tensor, labels: Tensor, tau: float) -> Tensor:
    """``L_x`` of one head (§a.5): each view's cross-entropy against the swapped soft target.

    logits_v : (B, K) ``z⁽ᵛ⁾ᵀ W̃ / λₓ`` against the epoch's centre snapshot; labels : (B,) the memory's
    labels read before this batch's update. Returns the sum over the two views of the batch means.
    """
    target_1 = soft_targets(logits_2, labels, tau)
    target_2 = soft_targets(logits_1, labels, tau)
    return (-(target_1 * F.log_softmax(logits_1, dim=1)).sum(1).mean()
            - (target_2 * F.log_softmax(logits_2, dim=1)).sum(1).mean())


def size_assign(scores: Tensor, duals: Tensor) -> Tensor:
    """``y_i = argmax_k (s_ik + ρ_k)`` (§a.3); scores (B, K), duals (K,) → labels (B,)."""
    return (scores + duals).argmax(1)


def dual_update(duals: Tensor, labels: Tensor, gamma: float, eta: float) -> Tensor:
    """One step of dual ascent on the size lower bound (§a.3): ``ρ + η(γ/K − n_k/|B|)``.

    Clipped at 0 when γ < 1 (an inequality); with γ = 1 the bound is an equality and ρ is free.
    duals : (K,); labels : (B,) this batch's fresh assignments. Returns the new (K,) duals.
    """
    k = len(duals)
    fractions = torch.bincount(labels, minlength=k).to(duals.dtype) / len(labels)  # (K,)
    new = duals + eta * (gamma / k - fractions)
    return new.clamp_min(0.0) if gamma < 1 else new


def phi(u: Tensor) -> Tensor:
    """``u log u`` with ``φ(0) = 0`` (and 0 for round-off below 0)."""
    return torch.where(u > 0, u * u.clamp_min(torch.finfo(u.dtype).tiny).log(), torch.zeros_like(u))


def entropy_assign(scores: Tensor, counts: Tensor, alpha: float, previous: Tensor | None) -> Tensor:
    """Greedy assignment for ``max Σ s + α H(q)`` against the pre-batch counts (§a.4).

    ``previous`` None is epoch 0: with no counts yet plain argmax; otherwise ``q = n/(Σn + 1)`` and only
    the cost of adding to k. Later epochs move instance i from its memory label c to k at the cost
    ``[φ(q_c − 1/N) − φ(q_c)] + [φ(q_k + 1/N) − φ(q_k)]`` (0 for k = c), ``q = n/N``.

    scores : (B, K); counts : (K,) float label counts; previous : (B,) memory labels. Returns (B,).
    """
    total = counts.sum()
    if previous is None:
        if total == 0:
            return scores.argmax(1)
        q = counts / (total + 1)
        add = phi(q + 1 / (total + 1)) - phi(q)  # (K,)
        return (-scores + alpha * add).argmin(1)
    q = counts / total
    add = phi(q + 1 / total) - phi(q)  # (K,)
    remove = phi(q[previous] - 1 / total) - phi(q[previous])  # (B,)
    cost = (remove[:, None] + add).scatter(1, previous[:, None], 0.0)  # (B, K)
    return (-scores + alpha * cost).argmin(1)


def encoder_lr(step: int, steps_per_epoch: int, epochs: int, warmup_epochs: int, base: float) -> float:
    """The official schedule (§c): 0 in epoch 0, linear over ``warmup_epochs``, then cosine to 0 at the end."""
    epoch = step // steps_per_epoch
    if epoch == 0:
        return 0.0
    warm_end = (warmup_epochs + 1) * steps_per_epoch
    if epoch <= warmup_epochs:
        return base * max(1, step - steps_per_epoch) / (warm_end - steps_per_epoch)
    span = max(epochs * steps_per_epoch - warm_end, 1)
    return base * (1 + math.cos(math.pi * min(step - warm_end, span) / span)) / 2


# ------------------------------------------------------------------------------------------------
# Views: augmentations of a whole batch on its device, from torch's global RNG
# ------------------------------------------------------------------------------------------------

def _uniform(n: int, low: float, high: float, like: Tensor) -> Tensor:
    return low + (high - low) * torch.rand(n, device=like.device, dtype=like.dtype)


def _affine(x: Tensor, linear: Tensor, offset: Tensor, padding: str) -> Tensor:
    """Resample x (B, C, H, W) at ``linear · p + offset`` for every output position p in [−1, 1]²."""
    theta = torch.cat([linear, offset[:, :, None]], 2)  # (B, 2, 3)
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode=padding, align_corners=False)


def random_erase(x: Tensor, prob: float, side: float = ERASE_SIDE) -> Tensor:
    """Zero a random square of ``side`` × the image side in each image with probability ``prob``."""
    n, _, h, w = x.shape
    ph, pw = max(1, round(side * h)), max(1, round(side * w))
    top = torch.randint(0, h - ph + 1, (n, 1), device=x.device)
    left = torch.randint(0, w - pw + 1, (n, 1), device=x.device)
    rows = torch.arange(h, device=x.device)
    cols = torch.arange(w, device=x.device)
    in_rows = (rows >= top) & (rows < top + ph)  # (B, H)
    in_cols = (cols >= left) & (cols < left + pw)  # (B, W)
    chosen = torch.rand(n, device=x.device) < prob
    mask = in_rows[:, :, None] & in_cols[:, None, :] & chosen[:, None, None]  # (B, H, W)
    return x.masked_fill(mask[:, None], 0.0)


def affine_view(x: Tensor, rotation: float, scale: float, shift: float, noise: float, erase_prob: float) -> Tensor:
    """The small-scale view of §g: rotation ±``rotation``°, isotropic zoom 1 ± ``scale``, translation
    ±``shift`` of the side, optional erasing, Gaussian noise σ = ``noise``, clamped to [0, 1]. No flips.

    x : (B, C, H, W) in [0, 1] → (B, C, H, W).
    """
    n = len(x)
    angle = _uniform(n, -1, 1, x) * math.radians(rotation)
    zoom = _uniform(n, 1 - scale, 1 + scale, x)
    cos, sin = angle.cos() / zoom, angle.sin() / zoom
    linear = torch.stack([torch.stack([cos, -sin], 1), torch.stack([sin, cos], 1)], 1)  # (B, 2, 2)
    # affine_grid's coordinates span [−1, 1]: a shift of a fraction f of the side is 2f there.
    offset = (torch.rand(n, 2, device=x.device, dtype=x.dtype) * 2 - 1) * (2 * shift)
    view = _affine(x, linear, offset, "zeros")  # digit backgrounds are black
    if erase_prob > 0:
        view = random_erase(view, erase_prob)
    return (view + noise * torch.randn_like(view)).clamp(0.0, 1.0)


def _gray(x: Tensor) -> Tensor:
    """Luma of (B, C, H, W), (B, 1, H, W); the image itself when it has one channel."""
    if x.shape[1] != 3:
        return x.mean(1, keepdim=True)
    return (0.299 * x[:, :1] + 0.587 * x[:, 1:2] + 0.114 * x[:, 2:3])


def _per_image(values: Tensor) -> Tensor:
    return values[:, None, None, None]


def colour_jitter(x: Tensor, brightness=0.4, contrast=0.4, saturation=0.2, hue=0.1) -> Tensor:
    """Brightness, contrast, saturation and hue factors drawn per image, applied in that fixed order.

    Hue turns the chroma plane of YIQ by up to ±``hue`` of a full turn, a linear stand-in for the
    HSV hue shift of torchvision (1-channel images skip saturation and hue). x : (B, C, H, W).
    """
    n = len(x)
    x = x * _per_image(_uniform(n, 1 - brightness, 1 + brightness, x))
    mean = _gray(x).mean((1, 2, 3), keepdim=True)
    x = (x - mean) * _per_image(_uniform(n, 1 - contrast, 1 + contrast, x)) + mean
    if x.shape[1] != 3:
        return x.clamp(0.0, 1.0)
    gray = _gray(x)
    x = ((x - gray) * _per_image(_uniform(n, 1 - saturation, 1 + saturation, x)) + gray).clamp(0.0, 1.0)
    to_yiq = x.new_tensor([[0.299, 0.587, 0.114], [0.596, -0.274, -0.322], [0.211, -0.523, 0.312]])
    yiq = torch.einsum("ij,bjhw->bihw", to_yiq, x)
    turn = _uniform(n, -hue, hue, x) * 2 * math.pi
    cos, sin = _per_image(turn.cos())[:, 0], _per_image(turn.sin())[:, 0]  # (B, 1, 1)
    i, q = yiq[:, 1] * cos - yiq[:, 2] * sin, yiq[:, 1] * sin + yiq[:, 2] * cos
    yiq = torch.stack([yiq[:, 0], i, q], 1)
    return torch.einsum("ij,bjhw->bihw", torch.linalg.inv(to_yiq), yiq).clamp(0.0, 1.0)


def gaussian_blur(x: Tensor, sigma: Tensor) -> Tensor:
    """Separable Gaussian blur with one σ per image, reflect-padded; x (B, C, H, W), sigma (B,)."""
    n, c, h, w = x.shape
    radius = max(1, min(math.ceil(3 * float(sigma.max())), (min(h, w) - 1) // 2))
    taps = torch.arange(-radius, radius + 1, device=x.device, dtype=x.dtype)
    kernel = torch.exp(-taps[None] ** 2 / (2 * sigma[:, None] ** 2))  # (B, 2r+1)
    kernel = (kernel / kernel.sum(1, keepdim=True)).repeat_interleave(c, 0)  # (B·C, 2r+1)
    flat = x.reshape(1, n * c, h, w)
    flat = F.conv2d(F.pad(flat, (radius, radius, 0, 0), mode="reflect"), kernel[:, None, None, :], groups=n * c)
    flat = F.conv2d(F.pad(flat, (0, 0, radius, radius), mode="reflect"), kernel[:, None, :, None], groups=n * c)
    return flat.reshape(n, c, h, w)


def crop_colour_view(x: Tensor, min_crop: float, blur_prob: float, solarize_prob: float) -> Tensor:
    """One of the paper's two asymmetric views (§b), on a tensor batch in [0, 1].

    Random resized crop (area ``[min_crop, 1]``, aspect ``[3/4, 4/3]``) with a horizontal flip p = ½,
    colour jitter p = 0.8, grayscale p = 0.2, Gaussian blur σ ∈ [0.1, 2] with ``blur_prob``, solarise
    with ``solarize_prob``. No mean/std normalisation: the first convolution is followed by BN.
    """
    n = len(x)
    area = _uniform(n, min_crop, 1.0, x)
    aspect = torch.exp(_uniform(n, math.log(3 / 4), math.log(4 / 3), x))
    width = (area * aspect).sqrt().clamp(max=1.0)
    height = (area / aspect).sqrt().clamp(max=1.0)
    flip = torch.where(torch.rand(n, device=x.device) < 0.5, -1.0, 1.0).to(x.dtype)
    centre = (torch.rand(n, 2, device=x.device, dtype=x.dtype) * 2 - 1) * torch.stack([1 - width, 1 - height], 1)
    zeros = torch.zeros_like(width)
    linear = torch.stack([torch.stack([width * flip, zeros], 1), torch.stack([zeros, height], 1)], 1)
    view = _affine(x, linear, centre, "border")
    jittered = colour_jitter(view)
    view = torch.where(_per_image(torch.rand(n, device=x.device) < 0.8), jittered, view)
    gray = _gray(view).expand_as(view)
    view = torch.where(_per_image(torch.rand(n, device=x.device) < 0.2), gray, view)
    if blur_prob > 0:
        blurred = gaussian_blur(view, _uniform(n, 0.1, 2.0, x))
        view = torch.where(_per_image(torch.rand(n, device=x.device) < blur_prob), blurred, view)
    if solarize_prob > 0:
        solarized = torch.where(view < 0.5, view, 1.0 - view)
        view = torch.where(_per_image(torch.rand(n, device=x.device) < solarize_prob), solarized, view)
    return view


# ------------------------------------------------------------------------------------------------
# Networks
# ------------------------------------------------------------------------------------------------

def _conv_bn_relu(c_in: int, c_out: int) -> list[nn.Module]:
    return [nn.Conv2d(c_in, c_out, 3, padding=1, bias=False), nn.BatchNorm2d(c_out), nn.ReLU(inplace=True)]


class SmallCNN(nn.Module):
    """The 4-conv backbone of §g: w, w (pool), 2w (pool), 4w channels, global average pool → 4w.

    ``early_pool`` adds a 2×2 max-pool after the first convolution: on 28×28 images the receptive field
    of the last layer then covers the whole digit (38 px instead of 20) at a quarter of the FLOPs.
    """

    def __init__(self, channels: int, width: int = 32, early_pool: bool = False):
        super().__init__()
        self.features = 4 * width
        self.body = nn.Sequential(*_conv_bn_relu(channels, width), *([nn.MaxPool2d(2)] if early_pool else []),
                                  *_conv_bn_relu(width, width), nn.MaxPool2d(2),
                                  *_conv_bn_relu(width, 2 * width), nn.MaxPool2d(2),
                                  *_conv_bn_relu(2 * width, 4 * width), nn.AdaptiveAvgPool2d(1), nn.Flatten())

    def forward(self, x: Tensor) -> Tensor:
        return self.body(x)  # (B, 4w)


class BasicBlock(nn.Module):
    """ResNet's two 3×3 convolutions with an identity (or 1×1 projection) shortcut."""

    def __init__(self, c_in: int, c_out: int, stride: int):
        super().__init__()
        self.residual = nn.Sequential(nn.Conv2d(c_in, c_out, 3, stride, 1, bias=False), nn.BatchNorm2d(c_out),
                                      nn.ReLU(inplace=True), nn.Conv2d(c_out, c_out, 3, 1, 1, bias=False),
                                      nn.BatchNorm2d(c_out))
        self.shortcut = (nn.Identity() if stride == 1 and c_in == c_out else
                         nn.Sequential(nn.Conv2d(c_in, c_out, 1, stride, bias=False), nn.BatchNorm2d(c_out)))

    def forward(self, x: Tensor) -> Tensor:
        return F.relu(self.residual(x) + self.shortcut(x))


class ResNet18(nn.Module):
    """ResNet-18 with the CIFAR stem of §b (3×3 conv, stride 1, no max-pool; a max-pool for sides ≥ 64)."""

    def __init__(self, channels: int, side: int):
        super().__init__()
        self.features = 512
        stem = _conv_bn_relu(channels, 64) + ([nn.MaxPool2d(2, 2, 1)] if side >= RESNET_POOL_SIDE else [])
        blocks, c_in = [], 64
        for c_out, stride in ((64, 1), (128, 2), (256, 2), (512, 2)):
            blocks += [BasicBlock(c_in, c_out, stride), BasicBlock(c_out, c_out, 1)]
            c_in = c_out
        self.body = nn.Sequential(*stem, *blocks, nn.AdaptiveAvgPool2d(1), nn.Flatten())

    def forward(self, x: Tensor) -> Tensor:
        return self.body(x)  # (B, 512)


class SeCuNet(nn.Module):
    """Backbone, projection head (Linear, BN, ReLU, Linear → d) and one (d, K_h) centre matrix per head."""

    def __init__(self, backbone: nn.Module, embedding_dim: int, head_sizes: list[int]):
        super().__init__()
        f = backbone.features
        self.backbone = backbone
        self.projector = nn.Sequential(nn.Linear(f, f), nn.BatchNorm1d(f), nn.ReLU(inplace=True),
                                       nn.Linear(f, embedding_dim))
        # Random unit columns, as the official code; they are re-normalised wherever they are used.
        self.centres = nn.ParameterList(F.normalize(torch.randn(embedding_dim, k), dim=0) for k in head_sizes)

    def forward(self, x: Tensor) -> Tensor:
        # channels-last convolutions run about 25 % faster on CPU (oneDNN); the model is built that way
        x = x.contiguous(memory_format=torch.channels_last)
        return F.normalize(self.projector(self.backbone(x)), dim=1)  # (B, d), unit rows

    def unit_centres(self, head: int) -> Tensor:
        return F.normalize(self.centres[head], dim=0)  # (d, K_h)


# ------------------------------------------------------------------------------------------------
# The method
# ------------------------------------------------------------------------------------------------

# ------------------------------------------------------------------------------------------------
# Teaching: how the centre loss and the size bound respond to their knobs, on toys
# ------------------------------------------------------------------------------------------------

TOY_K = 4            # the dual-ascent toy: 200 instances, 4 clusters, cluster 0 preferred by every instance's scores
TOY_N = 200
TOY_PREFERENCE = (0.15, 0.05, 0.0, 0.0)


def hardness_curves(cosines: np.ndarray, temperature: float, n_clusters: int = 10) -> dict[str, np.ndarray]:
    """``centre_loss`` of one instance z and the norm of its gradient on the assigned centre, times λ_w.

    The instance has cosine ``s`` (one entry of ``cosines``) with its assigned centre and 0 with the other
    ``n_clusters − 1``; by §a.2 the gradient's norm is ``(1 − p)/λ_w``, so ``hardness`` = λ_w·‖∂L/∂w̄_y‖ is the
    weight ``1 − p`` the instance gets in the centre's update. Returns ``s``, ``loss``, ``hardness`` (n,).
    """
    z = torch.zeros(1, n_clusters + 1, dtype=torch.float64)
    z[0, 0] = 1.0
    loss, hardness = [], []
    for s in cosines:
        centres = torch.zeros(n_clusters + 1, n_clusters, dtype=torch.float64)  # (d, K), d = K + 1
        centres[2:, 1:] = torch.eye(n_clusters - 1, dtype=torch.float64)  # the others: e₃ … e_{K+1}, cosine 0
        centres[0, 0], centres[1, 0] = float(s), math.sqrt(max(0.0, 1.0 - float(s) ** 2))  # unit, cosine s to z
        centres.requires_grad_(True)
        value = centre_loss(z, centres, torch.zeros(1, dtype=torch.int64), temperature)
        (grad,) = torch.autograd.grad(value, centres)
        loss.append(value.item())
        hardness.append(temperature * grad[:, 0].norm().item())
    return {"s": np.asarray(cosines, dtype=float), "loss": np.array(loss), "hardness": np.array(hardness)}


def toy_scores(seed: int = 0) -> Tensor:
    """(TOY_N, TOY_K) similarities: ``TOY_PREFERENCE`` plus Gaussian noise of sd 0.1."""
    rng = np.random.default_rng(seed)
    return torch.as_tensor(rng.normal(0.0, 0.1, (TOY_N, TOY_K)) + np.asarray(TOY_PREFERENCE))


def dual_ascent_sizes(scores: Tensor, gamma: float, eta: float, steps: int) -> np.ndarray:
    """Cluster sizes after each of ``steps`` rounds of ``size_assign`` then ``dual_update`` on the whole of
    ``scores`` (N, K) as one batch, duals from 0; (steps, K) int."""
    duals = torch.zeros(scores.shape[1], dtype=scores.dtype)
    sizes = []
    for _ in range(steps):
        labels = size_assign(scores, duals)
        sizes.append(torch.bincount(labels, minlength=scores.shape[1]).numpy())
        duals = dual_update(duals, labels, gamma, eta)
    return np.stack(sizes)


def secu_panels(config) -> list[CurvePanel]:
    hard = hardness_curves(np.linspace(-1.0, 1.0, 81), config.lambda_w)
    steps = 60
    sizes = dual_ascent_sizes(toy_scores(), config.gamma, config.eta, steps)
    rounds = np.arange(1, steps + 1)
    bound = config.gamma * TOY_N / TOY_K
    return [CurvePanel(f"centre loss of one instance, λ_w = {config.lambda_w:g}",
                       "cosine s of the instance with its assigned centre (others at 0; K = 10)",
                       {"L_c": (hard["s"], hard["loss"]), "hardness 1 − p (its weight on the centre)":
                        (hard["s"], hard["hardness"])}),
            CurvePanel(f"size bound γN/K = {bound:g} by dual ascent, η = {config.eta:g}",
                       f"round (toy: N = {TOY_N}, K = {TOY_K}, all prefer cluster 0)",
                       {**{f"cluster {k}": (rounds, sizes[:, k]) for k in range(TOY_K)},
                        "γN/K": (rounds, np.full(steps, bound))})]


@dataclass(frozen=True)
class SeCuConfig(Config):
    constraint: str = knob("size", choices=("size", "entropy"),
                           help="balance the clusters by a lower bound on their size (SeCu-Size) or by the "
                                "entropy of the size distribution (SeCu-Entropy)")
    gamma: float = knob(0.9, symbol="γ", min=0.0, max=1.0, step=0.05,
                        help="size lower-bound ratio: every cluster keeps ≥ γN/K members (size constraint; "
                             "keep γ ≤ K × the smallest class share)", limits=FRACTION)
    eta: float = knob(0.1, symbol="η", min=0.01, max=1.0, log=True,
                      help="step size of the online dual ascent on the size bound (size constraint)")
    alpha: float = knob(0.12, symbol="α/N", min=0.0, max=0.5, step=0.01,
                        help="weight of the cluster-size entropy per sample, α/N (entropy constraint; "
                             "CIFAR-10's α = 6000 is 0.12 N)")
    tau: float = knob(0.2, symbol="τ", min=0.0, max=1.0, step=0.05,
                      help="weight of the previous epoch's one-hot label in the soft target of L_x "
                           "(β has no counterpart in SeCu)", limits=FRACTION)
    lambda_x: float = knob(0.05, symbol="λₓ", min=0.02, max=0.5, log=True,
                           help="temperature of the representation loss L_x")
    lambda_w: float = knob(0.05, symbol="λ_w", min=0.02, max=1.0, log=True,
                           help="temperature of the centre loss L_c")
    heads: int = knob(3, symbol="H", min=1, max=10, step=1,
                      help="clustering heads with K = C, 2C, …, H·C clusters; the K = C head is evaluated")
    embedding_dim: int = knob(64, symbol="d", min=32, max=128, step=16, help="size of the unit embedding")
    backbone: str = knob("cnn", choices=("cnn", "resnet18"),
                         help="the small 4-conv CNN of the small-scale recipe or the paper's ResNet-18")
    width: int = knob(32, symbol="w", min=8, max=128, step=8, help="channels of the small CNN's first layers")
    views: str = knob("affine", choices=("affine", "crop-colour"),
                      help="affine + noise views for digits (no flips) or the paper's crop/colour/blur views")
    rotation: float = knob(15.0, min=0.0, max=45.0, step=1.0, help="largest rotation of an affine view (degrees)")
    scale: float = knob(0.15, min=0.0, max=0.4, step=0.01, help="largest zoom in or out of an affine view", limits=BELOW_ONE)
    shift: float = knob(0.12, min=0.0, max=0.3, step=0.01, help="largest translation of an affine view (of the side)", limits=FRACTION)
    noise: float = knob(0.1, symbol="σ", min=0.0, max=0.3, step=0.01, help="Gaussian pixel noise of an affine view")
    erase_prob: float = knob(0.0, min=0.0, max=1.0, step=0.05,
                             help="probability of erasing a quarter-side square in an affine view", limits=FRACTION)
    min_crop: float = knob(0.3, min=0.08, max=1.0, step=0.01,
                           help="smallest crop area of a crop-colour view (CIFAR-10 0.3, CIFAR-100/STL 0.2)", limits=Limits(0, 1, low_open=True))
    lr: float = knob(0.1, symbol="lr", min=0.01, max=0.5, log=True, help="peak SGD learning rate of the encoder")
    centre_lr: float = knob(1.2, min=0.01, max=2.0, log=True, help="constant SGD learning rate of the centres")
    momentum: float = knob(0.9, min=0.0, max=0.99, step=0.01, help="SGD momentum (encoder and centres)", limits=BELOW_ONE)
    weight_decay: float = knob(1e-4, min=1e-6, max=1e-3, log=True,
                               help="SGD weight decay, on the centres too (they are re-normalised before use)", limits=NON_NEGATIVE)
    recalibrate_bn: bool = knob(True, help="before each evaluation, set the BN statistics to their exact values "
                                           "on clean images (off: the EMA over augmented training views)")
    warmup_epochs: int = knob(2, min=0, max=20, step=1,
                              help="epochs of linear encoder-lr warm-up after the frozen epoch 0; cosine after")


def _fast(dataset: str) -> dict:
    """A demo budget: digits in well under a minute on one CPU core, a few epochs elsewhere."""
    if small_builtin(dataset):
        return {"epochs": 20, "heads": 2}
    return {"epochs": 6 if dataset == "usps" else 3}


def _cpu(dataset: str) -> dict:
    """≤ 20 minutes per seed on 2 CPU cores for USPS and MNIST-test (measured on one core: about 10 s and
    27 s per epoch at batch 32, evaluation included)."""
    return {"epochs": {"usps": 100, "mnist-test": 40}.get(dataset, 40)}


class SeCu(Method):
    name = "secu"
    title = "SeCu"
    Config = SeCuConfig
    phases = ("cluster",)
    # quoted identically by IDC (NeurIPS 2024, Table 2) and DCBoost (Table 2); ResNet-18, SCAN protocol
    diagnostics = {"online cluster sizes (with the duals)": ("train_min_size", "train_max_size"),
                   "dual variables ρ": ("dual_mean", "dual_max"), "size entropy H(q)/log K": ("size_entropy",)}
    published = {"cifar-10": (0.930, 0.861, "quoted by IDC and DCBoost Table 2"),
                 "cifar-100-20": (0.552, 0.551, "quoted by IDC and DCBoost Table 2"),
                 "stl-10": (0.836, 0.733, "quoted by IDC and DCBoost Table 2")}

    objective = (r"\begin{gathered}L=\frac{1}{2H}\sum_{h}(L_x+L_c)\\"
                 r"L_c=-\log\frac{e^{\operatorname{sg}(z_i)^\top\bar w_{y_i}"
                 r"/\lambda_w}}{\sum_k e^{\operatorname{sg}(z_i^\top\bar w_k)/\lambda_w}}\\"
                 r"\frac{\partial L_c}{\partial\bar w_{y_i}}=-\frac{1-p_{iy_i}}{\lambda_w}z_i\\"
                 r"y_i=\arg\max_k(s_{ik}+\rho_k),\quad\rho_k\leftarrow\max\!\big(0,\rho_k+\eta(\tfrac{\gamma}{K}"
                 r"-\tfrac{n_k}{|B|})\big)\\ \Rightarrow\ |\{i:y_i=k\}|\ge\gamma N/K\end{gathered}")
    symbols = {r"\lambda_w": "lambda_w", r"\eta": "eta", r"\gamma": "gamma", "H": "heads"}
    explanation = (
        "SeCu trains an encoder from scratch on two augmented views of each image, against cluster centres on "
        "the unit sphere. Its centre loss moves only the assigned centre, by the instance's hardness 1 − p "
        "(left panel): an instance the centre already explains barely moves it, a hard one moves it most. Every "
        "cluster must keep at least γN/K members: dual variables ρ, raised by η each time a cluster is too "
        "small, bend the assignment until the bound holds (right panel, a toy where every instance prefers "
        "cluster 0). While it trains, the diagnostics show the online cluster sizes and ρ; ACC starts near "
        "chance (there is no pretraining) and climbs over the epochs; if γ asks for more than the smallest "
        "class holds, clusters are forced to split classes.")
    demo = ("Fast demo on digits (seed 0, `bench/teaching.py`): ACC 0.913, NMI 0.875, against 0.792 for k-means on "
            "the pixels: it shows learning from scratch, the best of the demos; about two minutes.")

    def __init__(self, config, n_clusters, seed=0):
        super().__init__(config, n_clusters, seed)
        self.head_sizes = [n_clusters * (h + 1) for h in range(config.heads)]
        self.memory: Tensor | None = None        # (H, N) label of every instance per head
        self.duals: Tensor | None = None         # (H, K_max) ρ, only the first K_h entries of a head are used
        self.counts: Tensor | None = None        # (H, K_max) memory label counts (entropy constraint)
        self.epoch_counts: Tensor | None = None  # (H, K_max) fresh labels of the running epoch
        self.epochs_done = 0
        self.snapshot: list[Tensor] = []         # W̃_h (d, K_h) of the running epoch
        self.calibration: Tensor | None = None   # (S, C, H, W) clean images for the BN statistics
        self.optimizer_: torch.optim.Optimizer | None = None
        self.schedule: tuple[int, int] | None = None  # (epochs, steps per epoch) of the cluster phase

    # -- presets -------------------------------------------------------------------------------
    @classmethod
    def dataset_defaults(cls, dataset):
        # Batch 32, not §g's 256: on 2 CPU cores time goes per sample, and at equal epochs more steps win
        # (USPS, 20 epochs, seed 0: ACC 0.53 at 256, 0.70 at 64, 0.78 at 32).
        defaults = {"epochs": 60, "batch_size": 32}
        return {**defaults, "gamma": GAMMA[dataset]} if dataset in GAMMA else defaults

    @classmethod
    def presets(cls, dataset):
        # §d's CIFAR-10 settings on the recipe that suits the data (a small CNN for 1-channel digits)
        paper = {"epochs": 401, "batch_size": 128, "lr": 0.2, "centre_lr": 1.2, "heads": 10, "embedding_dim": 128,
                 "warmup_epochs": 10, "lambda_x": 0.05, "lambda_w": 0.05, "tau": 0.2, "eta": 0.1}
        return {"paper": paper,
                "paper-resnet18": {**paper, "backbone": "resnet18", "views": "crop-colour", "min_crop": 0.3},
                "fast": _fast(dataset),
                "cpu": _cpu(dataset)}

    @classmethod
    def loss_curves(cls, config):
        return secu_panels(config)

    # -- model -------------------------------------------------------------------------------------
    def build(self, input_shape):
        channels, side = input_shape[0], min(input_shape[1:])
        c = self.config
        if c.backbone == "resnet18":
            backbone = ResNet18(channels, side)
        else:
            backbone = SmallCNN(channels, c.width, early_pool=side >= EARLY_POOL_SIDE)
        return SeCuNet(backbone, c.embedding_dim, self.head_sizes).to(memory_format=torch.channels_last)

    def optimizer(self, model, phase):
        c = self.config
        encoder = [*model.backbone.parameters(), *model.projector.parameters()]
        return torch.optim.SGD([{"params": encoder, "lr": c.lr}, {"params": list(model.centres), "lr": c.centre_lr}],
                               momentum=c.momentum, weight_decay=c.weight_decay)

    def init_clusters(self, model, x):
        """Size the label memory, the duals and the counts to the data; the centres stay random (§c.1)."""
        n, k_max = len(x), self.head_sizes[-1]
        if k_max > n:
            raise ValueError(f"the largest head has {k_max} clusters but the data only {n} images; "
                             f"use fewer heads")
        h = len(self.head_sizes)
        self.memory = torch.zeros(h, n, dtype=torch.long, device=x.device)
        self.duals = torch.zeros(h, k_max, device=x.device)
        self.counts = torch.zeros(h, k_max, device=x.device)
        self.epoch_counts = torch.zeros(h, k_max, device=x.device)
        self.epochs_done = 0
        self.calibration = self._calibration_images(x)
        self._recalibrate(model)

    def _calibration_images(self, x: Tensor) -> Tensor:
        """A fixed random subset of the clean images (the same every epoch) for the BN statistics."""
        generator = torch.Generator().manual_seed(self.seed)
        return x[torch.randperm(len(x), generator=generator)[:CALIBRATION_SIZE].to(x.device)]

    def _recalibrate(self, model) -> None:
        # The running BN statistics are an EMA over augmented (noisy) views; the readout embeds clean
        # images, and in short runs the EMA has not even converged (the eval-mode codes then collapse).
        if self.config.recalibrate_bn:
            recalibrate_batch_norm(model, self.calibration)

    # -- schedule ----------------------------------------------------------------------------------
    def on_phase_start(self, model, phase, optimizer, epochs, steps_per_epoch):
        self.optimizer_, self.schedule = optimizer, (epochs, steps_per_epoch)

    def before_step(self, model, step, x):
        if self.schedule is not None:
            epochs, steps_per_epoch = self.schedule
            lr = encoder_lr(step, steps_per_epoch, epochs, self.config.warmup_epochs, self.config.lr)
            self.optimizer_.param_groups[0]["lr"] = lr
        return None

    def on_epoch_start(self, model, phase, epoch, x):
        if phase != "cluster":
            return {}
        self.snapshot = [model.unit_centres(h).detach().clone() for h in range(len(self.head_sizes))]
        self.calibration = self._calibration_images(x)
        self.epoch_counts.zero_()
        return {}

    def on_epoch_end(self, model, phase, epoch):
        if phase != "cluster":
            return {}
        self.epochs_done += 1
        self._recalibrate(model)
        k = self.head_sizes[0]
        sizes = self.epoch_counts[0, :k]
        memory_sizes = torch.bincount(self.memory[0], minlength=k).float()
        share = memory_sizes / memory_sizes.sum()
        extras = {"train_min_size": float(sizes.min()), "train_max_size": float(sizes.max()),
                  "size_entropy": float(-phi(share).sum() / math.log(k)),
                  "encoder_lr": float(self.optimizer_.param_groups[0]["lr"]) if self.optimizer_ else float("nan")}
        if self.config.constraint == "size":
            extras.update(dual_mean=float(self.duals[0, :k].mean()), dual_max=float(self.duals[0, :k].max()))
        return extras

    # -- training ----------------------------------------------------------------------------------
    def views(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """The two augmented views of a batch (§b for crop-colour, §g for affine)."""
        c = self.config
        if c.views == "crop-colour":
            return (crop_colour_view(x, c.min_crop, blur_prob=1.0, solarize_prob=0.0),
                    crop_colour_view(x, c.min_crop, blur_prob=0.1, solarize_prob=0.2))
        return tuple(affine_view(x, c.rotation, c.scale, c.shift, c.noise, c.erase_prob) for _ in range(2))

    @torch.no_grad()
    def assign_batch(self, head: int, scores: Tensor, index: Tensor) -> tuple[Tensor, Tensor]:
        """Fresh labels of a batch for one head, with the dual / count update and the memory write.

        Returns (new labels, the labels to learn L_x from): the memory's labels before this batch, or the
        fresh ones in epoch 0 (§a.5). scores : (B, K_h) without gradient; index : (B,) rows of the data.
        """
        c, k = self.config, self.head_sizes[head]
        first_epoch = self.epochs_done == 0
        previous = self.memory[head, index]
        if c.constraint == "size":
            labels = size_assign(scores, self.duals[head, :k])
            self.duals[head, :k] = dual_update(self.duals[head, :k], labels, c.gamma, c.eta)
        else:
            counts = self.counts[head, :k]
            labels = entropy_assign(scores, counts, c.alpha * self.memory.shape[1], None if first_epoch else previous)
            counts += torch.bincount(labels, minlength=k)
            if not first_epoch:
                counts -= torch.bincount(previous, minlength=k)
        self.memory[head, index] = labels
        self.epoch_counts[head, :k] += torch.bincount(labels, minlength=k)
        return labels, labels if first_epoch else previous

    def training_step(self, model, batch, phase):
        c = self.config
        view_1, view_2 = self.views(batch.x)
        z_1, z_2 = model(view_1), model(view_2)  # (B, d) each
        loss_x = loss_c = 0.0
        for head in range(len(self.head_sizes)):
            centres = model.unit_centres(head)  # (d, K_h)
            scores = 0.5 * (z_1 + z_2).detach() @ centres.detach()  # (B, K_h), cosine, no temperature
            labels, stale_labels = self.assign_batch(head, scores, batch.index)
            loss_c = loss_c + centre_loss(z_1, centres, labels, c.lambda_w) + centre_loss(z_2, centres, labels,
                                                                                          c.lambda_w)
            snapshot = self.snapshot[head]
            loss_x = loss_x + representation_loss(z_1 @ snapshot / c.lambda_x, z_2 @ snapshot / c.lambda_x,
                                                  stale_labels, c.tau)
        scale = 2 * len(self.head_sizes)
        loss_x, loss_c = loss_x / scale, loss_c / scale
        return {"loss": loss_x + loss_c, "x": loss_x, "c": loss_c}

    # -- read-outs ---------------------------------------------------------------------------------
    def embed(self, model, x):
        return model(x)

    def assign(self, model, x):
        logits = model(x) @ model.unit_centres(0)  # (B, C): the K = C head, no duals (§a.7)
        return F.softmax(logits / self.config.lambda_x, dim=1), logits.argmax(1)

    def centroids(self, model):
        return model.unit_centres(0).detach().T  # (C, d)

    def state_dict(self):
        return {"memory": self.memory, "duals": self.duals, "counts": self.counts, "epoch_counts": self.epoch_counts,
                "epochs_done": self.epochs_done}

    def load_state_dict(self, state):
        self.memory, self.duals, self.counts = state["memory"], state["duals"], state["counts"]
        self.epoch_counts, self.epochs_done = state["epoch_counts"], state["epochs_done"]
