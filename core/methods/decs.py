"""DECS (Cheng et al., IJCAI 2024): deep embedding clustering driven by sample stability, spec ``decs.md``.

Pretraining: the conv autoencoder of §b on augmented batches (per-pixel MSE). Initialisation: k-means on
the clean codes (BN in inference mode). Clustering: no target distribution; per augmented batch,
``q`` (Student-t, α = 0.5) → Otsu threshold ``t`` of the batch's n·k values (no gradient, clamped) →
determinacy ``fq = φ_t(q)`` → sample stability ``sq = mean_j fq − λ Var_j fq`` →
``L_c = 1 − (mean_i sq + ρ Var_i sq)``, back-propagated into the encoder and the centroids only.

The two open switches of the spec (§a.3, §a.5) are the knobs ``p`` (determinacy exponent) and ``rho``
(batch-variance reward): the official code is ``p = 1, ρ = 1`` (the default and the ``paper`` and
``DECS-official`` presets), the probable paper form ``p = 2, ρ = 0`` (the ``DECS-paper`` preset).

Per-epoch event scalars (from ``on_epoch_start``, i.e. measured on the model as it enters the epoch):
``t``: Otsu threshold of ``q`` on the whole clean data (the spec's "t per evaluation" readout), or the
manual t; ``t_train``: the mean of the per-batch thresholds actually used during the *previous* cluster
epoch (NaN for the first); ``size_ratio``: largest cluster over its expected share N/K (> 3 logs a
collapse warning, §f.8). Cluster sizes themselves are in every event (``sizes``) and in ``min_size``/
``max_size``.
"""
from __future__ import annotations

import logging
import math
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor, nn
from torch.nn import functional as F

from core.config import BELOW_ONE, Limits, knob
from core.data import BUILTIN_SIZES, builtin_side, small_builtin
from core.losses import student_t_assign
from core.metrics import COLLAPSE_SHARE, largest_share
from core.methods.base import AutoencoderConfig, AutoencoderMethod, CurvePanel, LabelChange, assign_all
from core.models import adam, recalibrate_batch_norm

log = logging.getLogger(__name__)

OTSU_BINS = 1000
T_MIN, T_MAX = 1e-3, 1.0 - 1e-3   # §f.3: φ_t divides by t and by 1 − t
SHIFT, DEGREES = 0.1, 10.0        # §c: random shift ±10 % of the side, rotation ±10°


# ------------------------------------------------------------------------------------------------
# Pure functions
# ------------------------------------------------------------------------------------------------

def augment(x: Tensor, shift: float = SHIFT, degrees: float = DEGREES) -> Tensor:
    """Random affine augmentation of a whole batch on its device, one grid for all (§c).

    Each image gets its own rotation in ``[−degrees, degrees]`` and shifts in ``[−shift, shift]`` of its
    width and height, drawn from torch's global RNG. Bilinear sampling; pixels from outside the image
    repeat the border (Keras' ``fill_mode="nearest"``).

    x : (B, C, H, W) → (B, C, H, W).
    """
    n = len(x)
    angle = (torch.rand(n, device=x.device, dtype=x.dtype) * 2 - 1) * math.radians(degrees)
    # affine_grid's coordinates span [−1, 1]: a shift of a fraction f of the side is 2f there.
    offset = (torch.rand(n, 2, device=x.device, dtype=x.dtype) * 2 - 1) * (2 * shift)
    cos, sin = angle.cos(), angle.sin()
    theta = torch.stack([torch.stack([cos, -sin, offset[:, 0]], 1),
                         torch.stack([sin, cos, offset[:, 1]], 1)], 1)  # (B, 2, 3)
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=False)


@torch.no_grad()
def otsu_threshold(values: Tensor, bins: int = OTSU_BINS, clamp: bool = True) -> Tensor:
    """Otsu threshold of values in [0, 1] as the official code computes it (§a.2), without gradient.

    A ``bins``-bin histogram on [0, 1] (the last bin holds 1.0) with probabilities π_b;
    ``ω(b) = Σ_{c≤b} π_c``, ``μ(b) = Σ_{c≤b} c π_c``, ``μ_T = μ(bins−1)``;
    ``σ²(b) = (μ_T ω(b) − μ(b))² / (ω(b)(1 − ω(b)) + 1e-6)``; ``t = argmax_b σ²(b) / bins`` (first maximum),
    clamped to [1e-3, 1 − 1e-3] unless ``clamp`` is False (§f.3).

    values : any shape, e.g. the (n, K) soft assignments of a batch. Returns a 0-dim tensor on their device.
    """
    flat = values.detach().reshape(-1).to("cpu", torch.float64)  # float64 where every backend has it (MPS has none)
    index = (flat * bins).floor().clamp(0, bins - 1).long()
    pi = torch.bincount(index, minlength=bins).to(torch.float64) / flat.numel()  # (bins,)
    levels = torch.arange(bins, device=flat.device, dtype=torch.float64)
    omega = pi.cumsum(0)
    mu = (levels * pi).cumsum(0)
    sigma = (mu[-1] * omega - mu).pow(2) / (omega * (1.0 - omega) + 1e-6)
    t = sigma.argmax().to(torch.float64) / bins
    t = t.clamp(T_MIN, T_MAX) if clamp else t
    return t.to(values.device, values.dtype)


