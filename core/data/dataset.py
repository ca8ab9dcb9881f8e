"""The in-memory image data set every other part of ClusterLab consumes."""
from __future__ import annotations

import hashlib
from dataclasses import dataclass, field

import numpy as np


class DataError(ValueError):
    """Input data that cannot be used; the message is written for the person who supplied it."""


@dataclass
class ImageDataset:
    """Images ``x`` float32 (N, C, H, W) in [0, 1], labels ``y`` int64 (N,) or None."""

    name: str
    x: np.ndarray
    y: np.ndarray | None = None
    class_names: list[str] = field(default_factory=list)

    def __post_init__(self):
        if self.x.ndim != 4 or self.x.dtype != np.float32:
            raise DataError(f"images must be float32 (N, C, H, W); got {self.x.dtype} {self.x.shape}")
        if self.y is not None and len(self.y) != len(self.x):
            raise DataError(f"{len(self.x)} images but {len(self.y)} labels")

    def __len__(self) -> int:
        return len(self.x)

    @property
    def shape(self) -> tuple[int, int, int]:
        return tuple(self.x.shape[1:])

    @property
    def n_classes(self) -> int | None:
        return None if self.y is None else len(np.unique(self.y))

    def fingerprint(self) -> str:
        """A content hash: what the pretrained-autoencoder cache is keyed by."""
        digest = hashlib.sha256()
        digest.update(str(self.x.shape).encode())
        digest.update(np.ascontiguousarray(self.x).tobytes())
        return digest.hexdigest()[:16]


def from_pixels(name: str, images: np.ndarray, labels: np.ndarray | None, class_names=None) -> ImageDataset:
    """(N, H, W) or (N, H, W, C) pixels (uint8 0–255 or floats 0–1) → an ImageDataset in [0, 1], channels first."""
    if images.ndim == 3:
        images = images[:, None]
    elif images.ndim == 4:
        images = images.transpose(0, 3, 1, 2)
    else:
        raise DataError(f"expected images shaped (N, H, W) or (N, H, W, C), got {images.shape}")
    x = images.astype(np.float32)
    if images.dtype == np.uint8 or x.max(initial=0.0) > 1.0:
        x /= 255.0
    if not np.isfinite(x).all() or x.min(initial=0.0) < 0.0 or x.max(initial=0.0) > 1.0:
        raise DataError("pixel values must lie in [0, 255] (integers) or [0, 1] (floats)")
    y = None
    names: list[str] = []
    if labels is not None:
        labels = np.asarray(labels)
        values, y = np.unique(labels, return_inverse=True)
        y = y.astype(np.int64)
        given = class_names is not None and len(class_names) == len(values)
        names = list(class_names) if given else [str(v) for v in values]
    return ImageDataset(name, np.ascontiguousarray(x), y, names)
