"""Image tiles for people to look at: the per-class preview of a data set, the images of a selection.

Pure NumPy, no drawing library: the pages hand the returned uint8 arrays to ``st.image``.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from core.data import ImageDataset

MIN_TILE_SIDE = 48  # digits are 8×8: enlarged by whole pixels so the browser does not blur them


def to_display(images: np.ndarray, min_side: int = MIN_TILE_SIDE) -> np.ndarray:
    """(N, C, H, W) floats in [0, 1] → (N, H', W', 3) uint8, enlarged by an integer factor to ≥ ``min_side``."""
    factor = max(1, -(-min_side // max(images.shape[2], 1)))  # ceil division
    pixels = np.round(np.clip(images, 0.0, 1.0) * 255).astype(np.uint8)
    pixels = pixels.transpose(0, 2, 3, 1)  # (N, H, W, C)
    if pixels.shape[-1] == 1:
        pixels = np.repeat(pixels, 3, axis=-1)
    if factor > 1:
        pixels = pixels.repeat(factor, axis=1).repeat(factor, axis=2)
    return pixels


def mosaic(images: np.ndarray, columns: int, pad: int = 2, min_side: int = MIN_TILE_SIDE) -> np.ndarray:
    """Lay (N, C, H, W) images out in a grid of ``columns``; returns one (H', W', 3) uint8 picture."""
    tiles = to_display(images, min_side)
    n, height, width, _ = tiles.shape
    rows = max(1, -(-n // columns))
    canvas = np.full((rows * (height + pad) + pad, columns * (width + pad) + pad, 3), 255, np.uint8)
    for i, tile in enumerate(tiles):
        r, c = divmod(i, columns)
        top, left = pad + r * (height + pad), pad + c * (width + pad)
        canvas[top:top + height, left:left + width] = tile
    return canvas


@dataclass(frozen=True)
class PreviewRow:
    """One row of the data preview: a class (or "random sample") and a strip of its images."""

    title: str
    count: int
    picture: np.ndarray  # (H, W, 3) uint8


def class_preview(dataset: ImageDataset, per_class: int = 12, seed: int = 0,
                  unlabelled_rows: int = 4) -> list[PreviewRow]:
    """A strip of random images per class, or a few random strips when the data has no labels."""
    rng = np.random.default_rng(seed)
    if dataset.y is None:
        n = min(len(dataset), per_class * unlabelled_rows)
        chosen = rng.choice(len(dataset), n, replace=False)
        return [PreviewRow("random sample (no labels)", len(dataset),
                           mosaic(dataset.x[np.sort(chosen)], per_class))]
    rows = []
    for label in np.unique(dataset.y):
        members = np.flatnonzero(dataset.y == label)
        chosen = np.sort(rng.choice(members, min(per_class, len(members)), replace=False))
        name = dataset.class_names[label] if label < len(dataset.class_names) else str(label)
        rows.append(PreviewRow(name, len(members), mosaic(dataset.x[chosen], per_class)))
    return rows
