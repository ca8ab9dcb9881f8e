"""The method protocol every clustering method implements, and the shared autoencoder base.

The trainer (``core.train``) drives a method through its phases and never names one; a method never
imports the trainer. Adding a method is one file in this package plus one line in ``REGISTRY``.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import ClassVar, NamedTuple

import numpy as np
import torch
from sklearn.cluster import KMeans
from torch import Tensor, nn

from core.config import Config, knob
from core.losses import reconstruction_loss, student_t_assign
from core.models import adam, build_autoencoder

log = logging.getLogger(__name__)

PHASES = ("pretrain", "init", "cluster")


class Batch(NamedTuple):
    """One mini-batch: images and their row numbers in the full data (for per-sample targets)."""

    x: Tensor      # (B, C, H, W)
    index: Tensor  # (B,) int64, on the same device as x


@dataclass(frozen=True)
class CurvePanel:
    """One panel of a small-multiples plot: named lines over a common x, and labelled vertical marks.

    ``lines`` maps a legend name to its (x, y) arrays of equal length; ``marks`` maps a label to an x
    (a threshold, a centroid) drawn as a dotted vertical line.
    """

    title: str
    x_label: str
    lines: dict[str, tuple[np.ndarray, np.ndarray]]
    marks: dict[str, float] = field(default_factory=dict)


class Method:
    """Base class of the clustering methods.

    Subclasses set ``name``, ``title``, ``Config`` and ``phases`` and override what they need.
    ``phases`` lists the trained phases in order, a subset of ``("pretrain", "cluster")``; the
    trainer always runs ``init_clusters`` between them.
    """

    name: ClassVar[str]
    title: ClassVar[str]
    Config: ClassVar[type[Config]]
    phases: ClassVar[tuple[str, ...]] = ("pretrain", "cluster")
    published: ClassVar[dict[str, tuple[float, float, str]]] = {}  # data set → (ACC, NMI, source)
    # The scalars the method adds to its per-epoch events, as the app plots them: panel title → columns.
    diagnostics: ClassVar[dict[str, tuple[str, ...]]] = {}
    # Other code bases' state-dict names for the pretrained part, so their trained weights can start a run
    # (``core.train.init_weights``): a layout's name → {their dotted prefix: ours, or None for a tensor of
    # theirs with no counterpart here}.
    weight_layouts: ClassVar[dict[str, dict[str, str | None]]] = {}
    # What the method is known to do when clusters empty or merge, measured against its authors' code: the app
    # adds it to its collapse warning ("" when nothing is known).
    known_collapse: ClassVar[str] = ""
    # Teaching ("How it works" on the Train page): the objective as the spec writes it (LaTeX), each of its
    # symbols (LaTeX) → the config field whose slider sets it, three to five sentences on the idea and on
    # what the live panels show, and what the ``fast`` preset shows on digits (from bench/teaching.py).
    objective: ClassVar[str] = ""
    symbols: ClassVar[dict[str, str]] = {}
    explanation: ClassVar[str] = ""
    demo: ClassVar[str] = ""

    def __init__(self, config: Config, n_clusters: int, seed: int = 0):
        self.config = config
        self.n_clusters = n_clusters
        self.seed = seed

    # -- presets -------------------------------------------------------------------------------
    @classmethod
    def dataset_defaults(cls, dataset: str) -> dict:
        """Settings the reference code picks per data set; applied before any preset."""
        return {}

    @classmethod
    def presets(cls, dataset: str) -> dict[str, dict]:
        """Named override sets; keys are method-config or trainer-config field names."""
        return {"paper": {}, "fast": {}}

    @classmethod
    def loss_curves(cls, config: Config) -> list[CurvePanel]:
        """How the method's loss responds to its knobs, computed from ``config`` alone (no data, no
        model): panels the app redraws as the sliders move. No panels by default."""
        return []

    @classmethod
    def warnings(cls, metrics) -> list[str]:
        """Sentences the app shows beside a run's live charts, read from its metrics rows (a DataFrame)."""
        return []

    # -- model -------------------------------------------------------------------------------------
    def build(self, input_shape: tuple[int, int, int]) -> nn.Module:
        raise NotImplementedError

    def optimizer(self, model: nn.Module, phase: str) -> torch.optim.Optimizer:
        return adam(model.parameters(), lr=1e-3)

    def batch_size(self, phase: str, n_samples: int) -> int | None:
        """The method's own batch size for a phase of ``n_samples`` (None: the trainer's ``batch_size``)."""
        return None

    # -- phases ------------------------------------------------------------------------------------
    def pretrain_step(self, model: nn.Module, batch: Batch) -> dict[str, Tensor]:
        raise NotImplementedError

    def init_clusters(self, model: nn.Module, x: Tensor) -> None:
        """Set the cluster parameters from the whole data set ``x`` (N, C, H, W)."""

    def on_phase_start(self, model: nn.Module, phase: str, optimizer: torch.optim.Optimizer, epochs: int,
                       steps_per_epoch: int) -> None:
        """Hook when a trained phase starts or resumes: its optimizer and its length (for a learning-rate
        schedule set in ``before_step``)."""

    def on_epoch_start(self, model: nn.Module, phase: str, epoch: int, x: Tensor) -> dict[str, float]:
        """Hook before each epoch of a trained phase (target updates, centre updates on the whole
        data ``x``); returns extra scalars for the epoch's event."""
        return {}

    def on_epoch_end(self, model: nn.Module, phase: str, epoch: int) -> dict[str, float]:
        """Hook after each epoch's batches; returns scalars gathered over the epoch (pair counts,
        dual variables) for its event."""
        return {}

    def before_step(self, model: nn.Module, step: int, x: Tensor) -> str | None:
        """Per-iteration hook before each cluster-phase batch; return why to end the run here, or None."""
        return None

    def training_step(self, model: nn.Module, batch: Batch, phase: str) -> dict[str, Tensor]:
        """Return ``{"loss": total, <term>: value, ...}`` for one batch of the cluster phase."""
        raise NotImplementedError

    # -- read-outs ---------------------------------------------------------------------------------
    def embed(self, model: nn.Module, x: Tensor) -> Tensor:
        """Latent codes shown in Explore, (B, d)."""
        raise NotImplementedError

    def assign(self, model: nn.Module, x: Tensor) -> tuple[Tensor, Tensor]:
        """Soft assignments (B, K) and hard labels (B,)."""
        raise NotImplementedError

    def readouts(self, model: nn.Module, x: Tensor) -> dict[str, Tensor]:
        """Called before every evaluation with the whole data ``x``: refit what ``assign`` reads from
        (e.g. k-means centres on an embedding) and return other labelings (N,) of the data, which the
        trainer scores beside the main one as ``acc_<name>``, ``nmi_<name>``, ``ari_<name>``."""
        return {}

    def centroids(self, model: nn.Module) -> Tensor | None:
        """Cluster centres in the latent space of ``embed``, (K, d), or None before init."""
        return None

    # -- state that is not in the model (targets, previous labels) --------------------------------
    def state_dict(self) -> dict:
        return {}

    def load_state_dict(self, state: dict) -> None:
        pass

    # -- pretraining cache -------------------------------------------------------------------------
    def pretrained_part(self, model: nn.Module) -> nn.Module | None:
        """The sub-module that pretraining produces and the cache stores (None: no caching)."""
        return None

    def pretrain_signature(self) -> dict:
        """Everything besides data, seed and trainer settings that determines the pretrained part."""
        return {}


