"""k-means on raw pixels: the floor every deep method must beat."""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from core.config import Config, knob
from core.losses import student_t_assign
from core.methods.base import Method, kmeans_labels


@dataclass(frozen=True)
class KMeansConfig(Config):
    restarts: int = knob(20, min=1, max=50, step=1, help="k-means restarts; the best inertia wins")


class PixelCentroids(nn.Module):
    def __init__(self, n_clusters: int, n_features: int):
        super().__init__()
        self.register_buffer("centroids", torch.zeros(n_clusters, n_features))
        self.register_buffer("initialised", torch.tensor(False))


class KMeansPixels(Method):
    name = "kmeans"
    title = "k-means (pixels)"
    Config = KMeansConfig
    phases = ()
    published = {"usps": (0.668, 0.601, "DSCDAN seed table"), "mnist-test": (0.546, 0.501, "DSCDAN seed table"),
                 "mnist": (0.532, 0.500, "DSCDAN seed table"), "fashion-mnist": (0.474, 0.512, "DSCDAN seed table")}

    @classmethod
    def presets(cls, dataset):
        return {"paper": {}, "fast": {"restarts": 3}}

    def build(self, input_shape):
        return PixelCentroids(self.n_clusters, int(torch.Size(input_shape).numel()))

    def init_clusters(self, model, x):
        _, centres = kmeans_labels(x.flatten(1).cpu().numpy(), self.n_clusters, self.seed, self.config.restarts)
        model.centroids.copy_(torch.as_tensor(centres, dtype=torch.float32))
        model.initialised.fill_(True)

    def embed(self, model, x):
        return x.flatten(1)

    def assign(self, model, x):
        q = student_t_assign(x.flatten(1), model.centroids)
        return q, q.argmax(1)

    def centroids(self, model):
        return model.centroids if bool(model.initialised) else None
