"""User uploads: an ``.npz`` of arrays, a zip of class folders, or a zip of flat images.

Everything is checked in memory first; a refused upload raises ``DataError`` and writes nothing.
"""
from __future__ import annotations

import io
import logging
import re
import zipfile
from collections import Counter
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

import numpy as np
from PIL import Image, UnidentifiedImageError

from core.data.builtin import cache_dir, read_npz
from core.data.dataset import DataError, ImageDataset, from_pixels
from core.storage import atomic_save_npz

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class UploadLimits:
    max_files: int = 100_000
    max_bytes: int = 1 << 30          # uncompressed total
    max_pixels: int = 4096 * 4096     # per decoded image (Pillow's own bomb guard is larger)


@dataclass(frozen=True)
class UploadReport:
    n_images: int
    n_skipped: int
    labelled: bool
    image_shape: tuple[int, int, int]


def read_upload(filename: str, data: bytes, n_clusters: int = 10, limits: UploadLimits = UploadLimits(),
                size: tuple[int, int] | None = None) -> tuple[ImageDataset, UploadReport]:
    """Validate and decode an upload.

    Parameters
    ----------
    filename : the uploaded file's name; its suffix picks the reader (``.npz`` or ``.zip``).
    data : the file's bytes.
    n_clusters : K; fewer than 2·K samples are refused.
    size : (H, W) every image is resized to; default the most common size.
    """
    name = re.sub(r"[^A-Za-z0-9_-]+", "_", Path(filename).stem).strip("_") or "upload"
    suffix = Path(filename).suffix.lower()
    if suffix == ".npz":
        dataset, skipped = read_npz(io.BytesIO(data), name), 0
    elif suffix == ".zip":
        dataset, skipped = _read_zip(name, data, limits, size)
    else:
        raise DataError(f"{filename}: upload an .npz file or a .zip of images, not {suffix or 'a file without suffix'}")
    if len(dataset) < 2 * n_clusters:
        raise DataError(f"{filename} has {len(dataset)} samples; clustering into K={n_clusters} needs at least "
                        f"{2 * n_clusters}")
    return dataset, UploadReport(len(dataset), skipped, dataset.y is not None, dataset.shape)


def save_upload(dataset: ImageDataset, folder: Path | None = None) -> Path:
    """Write an accepted upload as an npz in the common format; returns the path to train on."""
    path = (folder or cache_dir() / "uploads") / f"{dataset.name}.npz"
    images = np.round(dataset.x * 255).astype(np.uint8)  # (N, C, H, W)
    images = images[:, 0] if images.shape[1] == 1 else images.transpose(0, 2, 3, 1)
    arrays = {"x": images}
    if dataset.y is not None:
        arrays.update(y=dataset.y, class_names=np.array(dataset.class_names))
    atomic_save_npz(path, **arrays)
    return path


def _read_zip(name: str, data: bytes, limits: UploadLimits, size) -> tuple[ImageDataset, int]:
    try:
        archive = zipfile.ZipFile(io.BytesIO(data))
        members = [m for m in archive.infolist() if not m.is_dir()]
    except (zipfile.BadZipFile, OSError) as err:
        raise DataError(f"the zip file is corrupt or not a zip ({err})") from err
    for member in members:
        path = PurePosixPath(member.filename.replace("\\", "/"))
        if path.is_absolute() or ".." in path.parts or re.match(r"^[A-Za-z]:", member.filename):
            raise DataError(f"refused: the zip member {member.filename!r} points outside the archive")
    members = [m for m in members if not any(p.startswith((".", "__MACOSX")) for p in PurePosixPath(m.filename).parts)]
    if len(members) > limits.max_files:
        raise DataError(f"refused: the zip holds {len(members)} files, more than the limit of {limits.max_files}")
    if sum(m.file_size for m in members) > limits.max_bytes:
        raise DataError(f"refused: the zip unpacks to more than {limits.max_bytes // 2**20} MiB")

    images, folders, skipped, budget = [], [], 0, limits.max_bytes
    for member in members:
        with archive.open(member) as handle:
            raw = handle.read(budget + 1)  # a member may lie about its size: never read past the budget
        budget -= len(raw)
        if budget < 0:
            raise DataError(f"refused: the zip unpacks to more than {limits.max_bytes // 2**20} MiB")
        image = _decode(raw, limits)
        if image is None:
            skipped += 1
            continue
        images.append(image)
        folders.append(PurePosixPath(member.filename).parts[:-1])
    if not images:
        raise DataError(f"no readable image in the zip ({skipped} files could not be read as images)")
    if skipped:
        log.info("skipped %d unreadable members", skipped)

    target = size or Counter(im.size[::-1] for im in images).most_common(1)[0][0]  # (H, W)
    colour = any(im.mode == "RGB" for im in images)
    pixels = np.stack([np.asarray(_resize(im, target, colour)) for im in images])  # (N, H, W[, 3])
    labels = _folder_labels(folders)
    return from_pixels(name, pixels, labels), skipped


def _decode(raw: bytes, limits: UploadLimits) -> Image.Image | None:
    try:
        image = Image.open(io.BytesIO(raw))
        if image.width * image.height > limits.max_pixels:
            return None
        image.load()
    except (UnidentifiedImageError, OSError, ValueError, Image.DecompressionBombError):
        return None
    if image.mode in ("L", "1", "I", "I;16", "F", "LA"):
        return image.convert("L")
    rgb = image.convert("RGB")
    channels = np.asarray(rgb)
    grey = (channels[..., 0] == channels[..., 1]).all() and (channels[..., 1] == channels[..., 2]).all()
    return rgb.convert("L") if grey else rgb


def _resize(image: Image.Image, target: tuple[int, int], colour: bool) -> Image.Image:
    image = image.convert("RGB" if colour else "L")
    height, width = target
    return image if image.size == (width, height) else image.resize((width, height), Image.BILINEAR)


def _folder_labels(folders: list[tuple[str, ...]]) -> list[str] | None:
    """Label = the class folder under a shared top folder; None when the images are flat."""
    common = 0
    while all(len(f) > common for f in folders) and len({f[common] for f in folders}) == 1:
        common += 1
    classes = [f[common] if len(f) > common else None for f in folders]
    if None in classes or len(set(classes)) < 2:
        return None
    return classes