# ------------------------------------------------------------------------------------------------
# Autoencoder methods: pretrain an autoencoder on reconstruction, then k-means on its codes.
# ------------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class AutoencoderConfig(Config):
    autoencoder: str = knob("mlp", choices=("mlp", "conv"),
                            help="MLP D–500–500–2000–d (DEC) or the conv autoencoder of DECS")
    latent_dim: int = knob(10, symbol="d", min=2, max=64, step=1, help="size of the latent space")
    pretrain_lr: float = knob(1e-3, min=1e-4, max=1e-2, log=True,
                              help="Adam learning rate of autoencoder pretraining")
    kmeans_restarts: int = knob(20, min=1, max=50, step=1,
                                help="k-means restarts for the cluster initialisation")


class ClusterHead(nn.Module):
    """An autoencoder with a trainable (K, d) centroid matrix."""

    def __init__(self, autoencoder: nn.Module, n_clusters: int, latent_dim: int):
        super().__init__()
        self.ae = autoencoder
        self.centroids = nn.Parameter(torch.zeros(n_clusters, latent_dim))
        self.register_buffer("initialised", torch.tensor(False))


class AutoencoderMethod(Method):
    """Shared pieces of methods built on a pretrained autoencoder and latent centroids."""

    Config = AutoencoderConfig

    def build(self, input_shape):
        ae = build_autoencoder(self.config.autoencoder, input_shape, self.config.latent_dim)
        return ClusterHead(ae, self.n_clusters, self.config.latent_dim)

    def optimizer(self, model, phase):
        return adam(model.parameters(), lr=self.config.pretrain_lr)

    def pretrain_step(self, model, batch):
        x_hat = model.ae.decode(model.ae.encode(batch.x))
        loss = reconstruction_loss(batch.x, x_hat)
        return {"loss": loss, "recon": loss}

    def init_clusters(self, model, x):
        z = encode_all(self, model, x).cpu().numpy()
        _, centres = kmeans_labels(z, self.n_clusters, self.seed, self.config.kmeans_restarts)
        with torch.no_grad():
            model.centroids.copy_(torch.as_tensor(centres, dtype=torch.float32))
            model.initialised.fill_(True)

    def embed(self, model, x):
        return model.ae.encode(x)

    def assign(self, model, x):
        q = student_t_assign(model.ae.encode(x), model.centroids, getattr(self.config, "alpha", 1.0))
        return q, q.argmax(1)

    def centroids(self, model):
        return model.centroids.detach() if bool(model.initialised) else None

    def pretrained_part(self, model):
        return model.ae

    def pretrain_signature(self):
        c = self.config
        return {"autoencoder": c.autoencoder, "latent_dim": c.latent_dim, "pretrain_lr": c.pretrain_lr}


