"""AE+k-means: pretrain the autoencoder, then k-means on its latent codes (no fine-tuning)."""
from __future__ import annotations

from core.methods.base import AutoencoderMethod


class AEKMeans(AutoencoderMethod):
    name = "ae-kmeans"
    title = "AE + k-means"
    phases = ("pretrain",)
    published = {"usps": (0.709, 0.684, "DEC-keras README, 10 trials"), "mnist": (0.879, 0.807, "DEC-keras README"),
                 "fashion-mnist": (0.606, 0.637, "DEC-keras README")}

    @classmethod
    def presets(cls, dataset):
        return {"paper": {"pretrain_epochs": pretrain_epochs_paper(dataset)},
                "fast": {"batch_size": 64, "pretrain_epochs": 30, "kmeans_restarts": 5}}


def pretrain_epochs_paper(dataset: str) -> int:
    """DEC-keras' end-to-end pretraining budget (``dec_idec.md`` §c)."""
    if dataset.startswith(("mnist", "fashion")):
        return 300
    return 50 if dataset == "usps" else 200