def determinacy(q: Tensor, t: Tensor | float, p: int = 1) -> Tensor:
    """``fq = φ_t(q)``: ``((t − q)/t)^p`` below t, ``((q − t)/(1 − t))^p`` from t on (§a.3).

    0 at q = t (most ambiguous), 1 at q ∈ {0, 1}. Both branches are computed on safe, non-negative
    numerators, so neither produces NaN gradients; t must lie strictly inside (0, 1) and carries no
    gradient (it is detached here).

    q : (n, K) soft assignments; t : scalar (0-dim tensor or float). Returns (n, K).
    """
    t = torch.as_tensor(t, dtype=q.dtype, device=q.device).detach()
    below = ((t - q).clamp_min(0.0) / t).pow(p)
    above = ((q - t).clamp_min(0.0) / (1.0 - t)).pow(p)
    return torch.where(q < t, below, above)


def stability(fq: Tensor, lam: float = 0.4) -> Tensor:
    """Sample stability ``sq_i = mean_j fq_ij − λ Var_j fq_ij`` (population variance over K, §a.4).

    fq : (n, K) → (n,).
    """
    return fq.mean(1) - lam * fq.var(1, unbiased=False)


def stability_loss(sq: Tensor, rho: float = 1.0) -> Tensor:
    """``L_c = 1 − (mean_i sq_i + ρ Var_i sq_i)`` over the batch (population variance, §a.5).

    ρ = 1 is the official code, ρ = 0 the probable paper form. sq : (n,) → scalar.
    """
    return 1.0 - (sq.mean() + rho * sq.var(unbiased=False))


def decs_loss(q: Tensor, t: Tensor | float, lam: float = 0.4, p: int = 1, rho: float = 1.0) -> dict[str, Tensor]:
    """The whole clustering objective from soft assignments q (n, K) and a threshold t.

    Returns ``{"loss": L_c, "mean_sq": mean_i sq_i, "var_sq": Var_i sq_i}`` (scalars).
    """
    sq = stability(determinacy(q, t, p), lam)
    return {"loss": stability_loss(sq, rho), "mean_sq": sq.mean(), "var_sq": sq.var(unbiased=False)}


def figure2_curves(t: float = 0.3, alpha: float = 0.5, lam: float = 0.4, p: int = 1,
                   n_points: int = 201) -> dict[str, dict[str, np.ndarray | float]]:
    """The curves of the seed's Figure 2 for a teaching plot, as NumPy arrays.

    * ``"a"``: sq against (fq_1, fq_2) for two centroids: ``sq = (fq_1 + fq_2)/2 − λ((fq_1 − fq_2)/2)²``,
      with ``fq`` a grid of ``n_points`` in [0, 1]; ``sq`` and ``dsq_dfq1 = 1/2 − λ(fq_1 − fq_2)/2`` are
      (n_points, n_points) arrays indexed [fq_1, fq_2].
    * ``"b"``: fq against q for the threshold t and exponent p, with its derivative ``dfq_dq``, (n_points,).
    * ``"c"``: a code z moving along the line through two centroids at −1 and +1 (1-D latent space):
      q of centroid 1, its derivative, and the resulting stability sq of the sample, (n_points,) over
      z ∈ [−3, 3]; this is where α acts.

    Derivatives are taken by autograd in float64.
    """
    t = float(min(max(t, T_MIN), T_MAX))
    grid = torch.linspace(0.0, 1.0, n_points, dtype=torch.float64)
    f1 = grid[:, None].expand(n_points, n_points).clone().requires_grad_(True)
    f2 = grid[None, :].expand(n_points, n_points)
    sq = stability(torch.stack([f1, f2], -1).reshape(-1, 2), lam).reshape(n_points, n_points)
    (dsq,) = torch.autograd.grad(sq.sum(), f1)

    q = grid.clone().requires_grad_(True)
    fq = determinacy(q[:, None], t, p)[:, 0]
    (dfq,) = torch.autograd.grad(fq.sum(), q)

    z = torch.linspace(-3.0, 3.0, n_points, dtype=torch.float64).requires_grad_(True)
    centres = torch.tensor([[-1.0], [1.0]], dtype=torch.float64)
    qz = student_t_assign(z[:, None], centres, alpha)  # (n_points, 2)
    (dq,) = torch.autograd.grad(qz[:, 0].sum(), z)
    sq_z = stability(determinacy(qz, t, p), lam)
    return {"a": {"fq1": grid.numpy(), "fq2": grid.numpy(), "sq": sq.detach().numpy(), "dsq_dfq1": dsq.numpy(),
                  "lam": lam},
            "b": {"q": grid.numpy(), "fq": fq.detach().numpy(), "dfq_dq": dfq.numpy(), "t": t, "p": p},
            "c": {"z": z.detach().numpy(), "q1": qz[:, 0].detach().numpy(), "dq1_dz": dq.numpy(),
                  "sq": sq_z.detach().numpy(), "alpha": alpha, "t": t}}