@torch.no_grad()
def encode_all(method: Method, model: nn.Module, x: Tensor, chunk: int = 4096) -> Tensor:
    """``method.embed`` over the whole data in eval mode, in chunks, (N, d)."""
    was_training = model.training
    model.eval()
    z = torch.cat([method.embed(model, x[i:i + chunk]) for i in range(0, len(x), chunk)])
    model.train(was_training)
    return z


def converged_message(changed: float, tol: float) -> str:
    """Why a tolerance rule ended a run, e.g. ``converged: 0.08% of labels changed (tolerance 0.10%)``."""
    return f"converged: {changed:.2%} of labels changed (tolerance {tol:.2%})"


class LabelChange:
    """DEC's stopping rule: the fraction of labels that changed between two checks falls below ``tol``.

    ``check`` records the labels and returns the stop reason, or None. The very first check only records;
    ``changed`` is NaN until a second check measures it.
    """

    def __init__(self):
        self.labels: Tensor | None = None  # (N,) labels at the last check
        self.changed = float("nan")

    def check(self, labels: Tensor, step: int, tol: float) -> str | None:
        converged = False
        if self.labels is not None:
            self.changed = (labels != self.labels).float().mean().item()
            converged = step > 0 and self.changed < tol
        self.labels = labels
        return converged_message(self.changed, tol) if converged else None

    # The checkpoint keys of the methods that held these two values themselves, so old runs still resume.
    def state_dict(self) -> dict:
        return {"labels": self.labels, "delta": self.changed}

    def load_state_dict(self, state: dict) -> None:
        self.labels, self.changed = state["labels"], state["delta"]


@torch.no_grad()
def assign_all(method: Method, model: nn.Module, x: Tensor, chunk: int = 4096) -> tuple[Tensor, Tensor]:
    """``method.assign`` over the whole data in eval mode, in chunks: (N, K), (N,)."""
    was_training = model.training
    model.eval()
    parts = [method.assign(model, x[i:i + chunk]) for i in range(0, len(x), chunk)]
    model.train(was_training)
    return torch.cat([p[0] for p in parts]), torch.cat([p[1] for p in parts])


def kmeans_labels(z: np.ndarray, k: int, seed: int, restarts: int = 20) -> tuple[np.ndarray, np.ndarray]:
    """k-means labels (N,) and centres (K, d) of ``z``."""
    km = KMeans(k, n_init=restarts, random_state=seed).fit(z)
    return km.labels_, km.cluster_centers_
