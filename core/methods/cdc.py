"""CDC (Trinh & Pham, MTAP 2025): correlation and affinity losses for deep clustering, spec ``cdc.md``.

Pretraining: ``L_AE = λ[L_cr(Z,X) + L_cr(Z,X')] + L_r``. Fine-tuning: ``L_DC = L_c + η L_a + β L_re`` with
``L_re = L_cr(Z,X) + L_cr(Z,X')``, one joint SGD step on encoder, decoder and centroids (Algorithm 1's
parameter groups follow from which loss touches which parameter), P on the whole data every h steps.

The official code's forms are the default: row-normalised correlation matrices with self-pairs, the
latent side sharpened by DEC's target transform, the affinity target not detached. ``paper_forms``
switches to eq. 5 (joint normalisation over i ≠ j, no sharpening, summed KL) for ``L_cr``.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from core.config import BELOW_ONE, NON_NEGATIVE, knob
from core.data import BUILTIN_SIZES
from core.losses import reconstruction_loss, squared_distances, student_t_assign
from core.methods.base import CurvePanel
from core.methods.dec import DEC, DECConfig
from core.models import sgd

CLIP = 1e-7  # Keras clips both KL arguments to [1e-7, 1]
PRETRAIN_MOMENTUM = 0.9  # the official code's SGD pretraining (Fashion-MNIST, Reuters, STL-10, CIFAR-10)


# ------------------------------------------------------------------------------------------------
# Pure loss functions
# ------------------------------------------------------------------------------------------------

def pairwise_kernel(v: Tensor, alpha: float = 1.0) -> Tensor:
    """Student-t kernel between all rows of ``v`` (m, n): ``(1 + ||v_i − v_j||²/α)^(−(α+1)/2)``, (m, m)."""
    return (1.0 + squared_distances(v, v) / alpha).pow(-(alpha + 1.0) / 2.0)


def correlation_rows(v: Tensor, alpha: float = 1.0) -> Tensor:
    """Code form of C: each row of the (m, m) kernel normalised, self-pairs included (κ_ii = 1)."""
    kernel = pairwise_kernel(v.flatten(1), alpha)  # (m, m)
    return kernel / kernel.sum(1, keepdim=True)


def correlation_joint(v: Tensor, alpha: float = 1.0) -> Tensor:
    """Paper form of C (eq. 5): the kernel over pairs i ≠ j normalised by its total; zero diagonal, (m, m)."""
    kernel = pairwise_kernel(v.flatten(1), alpha)
    kernel = kernel * (1.0 - torch.eye(len(v), device=v.device, dtype=v.dtype))
    return kernel / kernel.sum()


def sharpen(a: Tensor) -> Tensor:
    """DEC's target transform on a row-stochastic (m, n) matrix, column sums over its rows; keeps gradients."""
    weight = a.pow(2) / a.sum(0)
    return weight / weight.sum(1, keepdim=True)


def kl_rows(a: Tensor, b: Tensor) -> Tensor:
    """``(1/m) Σ_i Σ_j a_ij log(a_ij / b_ij)`` with both sides clipped to [1e-7, 1]; a, b are (m, n)."""
    a, b = a.clamp(CLIP, 1.0), b.clamp(CLIP, 1.0)
    return (a * (a.log() - b.log())).sum(1).mean()


def kl_joint(a: Tensor, b: Tensor) -> Tensor:
    """``Σ_ij a_ij log(a_ij / b_ij)`` over all entries (a KL between two joint distributions)."""
    a, b = a.clamp(CLIP, 1.0), b.clamp(CLIP, 1.0)
    return (a * (a.log() - b.log())).sum()


def correlation_loss(z: Tensor, x: Tensor, paper_forms: bool = False, alpha: float = 1.0) -> Tensor:
    """``L_cr(Z, X)`` (eq. 6): how far the latent pair structure is from the input's.

    Parameters
    ----------
    z : (m, d) codes; x : (m, ...) inputs or reconstructions.
    paper_forms : False → code form ``KL(S(C_Z^row) ‖ C_X^row)``; True → eq. 5/6 ``KL(C_Z ‖ C_X)`` jointly.
    """
    if paper_forms:
        return kl_joint(correlation_joint(z, alpha), correlation_joint(x, alpha))
    return kl_rows(sharpen(correlation_rows(z, alpha)), correlation_rows(x, alpha))


def affinity_loss(q: Tensor, z: Tensor, detach_target: bool = False, alpha: float = 1.0) -> Tensor:
    """``L_a`` (eq. 11): ``KL(S(C_Q) ‖ C_Z)``, C_Q over the batch's soft assignments q (m, K), z is (m, d).

    The code does not detach the target; ``detach_target`` is the paper's "target labels" reading.
    """
    target = sharpen(correlation_rows(q, alpha))  # (m, m)
    if detach_target:
        target = target.detach()
    return kl_rows(target, correlation_rows(z, alpha))


