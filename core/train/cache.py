"""Pretrained autoencoders kept on disk, keyed by what determines them.

The key holds the data's content hash, the architecture, the pretraining settings and the seed, so a
second run that changes only a clustering knob (α, γ, λ) starts from the same autoencoder at once.
"""
from __future__ import annotations

import hashlib
import io
import json
import logging
from pathlib import Path

import torch

from core.data.builtin import cache_dir
from core.methods import get_method
from core.storage import atomic_torch_save

log = logging.getLogger(__name__)


class AutoencoderCache:
    def __init__(self, folder: str | Path | None = None):
        self.folder = Path(folder) if folder else cache_dir() / "autoencoders"

    def path(self, key: dict) -> Path:
        digest = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:24]
        return self.folder / f"{digest}.pt"

    def lock_path(self, key: dict) -> Path:
        """The file whose lock a process holds while it pretrains the entry ``key``."""
        return self.path(key).with_suffix(".lock")

    def load(self, key: dict, device: torch.device) -> dict | None:
        path = self.path(key)
        if not path.exists():
            return None
        try:
            return torch.load(io.BytesIO(path.read_bytes()), map_location=device, weights_only=True)
        except Exception as err:  # a damaged cache entry is only a cache miss
            log.warning("ignoring unreadable cache entry %s (%s)", path, err)
            return None

    def save(self, key: dict, state: dict) -> None:
        atomic_torch_save(self.path(key), state)


def pretrain_signature(config, n_clusters: int = 10) -> dict | None:
    """Everything but the data that determines a run's pretrained part, the cache key's other half
    (``config`` a ``RunConfig``); None when the method pretrains nothing. Runs of one data set with
    equal signatures share one cache entry: a sweep pretrains once per signature."""
    method_cls = get_method(config.method)
    if "pretrain" not in method_cls.phases or config.trainer.pretrain_epochs == 0:
        return None
    method = method_cls(config.params, n_clusters, config.seed)
    return {"seed": config.seed, "epochs": config.trainer.pretrain_epochs, "batch_size": config.trainer.batch_size,
            **method.pretrain_signature()}
