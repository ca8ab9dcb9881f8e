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
        """A hash of the content (images, labels, class names): the name an upload is stored under, what a run
        records so that resuming it on other data is refused, and what the pretrained-autoencoder cache is
        keyed by."""
        digest = hashlib.sha256()
        digest.update(str(self.x.shape).encode())
        digest.update(np.ascontiguousarray(self.x).tobytes())
        if self.y is not None:
            digest.update(np.ascontiguousarray(self.y).tobytes())
            digest.update("\0".join(self.class_names).encode())
        return digest.hexdigest()[:16]


def from_pixels(name: str, images: np.ndarray, labels: np.ndarray | None, class_names=None) -> ImageDataset:
    """(N, H, W) or (N, H, W, C) pixels (uint8 0–255 or floats 0–1) → an ImageDataset in [0, 1], channels first.

    The edge every reader passes through. C is 1 (grey), 3 (RGB) or 4 (RGBA: the alpha channel is dropped,
    as for images in a zip). Labels follow ``label_classes``.
    """
    images = np.asarray(images)
    if images.ndim not in (3, 4):
        raise DataError(f"expected images shaped (N, H, W) or (N, H, W, C), got {images.shape}")
    if 0 in images.shape:
        raise DataError(f"images shaped {images.shape} hold no pixels: every dimension must be at least 1")
    if images.dtype.kind not in "uif":
        raise DataError(f"pixels must be numbers, got {images.dtype}")
    if images.ndim == 3:
        images = images[:, None]
    else:
        if images.shape[3] not in (1, 3, 4):
            raise DataError(f"images shaped (N, H, W, C) need C = 1 (grey), 3 (RGB) or 4 (RGBA), channels last; "
                            f"got {images.shape}")
        images = images[..., :3].transpose(0, 3, 1, 2)
    x = images.astype(np.float32)
    if images.dtype == np.uint8 or x.max(initial=0.0) > 1.0:
        x /= 255.0
    if not np.isfinite(x).all() or x.min(initial=0.0) < 0.0 or x.max(initial=0.0) > 1.0:
        raise DataError("pixel values must lie in [0, 255] (integers) or [0, 1] (floats)")
    y, names = (None, []) if labels is None else label_classes(labels, len(x), class_names)
    return ImageDataset(name, np.ascontiguousarray(x), y, names)


def label_classes(labels, n_images: int, class_names=None) -> tuple[np.ndarray, list[str]]:
    """Labels of any kind → class numbers 0..C-1 (int64, (N,)) and the class names.

    Integers, whole or fractional floats and strings are all class names: the classes are the distinct
    values in sorted order (strings alphabetically). ``class_names``, when it has one name per class,
    names them instead. Refused: not one label per image ((N,) or (N, 1)), a missing label (NaN or
    infinite), and a single class (one class measures nothing: leave ``y`` out to cluster unlabelled).
    """
    labels = np.asarray(labels)
    if labels.ndim == 2 and labels.shape[1] == 1:
        labels = labels[:, 0]
    if labels.shape != (n_images,):
        raise DataError(f"y must hold one label per image, shape ({n_images},); got {labels.shape}")
    if labels.dtype == object:  # Python objects (e.g. from pandas): the dtype their values share, if any
        labels = np.asarray(labels.tolist())
    if labels.dtype.kind not in "biufUS":
        raise DataError(f"labels must be numbers or strings, got {labels.dtype}")
    if labels.dtype.kind == "S":
        labels = labels.astype(str)
    if labels.dtype.kind == "f" and not np.isfinite(labels).all():
        missing = int((~np.isfinite(labels)).sum())
        raise DataError(f"y has {missing} missing (NaN or infinite) labels: label every image, or leave y out to "
                        "cluster the images unlabelled")
    values, y = np.unique(labels, return_inverse=True)
    if len(values) < 2:
        raise DataError(f"y holds a single class ({values[0]}); labels of one class measure nothing: leave y out "
                        "to cluster the images unlabelled")
    given = class_names is not None and len(class_names) == len(values)
    return y.astype(np.int64), list(class_names) if given else [str(v) for v in values]