# ------------------------------------------------------------------------------------------------
# The method
# ------------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class DECSConfig(AutoencoderConfig):
    autoencoder: str = knob("conv", choices=("mlp", "conv"),
                            help="the conv autoencoder of DECS (§b) or DEC's MLP")
    alpha: float = knob(0.5, symbol="α", min=0.1, max=2.0, step=0.1,
                        help="degrees of freedom of the Student-t kernel (DECS uses 0.5, DEC 1.0)")
    lam: float = knob(0.4, symbol="λ", min=0.0, max=1.0, step=0.05,
                      help="weight of the variance over centroids subtracted in the sample stability sq")
    auto_threshold: bool = knob(True, choices=(True, False),
                                help="threshold t by Otsu on each batch's q (on) or the manual t below (off)")
    threshold: float = knob(0.2, symbol="t", min=0.05, max=0.95, step=0.01,
                            help="manual determinacy threshold, used when auto_threshold is off", limits=Limits(0, 1, low_open=True, high_open=True))
    p: int = knob(1, symbol="p", choices=(1, 2),
                  help="determinacy exponent: 1 official code (|q−t| scaled), 2 third-party/probable paper form")
    rho: float = knob(1.0, symbol="ρ", choices=(0.0, 1.0),
                      help="weight of the batch variance of sq rewarded in L_c: 1 official code, 0 paper form")
    t_eval_pass: bool = knob(False, choices=(False, True),
                             help="take t from an extra inference-mode (BN eval) pass, as the official code does")
    augment: bool = knob(True, choices=(True, False),
                         help="random shift ±10 % and rotation ±10° of every batch, in both phases")
    recalibrate_bn: bool = knob(True, choices=(True, False),
                                help="before k-means, set the encoder's BN running stats to their exact average "
                                     "over the (augmented) data; off: keep the pretraining EMA (official)")
    lr: float = knob(1e-3, symbol="lr", min=1e-4, max=1e-2, log=True, help="Adam learning rate of the clustering phase")
    max_iter: int = knob(20000, min=100, max=20000, step=100, help="cap on clustering iterations")
    update_interval: int = knob(30, symbol="U", min=10, max=500, step=10,
                                help="iterations between label-change checks (only used when tol > 0)")
    tol: float = knob(0.0, symbol="tol", min=0.0, max=0.01, step=0.0005,
                      help="0: run all iterations as the official code; above 0, stop when fewer labels change", limits=BELOW_ONE)


def cluster_epochs(dataset: str, iterations: int = 20000, batch_size: int = 256) -> int:
    """Trainer epochs that hold ``iterations`` steps of ``batch_size`` on a known data set (2000 otherwise)."""
    n = BUILTIN_SIZES.get(dataset)
    return min(2000, math.ceil(iterations / math.ceil(n / batch_size))) if n else 2000


