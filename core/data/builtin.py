"""Built-in data sets: scikit-learn's digits (always offline) and four benchmark sets.

Benchmark sets are read from ``$CLUSTERLAB_DATA/<file>.npz`` (the format of ``shared/data``: ``x`` uint8
(N, H, W), ``y``, optional ``is_test``), then from the user cache, and only then downloaded once with
``sklearn.datasets.fetch_openml`` and cached in that same format.
"""
from __future__ import annotations

import io
import logging
import math
import os
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from core.data.dataset import DataError, ImageDataset, from_pixels
from core.data.limits import UploadLimits
from core.storage import atomic_save_npz

log = logging.getLogger(__name__)

FASHION_CLASSES = ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
                   "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"]


@dataclass(frozen=True)
class Builtin:
    files: tuple[str, ...]      # accepted file names, first one is what the cache writes
    openml: str | None          # fetch_openml name
    side: int
    test_only: bool = False     # keep only the official test split
    class_names: tuple[str, ...] | None = None


BUILTINS: dict[str, Builtin | None] = {
    "digits": None,
    "usps": Builtin(("usps.npz",), "usps", 16),
    "mnist": Builtin(("mnist.npz",), "mnist_784", 28),
    "mnist-test": Builtin(("mnist.npz",), "mnist_784", 28, test_only=True),
    "fashion-mnist": Builtin(("fashion_mnist.npz", "fashion-mnist.npz"), "Fashion-MNIST", 28,
                             class_names=tuple(FASHION_CLASSES)),
}

# Images per built-in set: presets scale their budgets with it before the data is loaded.
BUILTIN_SIZES = {"digits": 1797, "usps": 9298, "mnist": 70000, "mnist-test": 10000, "fashion-mnist": 70000}


def builtin_side(name: str) -> int | None:
    """The image side of a built-in set (digits: 8), None for any other name; presets scale per-step costs
    with it before the data is loaded."""
    spec = BUILTINS.get(name)
    return spec.side if spec else 8 if name == "digits" else None


def small_builtin(name: str) -> bool:
    """A built-in set of under 5,000 images (digits), where demo presets take small batches and more epochs;
    False for uploads, whose size presets do not know."""
    return BUILTIN_SIZES.get(name, 10 ** 9) < 5000


def cache_dir() -> Path:
    return Path(os.environ.get("CLUSTERLAB_CACHE", Path.home() / ".cache" / "clusterlab"))


def load_dataset(name: str, data_dir: str | os.PathLike | None = None) -> ImageDataset:
    """Load a built-in data set by name, or any ``.npz`` file by path.

    Parameters
    ----------
    name : ``digits``, ``usps``, ``mnist``, ``mnist-test``, ``fashion-mnist`` or a path to an ``.npz``.
    data_dir : folder searched first; default ``$CLUSTERLAB_DATA``.
    """
    if name == "digits":
        return _digits()
    if name.endswith(".npz"):
        return read_npz(Path(name), Path(name).stem)
    spec = BUILTINS.get(name)
    if spec is None:
        raise DataError(f"unknown data set {name!r}; built-ins are {', '.join(BUILTINS)} (or a path to an .npz)")
    path = _find(spec, data_dir)
    if path is None:
        path = _download(name, spec)
    data = read_npz(path, name, test_only=spec.test_only)
    if spec.class_names:
        data.class_names = list(spec.class_names)
    return data


def _digits() -> ImageDataset:
    from sklearn.datasets import load_digits
    bunch = load_digits()
    images = (bunch.images / 16.0).astype(np.float32)  # (1797, 8, 8), values 0..16
    return from_pixels("digits", images, bunch.target, [str(t) for t in bunch.target_names])


NPZ_ARRAYS = ("x", "y", "is_test", "class_names")  # what an npz may hold; other members are never read