def pair_curves(distances: np.ndarray, alpha: float = 1.0, input_distance: float = 1.0,
                far_centre: float = 3.0) -> dict[str, np.ndarray]:
    """CDC's pair losses for a batch of two codes ``z = (0, r)`` in 1-D, one r per entry of ``distances``.

    ``corr``: ``correlation_loss(z, x)`` (code form) against two inputs at ``input_distance``; ``affinity``:
    ``affinity_loss(q, z)`` with q the Student-t assignment to centroids at 0 and ``far_centre``. Both (n,).
    """
    x = torch.tensor([[0.0], [input_distance]], dtype=torch.float64)
    centres = torch.tensor([[0.0], [far_centre]], dtype=torch.float64)
    corr, affinity = [], []
    for r in distances:
        z = torch.tensor([[0.0], [float(r)]], dtype=torch.float64)
        corr.append(correlation_loss(z, x, alpha=alpha).item())
        affinity.append(affinity_loss(student_t_assign(z, centres, alpha), z, alpha=alpha).item())
    return {"r": np.asarray(distances, dtype=float), "corr": np.array(corr), "affinity": np.array(affinity)}


def cdc_panels(config) -> list[CurvePanel]:
    curves = pair_curves(np.linspace(0.0, 4.0, 81), config.alpha)
    r, corr, affinity = curves["r"], curves["corr"], curves["affinity"]
    x_label = "distance r between the two codes (inputs 1 apart; centroids at 0 and 3)"
    return [CurvePanel("pair losses of two codes", x_label,
                       {"L_cr(Z, X)": (r, corr), "L_a": (r, affinity)}, {"inputs' distance": 1.0}),
            CurvePanel(f"as weighted: λ = {config.lam:g}, η = {config.eta:g}, β = {config.beta:g}", x_label,
                       {"λ·[L_cr(Z,X) + L_cr(Z,X′)] (pretraining)": (r, config.lam * 2 * corr),
                        "η·L_a (fine-tuning)": (r, config.eta * affinity),
                        "β·L_re (fine-tuning)": (r, config.beta * 2 * corr)})]


# ------------------------------------------------------------------------------------------------
# The method
# ------------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class CDCConfig(DECConfig):
    pretrain_lr: float = knob(1e-3, min=1e-4, max=1.0, log=True,
                              help="learning rate of autoencoder pretraining (Adam's, or SGD's with momentum 0.9)")
    pretrain_optimizer: str = knob("adam", choices=("adam", "sgd"),
                                   help="optimiser of autoencoder pretraining; the official code uses SGD on "
                                        "Fashion-MNIST and Adam on the data sets it has no schedule for")
    lam: float = knob(1e-3, symbol="λ", min=1e-6, max=1.0, log=True,
                      help="weight of the correlation losses in pretraining (L_AE = λ·L_cr + L_r)", limits=NON_NEGATIVE)
    eta: float = knob(0.75, symbol="η", min=0.0, max=1.0, step=0.05,
                      help="weight of the affinity loss L_a between the assignments' and the codes' pair structure")
    beta: float = knob(1e-3, symbol="β", min=1e-6, max=1.0, log=True,
                       help="weight of the correlation regulariser L_re in fine-tuning", limits=NON_NEGATIVE)
    update_interval: int = knob(50, symbol="h", min=10, max=500, step=10,
                                help="iterations between recomputing the target P on the whole data")
    tol: float = knob(0.0, symbol="tol", min=0.0, max=0.01, step=0.0005,
                      help="CDC runs all T iterations (0); above 0, stop when fewer labels change", limits=BELOW_ONE)
    max_iter: int = knob(5000, symbol="T", min=100, max=20000, step=100, help="fine-tuning iterations")
    paper_forms: bool = knob(False, help="use the paper's eq. 5 correlation (joint, no self-pairs, no sharpening)")
    detach_affinity_target: bool = knob(False, help="stop gradients through the affinity target S(C_Q)")


