"""DEC (Xie et al., ICML 2016): self-training on the sharpened target P, spec ``dec_idec.md``."""
from __future__ import annotations

from dataclasses import dataclass

import torch

from core.config import BELOW_ONE, knob
from core.losses import kl_clustering_loss, student_t_assign, target_distribution
from core.methods.ae_kmeans import pretrain_epochs_paper
from core.methods.base import AutoencoderConfig, AutoencoderMethod, LabelChange, assign_all
from core.models import sgd

# A demo budget: small batches give the autoencoder enough steps on small sets such as digits.
FAST = {"batch_size": 64, "pretrain_epochs": 30, "epochs": 30, "update_interval": 30, "kmeans_restarts": 5}


@dataclass(frozen=True)
class DECConfig(AutoencoderConfig):
    alpha: float = knob(1.0, symbol="α", min=0.5, max=2.0, step=0.1,
                        help="degrees of freedom of the Student-t kernel between codes and centroids")
    update_interval: int = knob(140, symbol="T", min=1, max=500, step=1,
                                help="iterations between recomputing the target P on the whole data")
    tol: float = knob(0.001, symbol="tol", min=0.0, max=0.01, step=0.0005,
                      help="stop when fewer than this fraction of labels change between target updates", limits=BELOW_ONE)
    max_iter: int = knob(20000, min=1000, max=20000, step=1000, help="cap on clustering iterations")
    lr: float = knob(0.01, symbol="lr", min=1e-4, max=0.1, log=True, help="SGD learning rate of the clustering phase")
    momentum: float = knob(0.9, min=0.0, max=0.99, step=0.01, help="SGD momentum of the clustering phase", limits=BELOW_ONE)


class DEC(AutoencoderMethod):
    name = "dec"
    title = "DEC"
    Config = DECConfig
    published = {"usps": (0.762, 0.767, "DSCDAN seed table"), "mnist-test": (0.856, 0.830, "DSCDAN seed table"),
                 "mnist": (0.863, 0.834, "DSCDAN seed table"), "fashion-mnist": (0.518, 0.546, "DSCDAN seed table")}

    def __init__(self, config, n_clusters, seed=0):
        super().__init__(config, n_clusters, seed)
        self.target: torch.Tensor | None = None       # (N, K) P, fixed between updates
        self.label_change = LabelChange()  # argmax Q at each update

    @classmethod
    def dataset_defaults(cls, dataset):
        return {"update_interval": 30 if dataset == "usps" else 140}

    @classmethod
    def presets(cls, dataset):
        return {"paper": {"pretrain_epochs": pretrain_epochs_paper(dataset), "epochs": 2000},
                "fast": FAST}

    def optimizer(self, model, phase):
        if phase == "pretrain":
            return super().optimizer(model, phase)
        return sgd(model.parameters(), lr=self.config.lr, momentum=self.config.momentum)

    def before_step(self, model, step, x):
        if step >= self.config.max_iter:
            return "all iterations done"
        if step % self.config.update_interval:
            return None
        q, labels = assign_all(self, model, x)
        self.target = target_distribution(q)
        return self.label_change.check(labels, step, self.config.tol)

    def cluster_terms(self, model, batch):
        """Codes (B, d) and the KL term of one batch."""
        z = model.ae.encode(batch.x)
        q = student_t_assign(z, model.centroids, self.config.alpha)  # (B, K)
        return z, kl_clustering_loss(self.target[batch.index], q)

    def training_step(self, model, batch, phase):
        _, kl = self.cluster_terms(model, batch)
        return {"loss": kl, "kl": kl}

    def state_dict(self):
        return {"target": self.target, **self.label_change.state_dict()}

    def load_state_dict(self, state):
        self.target = state["target"]
        self.label_change.load_state_dict(state)
