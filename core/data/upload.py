"""User uploads: an ``.npz`` of arrays, a zip of class folders, or a zip of flat images.

Everything is checked in memory first; a refused upload raises ``DataError`` and writes nothing.
"""
from __future__ import annotations

import contextlib
import io
import logging
import math
import re
import zipfile
import zlib
from collections import Counter
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

import numpy as np
from PIL import Image, UnidentifiedImageError

from core.data.builtin import cache_dir, read_npz
from core.data.dataset import DataError, ImageDataset, from_pixels
from core.data.limits import UploadLimits
from core.storage import atomic_save_npz

log = logging.getLogger(__name__)


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
        dataset, skipped = read_npz(io.BytesIO(data), name, limits=limits), 0
    elif suffix == ".zip":
        dataset, skipped = _read_zip(name, data, limits, size)
    else:
        raise DataError(f"{filename}: upload an .npz file or a .zip of images, not {suffix or 'a file without suffix'}")
    if len(dataset) < 2 * n_clusters:
        raise DataError(f"{filename} has {len(dataset)} samples; clustering into K={n_clusters} needs at least "
                        f"{2 * n_clusters}")
    return dataset, UploadReport(len(dataset), skipped, dataset.y is not None, dataset.shape)


def save_upload(dataset: ImageDataset, folder: Path | None = None) -> Path:
    """Write an accepted upload as an npz in the common format; returns the path to train on.

    Stored by content: ``<name>-<fingerprint>.npz``, the uploaded file's cleaned name a label only. A second
    upload of the same name with other content is another file, so it never changes the data of runs
    trained on the first; the same content again is the same file.
    """
    path = (folder or cache_dir() / "uploads") / f"{dataset.name}-{dataset.fingerprint()}.npz"
    if path.is_file():
        return path
    images = np.round(dataset.x * 255).astype(np.uint8)  # (N, C, H, W)
    images = images[:, 0] if images.shape[1] == 1 else images.transpose(0, 2, 3, 1)
    arrays = {"x": images}
    if dataset.y is not None:
        arrays.update(y=dataset.y, class_names=np.array(dataset.class_names))
    atomic_save_npz(path, **arrays)
    return path


GREY_MODES = ("L", "1", "I", "I;16", "F", "LA")  # decoded as one channel; every other mode as RGB


def _read_zip(name: str, data: bytes, limits: UploadLimits, size) -> tuple[ImageDataset, int]:
    """Members → images, in two passes: every image's header first (sizes summed against the limits),
    then the decoding, so that a zip of huge images is refused before one of them is decoded."""
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

    headers = {member.filename: _image_header(archive, member, limits) for member in members}
    refusal = limits.too_many_values(sum(math.prod(h) for h in headers.values() if h), "the zip's images")
    if refusal:
        raise DataError(refusal)
    images, folders, skipped, budget = [], [], 0, limits.max_bytes
    for member in members:
        image = None
        if headers[member.filename] is not None:
            raw = _member_bytes(archive, member, budget)
            budget -= len(raw)
            if budget < 0:
                raise DataError(f"refused: the zip unpacks to more than {limits.max_bytes // 2**20} MiB")
            image = _decode(raw, headers[member.filename])
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
    refusal = limits.too_many_values(len(images) * math.prod(target) * (3 if colour else 1),
                                     f"the zip's images, resized to {target[0]}×{target[1]},")
    if refusal:
        raise DataError(refusal)
    pixels = np.stack([np.asarray(_resize(im, target, colour)) for im in images])  # (N, H, W[, 3])
    labels = _folder_labels(folders)
    return from_pixels(name, pixels, labels), skipped


def _image_header(archive: zipfile.ZipFile, member: zipfile.ZipInfo, limits: UploadLimits) -> tuple[int, int, int] | None:
    """(height, width, channels) of a member from its image header alone; None if it is no image, or an
    image over ``limits.max_pixels`` (skipped like an unreadable file)."""
    with _damaged_member(member), archive.open(member) as handle:
        try:
            with Image.open(handle) as image:
                width, height, mode = image.width, image.height, image.mode
        except (UnidentifiedImageError, OSError, ValueError, EOFError, Image.DecompressionBombError):
            return None
    if width * height > limits.max_pixels:
        return None
    return height, width, 1 if mode in GREY_MODES else 3


def _member_bytes(archive: zipfile.ZipFile, member: zipfile.ZipInfo, budget: int) -> bytes:
    """A member's bytes, never more than ``budget`` + 1 (a member may lie about its size)."""
    with _damaged_member(member), archive.open(member) as handle:
        return handle.read(budget + 1)


@contextlib.contextmanager
def _damaged_member(member: zipfile.ZipInfo):
    """A damaged member (bad CRC, a size that does not match its data) refuses the whole zip."""
    try:
        yield
    except (zipfile.BadZipFile, zlib.error, EOFError) as err:
        raise DataError(f"the zip member {member.filename!r} is damaged ({err})") from err


def _decode(raw: bytes, header: tuple[int, int, int]) -> Image.Image | None:
    """The image in ``raw``, grey or RGB; None if it cannot be decoded or is not the image its header
    described when it was measured."""
    try:
        image = Image.open(io.BytesIO(raw))
        if (image.height, image.width) != header[:2]:
            return None
        image.load()
    except (UnidentifiedImageError, OSError, ValueError, Image.DecompressionBombError):
        return None
    if image.mode in GREY_MODES:
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