class CDC(DEC):
    name = "cdc"
    title = "CDC"
    Config = CDCConfig
    published = {"fashion-mnist": (0.649, 0.645, "CDC paper Table 2, mean of 10")}
    objective = (r"\begin{gathered}L_{AE}=\lambda\,[L_{cr}(Z,X)+L_{cr}(Z,X')]+L_r\\"
                 r"L_{DC}=L_c+\eta\,L_a+\beta\,L_{re},\quad L_{re}=L_{cr}(Z,X)+L_{cr}(Z,X')\\"
                 r"L_{cr}(Z,X)=\mathrm{KL}\big(\mathcal S(C_Z)\Vert C_X\big),\quad "
                 r"L_a=\mathrm{KL}\big(\mathcal S(C_Q)\Vert C_Z\big)\end{gathered}")
    symbols = {r"\lambda": "lam", r"\eta": "eta", r"\beta": "beta"}
    explanation = (
        "CDC is DEC with pair losses: C_V is the matrix of Student-t similarities between the batch's vectors, "
        "one row per sample, and 𝒮 sharpens it like DEC's target. The correlation loss L_cr asks the codes to "
        "keep the neighbourhoods of the images (weighted by λ in pretraining, β in fine-tuning); the affinity "
        "loss L_a (weight η) asks codes assigned alike to sit close together. The panels show both against the "
        "distance between two codes: L_cr is lowest near the inputs' own distance, L_a falls once the second "
        "code has joined the other centroid's cluster. While it trains, the loss panel shows the cluster, "
        "affinity and regulariser terms; a failure looks like DEC's, clusters merging in the sizes chart.")
    demo = ("Fast demo on digits (seed 0, `bench/teaching.py`): ACC 0.803, NMI 0.804, against 0.792 for k-means on "
            "the pixels: it shows learning; about two minutes.")

    @classmethod
    def dataset_defaults(cls, dataset):
        if dataset.startswith("fashion"):
            return {"batch_size": 64, "pretrain_epochs": 100, "update_interval": 100,
                    "pretrain_optimizer": "sgd", "pretrain_lr": 0.1}
        return {"batch_size": 64, "pretrain_epochs": 30, "update_interval": 50}

    @classmethod
    def presets(cls, dataset):
        return {"paper": {"max_iter": 5000, "epochs": 2000},
                "paper-equations": {"paper_forms": True, "detach_affinity_target": True, "epochs": 2000},
                # §g's CPU run: 20 pretraining epochs at batch 64 on the 70,000-image sets, 12 minutes a seed on
                # one of two CPU cores (the code's 100 on Fashion-MNIST: 39), then all T = 5000 iterations.
                "cpu": {"pretrain_epochs": 20 if BUILTIN_SIZES.get(dataset, 0) >= 70000 else 30},
                "fast": {"pretrain_epochs": 30, "epochs": 30, "max_iter": 1000, "update_interval": 30,
                         "kmeans_restarts": 5}}

    @classmethod
    def loss_curves(cls, config):
        return cdc_panels(config)

    @classmethod
    def ablations(cls) -> dict[str, dict]:
        """The seed's Table 3 columns as overrides; ``max_iter`` 0 reports the k-means init itself."""
        return {"AE + L_r": {"lam": 0.0, "max_iter": 0},
                "AE + L_AE (AE*)": {"max_iter": 0},
                "AE* + L_c": {"eta": 0.0, "beta": 0.0},
                "AE* + L_c + L_a": {"beta": 0.0},
                "AE* + L_DC": {}}

    # Table 3 of the seed, ACC / NMI, in the order of ``ablations``.
    published_ablation = {"fashion-mnist": [(0.564, 0.590), (0.601, 0.581), (0.611, 0.640), (0.631, 0.643),
                                            (0.649, 0.645)]}

    def optimizer(self, model, phase):
        c = self.config
        if phase == "pretrain" and c.pretrain_optimizer == "sgd":
            return sgd(model.parameters(), lr=c.pretrain_lr, momentum=PRETRAIN_MOMENTUM)
        return super().optimizer(model, phase)

    def pretrain_step(self, model, batch):
        c = self.config
        z = model.ae.encode(batch.x)
        x_hat = model.ae.decode(z)
        recon = reconstruction_loss(batch.x, x_hat)
        corr = (correlation_loss(z, batch.x, c.paper_forms, c.alpha)
                + correlation_loss(z, x_hat, c.paper_forms, c.alpha))
        return {"loss": recon + c.lam * corr, "recon": recon, "corr": corr}

    def training_step(self, model, batch, phase):
        c = self.config
        z = model.ae.encode(batch.x)
        q = student_t_assign(z, model.centroids, c.alpha)  # (m, K)
        cluster = kl_rows(self.target[batch.index], q)
        affinity = affinity_loss(q, z, c.detach_affinity_target, c.alpha)
        regulariser = (correlation_loss(z, batch.x, c.paper_forms, c.alpha)
                       + correlation_loss(z, model.ae.decode(z), c.paper_forms, c.alpha))
        return {"loss": cluster + c.eta * affinity + c.beta * regulariser,
                "cluster": cluster, "affinity": affinity, "regulariser": regulariser}

    def pretrain_signature(self):
        c = self.config
        return {**super().pretrain_signature(), "method": "cdc", "lam": c.lam, "paper_forms": c.paper_forms,
                "alpha": c.alpha, "pretrain_optimizer": c.pretrain_optimizer}