class DECS(AutoencoderMethod):
    name = "decs"
    title = "DECS"
    Config = DECSConfig
    diagnostics = {"threshold t": ("t", "t_train"), "largest cluster ÷ balanced share": ("size_ratio",)}
    published = {"mnist": (0.990, 0.973, "official README (run_exp.py)"),
                 "mnist-test": (0.990, 0.971, "official README (run_exp.py)"),
                 "usps": (0.992, 0.976, "official README (run_exp.py)"),
                 "fashion-mnist": (0.642, 0.716, "official README (run_exp.py)")}
    known_collapse = ("This is DECS' own behaviour, not a bug here: from the same start (USPS, k-means ACC 0.750) "
                      "the authors' official code empties the same clusters (ACC 0.683 → 0.633 over 450 iterations); "
                      "its stability loss has no balance term, so only a better start (longer pretraining) keeps "
                      "the clusters (spec §i.2).")
    objective = (r"\begin{gathered}fq_{ij}=\varphi_t(q_{ij})=\begin{cases}\big(\frac{t-q_{ij}}{t}\big)^p & q_{ij}<t\\"
                 r"\big(\frac{q_{ij}-t}{1-t}\big)^p & q_{ij}\ge t\end{cases}\\"
                 r"q_{ij}\propto(1+\lVert z_i-m_j\rVert^2/\alpha)^{-\frac{\alpha+1}{2}}\\"
                 r"sq_i=\operatorname{mean}_j fq_{ij}-\lambda\operatorname{Var}_j fq_{ij}\\"
                 r"L_c=1-\big(\operatorname{mean}_i sq_i+\rho\operatorname{Var}_i sq_i\big)\end{gathered}")
    symbols = {"t": "threshold", "p": "p", r"\lambda": "lam", r"\rho": "rho", r"\alpha": "alpha"}
    explanation = (
        "DECS needs no target distribution: it rewards stable samples, those whose soft assignment q to every "
        "centroid is far from an ambiguity threshold t (Otsu's threshold of the batch's q unless you set it). "
        "The determinacy fq is 0 at q = t and 1 at q = 0 or 1 (panel b); a sample's stability sq averages its "
        "fq over centroids minus λ times their variance (panel a), and panel c follows a code between two "
        "centroids, where α sets the width of q. While it trains, the diagnostics show t and the largest "
        "cluster against its balanced share: a ratio climbing past 3 is a collapse, the usual failure of DECS "
        "from a weak start, since every sample can be made stable by putting all of them in one cluster.")
    demo = ("Fast demo on digits (seed 0, `bench/teaching.py`): ACC 0.106, NMI 0.008, against 0.792 for k-means on "
            "the pixels: it shows a failure mode, a collapse into one cluster (the sizes chart and the size-ratio "
            "diagnostic show it happen); about two minutes.")

    def __init__(self, config, n_clusters, seed=0):
        super().__init__(config, n_clusters, seed)
        self.label_change = LabelChange()
        self.t_sum = 0.0                    # per-batch thresholds of the running epoch
        self.t_count = 0

    @classmethod
    def presets(cls, dataset):
        # t from the inference-mode pass, as the official code takes it (spec §i.3: the train-mode t ran 0.085
        # higher over the first 30 iterations)
        paper = {"batch_size": 256, "pretrain_epochs": 500, "epochs": cluster_epochs(dataset), "max_iter": 20000,
                 "kmeans_restarts": 20, "t_eval_pass": True}
        small = small_builtin(dataset)
        fast = ({"batch_size": 64, "pretrain_epochs": 20, "epochs": 15, "kmeans_restarts": 5} if small else
                {"batch_size": 256, "pretrain_epochs": 15, "epochs": 15, "kmeans_restarts": 5})
        # ≤ 20 minutes a seed on 2 CPU threads: the clustering of §g (2,000 iterations) after as much augmented
        # pretraining as fits, because DECS only keeps a good start (§f.8). A step of 256 costs ~0.12 s on
        # 16×16 USPS and ~0.31 s on 28×28: 200 epochs there (a USPS seed in 20 minutes), 40 here (a MNIST-test
        # seed took 22 minutes with 50). USPS seed 0: k-means 0.916 after 200 epochs against 0.649 after 15.
        wide = (builtin_side(dataset) or 0) >= 28
        cpu = {"batch_size": 256, "pretrain_epochs": 40 if wide else 200, "max_iter": 2000,
               "epochs": cluster_epochs(dataset, 2000), "kmeans_restarts": 20, "t_eval_pass": True}
        return {"paper": paper,
                "DECS-official": {**paper, "p": 1, "rho": 1.0, "recalibrate_bn": False},
                "DECS-paper": {**paper, "p": 2, "rho": 0.0},
                "cpu": cpu,
                "fast": fast}

    @classmethod
    def loss_curves(cls, config):
        """The seed's Figure 2 at the config's λ, p, α and (manual) threshold t, as three panels."""
        curves = figure2_curves(config.threshold, config.alpha, config.lam, config.p, n_points=101)
        a, b, c = curves["a"], curves["b"], curves["c"]
        last = len(a["fq2"]) - 1
        return [
            CurvePanel(f"(a) stability sq, λ = {config.lam:g}", "fq₁, determinacy to centroid 1 of 2",
                       {f"fq₂ = {a['fq2'][j]:g}": (a["fq1"], a["sq"][:, j]) for j in (0, last // 2, last)}),
            CurvePanel(f"(b) determinacy fq, p = {config.p}", "q, soft assignment",
                       {"fq = φₜ(q)": (b["q"], b["fq"])}, {f"t = {b['t']:.2f}": b["t"]}),
            CurvePanel(f"(c) between two centroids, α = {config.alpha:g}", "code z (centroids m₁ = −1, m₂ = +1)",
                       {"q to m₁": (c["z"], c["q1"]), "sq of the code": (c["z"], c["sq"])},
                       {"m₁": -1.0, "m₂": 1.0}),
        ]

    # -- optimisation --------------------------------------------------------------------------------
    def optimizer(self, model, phase):
        if phase == "pretrain":
            return super().optimizer(model, phase)
        # The decoder is discarded after pretraining (§a.5): only θ and M are optimised.
        return adam([*model.ae.encoder.parameters(), model.centroids], lr=self.config.lr)

    def init_clusters(self, model, x):
        # With BN momentum 0.01 the running statistics of a short pretraining have not converged; they keep
        # drifting in the cluster phase (train mode) and move the inference-mode codes even at lr 0.
        if self.config.recalibrate_bn:
            recalibrate_batch_norm(model.ae.encoder, x, transform=augment if self.config.augment else None)
        super().init_clusters(model, x)

    def pretrain_step(self, model, batch):
        x = augment(batch.x) if self.config.augment else batch.x
        return super().pretrain_step(model, batch._replace(x=x))

    def threshold(self, model, x: Tensor, q: Tensor) -> Tensor:
        """The batch's t: manual, Otsu of ``q``, or Otsu of an inference-mode pass on ``x`` (no gradient)."""
        c = self.config
        if not c.auto_threshold:
            return torch.tensor(c.threshold, dtype=q.dtype, device=q.device)
        if not c.t_eval_pass:
            return otsu_threshold(q)
        with torch.no_grad():
            was_training = model.training
            model.eval()
            q_eval = student_t_assign(model.ae.encode(x), model.centroids, c.alpha)
            model.train(was_training)
        return otsu_threshold(q_eval)

    def training_step(self, model, batch, phase):
        c = self.config
        x = augment(batch.x) if c.augment else batch.x
        q = student_t_assign(model.ae.encode(x), model.centroids, c.alpha)  # (n, K)
        t = self.threshold(model, x, q)
        self.t_sum += float(t)
        self.t_count += 1
        terms = decs_loss(q, t, c.lam, c.p, c.rho)
        return terms  # {"loss": L_c, "mean_sq", "var_sq"}: L_c = 1 − mean_sq − ρ·var_sq

    # -- per-epoch and per-step hooks ------------------------------------------------------------------
    def on_epoch_start(self, model, phase, epoch, x):
        if phase != "cluster":
            return {}
        c = self.config
        q, labels = assign_all(self, model, x)
        t = float(otsu_threshold(q)) if c.auto_threshold else c.threshold
        t_train = self.t_sum / self.t_count if self.t_count else float("nan")
        self.t_sum, self.t_count = 0.0, 0
        sizes = torch.bincount(labels, minlength=self.n_clusters)
        ratio = largest_share(sizes.cpu().numpy())
        if ratio > COLLAPSE_SHARE:
            log.warning("DECS epoch %d: the largest cluster holds %.1f× its expected share (sizes %s); "
                        "the stability loss has no balance term (spec §f.8)", epoch, ratio, sizes.tolist())
        return {"t": t, "t_train": t_train, "size_ratio": ratio}

    def before_step(self, model, step, x):
        c = self.config
        if step >= c.max_iter:
            return "all iterations done"
        if c.tol <= 0 or step % c.update_interval:
            return None
        return self.label_change.check(assign_all(self, model, x)[1], step, c.tol)

    def state_dict(self):
        return {**self.label_change.state_dict(), "t_sum": self.t_sum, "t_count": self.t_count}

    def load_state_dict(self, state):
        self.label_change.load_state_dict(state)
        self.t_sum, self.t_count = state["t_sum"], state["t_count"]

    def pretrain_signature(self):
        signature = super().pretrain_signature()
        if self.config.augment:  # without augmentation the pretraining is AE + k-means' own
            signature["augmentation"] = {"shift": SHIFT, "degrees": DEGREES, "fill": "border", "interp": "bilinear"}
        return signature