def read_npz(source: Path | io.BytesIO, name: str, test_only: bool = False,
             limits: UploadLimits = UploadLimits()) -> ImageDataset:
    """Read ``x`` (and ``y``, ``is_test``, ``class_names``) from an npz file or buffer; never unpickles.

    The arrays' headers are checked against ``limits`` before any array is read.
    """
    shown = getattr(source, "name", f"{name}.npz")
    try:
        with zipfile.ZipFile(source) as archive:
            members = {m.filename.removesuffix(".npy"): m for m in archive.infolist() if m.filename.endswith(".npy")}
            members = {key: members[key] for key in NPZ_ARRAYS if key in members}
            headers = {key: _npy_header(archive, member) for key, member in members.items()}
            check_npz_size(headers, limits, shown)
            arrays = {}
            for key, member in members.items():
                with archive.open(member) as handle:
                    arrays[key] = np.lib.format.read_array(handle, allow_pickle=False)
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as err:
        if isinstance(err, DataError):
            raise
        raise DataError(f"{shown} is not a readable .npz file of plain arrays ({err})") from err
    if "x" not in arrays:
        raise DataError(f"{shown} has no array 'x' (found: {', '.join(arrays) or 'nothing'})")
    x, y, is_test = arrays["x"], arrays.get("y"), arrays.get("is_test")
    if x.ndim == 2 and x.shape[1] and round(x.shape[1] ** 0.5) ** 2 == x.shape[1]:  # flattened square images
        side = round(x.shape[1] ** 0.5)
        x = x.reshape(len(x), side, side)
    if test_only:
        if is_test is None:
            raise DataError(f"{shown} has no 'is_test' array to take the test split from")
        if is_test.dtype != bool or is_test.shape != x.shape[:1]:
            raise DataError(f"{shown}: 'is_test' must be one True/False per image, got {is_test.dtype} {is_test.shape}")
        x, y = x[is_test], (None if y is None else y[is_test])
    names = arrays.get("class_names")
    return from_pixels(name, x, y, None if names is None else [str(n) for n in names])


def _npy_header(archive: zipfile.ZipFile, member: zipfile.ZipInfo) -> tuple[tuple[int, ...], np.dtype]:
    """Shape and dtype of one ``.npy`` member, from its header alone (nothing of the array is read)."""
    with archive.open(member) as handle:
        version = np.lib.format.read_magic(handle)
        read_header = np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
        shape, _, dtype = read_header(handle)
    return tuple(shape), dtype


def check_npz_size(headers: dict[str, tuple[tuple[int, ...], np.dtype]], limits: UploadLimits, shown: str) -> None:
    """Refuse an npz whose arrays would decode to more than ``limits`` allow (a decompression bomb)."""
    declared = sum(math.prod(shape) * dtype.itemsize for shape, dtype in headers.values())
    if declared > limits.max_bytes:
        raise DataError(f"refused: the arrays of {shown} unpack to {declared / 2**20:,.0f} MiB, more than the "
                        f"limit max_bytes = {limits.max_bytes / 2**20:,.0f} MiB")
    if "x" in headers:
        refusal = limits.too_many_values(math.prod(headers["x"][0]), f"the images of {shown}")
        if refusal:
            raise DataError(refusal)


def _find(spec: Builtin, data_dir) -> Path | None:
    folders = [Path(d) for d in (data_dir, os.environ.get("CLUSTERLAB_DATA")) if d]
    folders.append(cache_dir() / "data")
    for folder in folders:
        for file in spec.files:
            if (folder / file).is_file():
                return folder / file
    return None


def _download(name: str, spec: Builtin) -> Path:
    from sklearn.datasets import fetch_openml
    target = cache_dir() / "data" / spec.files[0]
    log.info("downloading %s from OpenML (%s) into %s", name, spec.openml, target)
    try:
        bunch = fetch_openml(spec.openml, as_frame=False, parser="liac-arff", data_home=str(cache_dir() / "openml"))
    except Exception as err:  # no network, OpenML down: the person needs to know where to put the file
        raise DataError(
            f"{name} is not available offline and could not be downloaded ({err.__class__.__name__}). "
            f"Put {spec.files[0]} in the folder named by $CLUSTERLAB_DATA, or into {target.parent}.") from err
    x = np.asarray(bunch.data, dtype=np.float32)
    if x.min() < 0:  # OpenML's USPS is scaled to [-1, 1]
        x = (x + 1.0) / 2.0
    if x.max() > 1.0:
        x = x / 255.0
    x = np.round(x * 255).astype(np.uint8).reshape(-1, spec.side, spec.side)
    y = np.asarray(bunch.target).astype(np.int64)
    if y.min() == 1 and y.max() == 10:  # labels 1..10 stand for digits 1..9 and 0
        y = y % 10
    is_test = np.zeros(len(x), bool)
    if spec.openml in ("mnist_784", "Fashion-MNIST"):
        is_test[60000:] = True
    atomic_save_npz(target, x=x, y=y, is_test=is_test)
    return target
