"""Starting a run from an imported autoencoder: a PyTorch state dict mapped onto a method's pretrained part.

A file is read with ``torch.load(weights_only=True)`` only (never unpickled) and must be a flat dict of
tensors. Its names are tried, in order, as the pretrained part's own (a cache entry), as a whole model's
(a run's checkpointed model: the part's prefix, e.g. ``ae.``, is stripped), and through each layout the
method declares in ``Method.weight_layouts`` (another code base's names, renamed by prefix). The first
that fits the part exactly (no missing, unexpected or mis-shaped tensor) is loaded; when none does,
``WeightsError`` lists what the closest one lacked. Nothing is guessed from shapes or orders.
"""
from __future__ import annotations

import hashlib
import io
import os
import zipfile
from pathlib import Path

import torch
from torch import Tensor, nn

from core.config import ConfigError
from core.data.limits import UploadLimits
from core.methods import Method
from core.storage import atomic_write_bytes

OWN_LAYOUT = "this project's autoencoder"
MODEL_LAYOUT = "this project's whole model"
LISTED = 6  # names listed per kind of mismatch before "… and N more"


class WeightsError(ConfigError):
    """An imported weights file that cannot be read or does not fit the method's autoencoder."""


def file_sha256(path: str | os.PathLike) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def read_state_dict(source: str | os.PathLike | bytes, name: str = "") -> dict[str, Tensor]:
    """The tensors of a state-dict file (a path or its bytes), loaded on the CPU with ``weights_only=True``."""
    name = name or str(source if not isinstance(source, bytes) else "the file")
    data = source if isinstance(source, bytes) else _read_bytes(source)
    _check_unpacked_size(data, name)
    try:
        state = torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
    except Exception as err:  # torch reports a refused pickle or a damaged archive in several types
        raise WeightsError(f"{name} is not a PyTorch state dict that loads with weights_only=True "
                           f"({type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''})") from None
    if not isinstance(state, dict) or not state or not all(
            isinstance(k, str) and isinstance(v, Tensor) for k, v in state.items()):
        raise WeightsError(f"{name} holds no state dict (a flat dict of names to tensors); save one with "
                           "torch.save(module.state_dict(), path)")
    return state


def _check_unpacked_size(data: bytes, name: str, limit: int = UploadLimits.max_bytes) -> None:
    """Refuse a file whose archive unpacks to more than ``limit`` bytes, before torch unpacks it: a small
    compressed file could otherwise declare tensors of any size."""
    try:
        with zipfile.ZipFile(io.BytesIO(data)) as archive:
            unpacked = sum(member.file_size for member in archive.infolist())
    except zipfile.BadZipFile:
        return  # not torch's zip format: the legacy format stores its tensors uncompressed, within the file's size
    if unpacked > limit:
        raise WeightsError(f"{name} unpacks to {unpacked:,} bytes, more than the limit of {limit:,} "
                           "(UploadLimits.max_bytes)")


def rename(state: dict[str, Tensor], names: dict[str, str | None]) -> dict[str, Tensor]:
    """Rename keys by their longest dotted prefix found in ``names``; a prefix mapped to None drops its keys.

    ``{"fc1": "encoder.11"}`` turns ``fc1.weight`` into ``encoder.11.weight``; keys with no listed prefix stay.
    """
    renamed = {}
    for key, value in state.items():
        parts = key.split(".")
        for cut in range(len(parts) - 1, 0, -1):
            prefix = ".".join(parts[:cut])
            if prefix in names:
                if names[prefix] is not None:
                    renamed[".".join([names[prefix], *parts[cut:]])] = value
                break
        else:
            renamed[key] = value
    return renamed


def mismatches(state: dict[str, Tensor], target: dict[str, Tensor]) -> dict[str, list[str]]:
    """What keeps ``state`` from loading strictly into a module whose state dict is ``target``."""
    return {"missing": sorted(set(target) - set(state)),
            "unexpected": sorted(set(state) - set(target)),
            "mis-shaped": sorted(f"{k} (file {tuple(state[k].shape)}, model {tuple(target[k].shape)})"
                                 for k in set(state) & set(target) if state[k].shape != target[k].shape)}


def fit(state: dict[str, Tensor], method: Method, model: nn.Module,
        name: str = "the file") -> tuple[str, dict[str, Tensor]]:
    """The first layout under which ``state`` fits the method's pretrained part of ``model`` exactly:
    (the layout's name, the renamed state). Raises ``WeightsError`` naming the missing, unexpected and
    mis-shaped tensors of the closest layout."""
    part = method.pretrained_part(model)
    if part is None:
        raise WeightsError(f"{method.title} has no pretrained autoencoder to import weights into")
    prefix = next(n for n, m in model.named_modules() if m is part)
    candidates = {OWN_LAYOUT: state}
    if prefix:
        candidates[MODEL_LAYOUT] = {k[len(prefix) + 1:]: v for k, v in state.items() if k.startswith(prefix + ".")}
    candidates.update({layout: rename(state, names) for layout, names in method.weight_layouts.items()})
    target = part.state_dict()
    tried = {}
    for layout, renamed in candidates.items():
        problems = mismatches(renamed, target)
        if not any(problems.values()):
            return layout, renamed
        tried[layout] = problems
    closest = min(tried, key=lambda layout: sum(map(len, tried[layout].values())))
    report = "; ".join(f"{kind} {len(keys)}: {_listing(keys)}" for kind, keys in tried[closest].items() if keys)
    raise WeightsError(f"{name} does not fit {method.title}'s {type(part).__name__} ({len(target)} tensors) as "
                       f"{' or as '.join(candidates)}. Closest, as {closest}: {report}")


def _listing(keys: list[str]) -> str:
    shown = ", ".join(keys[:LISTED])
    return shown + (f" … and {len(keys) - LISTED} more" if len(keys) > LISTED else "")


def load_into(method: Method, model: nn.Module, path: str | os.PathLike, sha256: str | None = None) -> str:
    """Load the weights file at ``path`` into the method's pretrained part of ``model``, refusing a file whose
    SHA-256 is no longer ``sha256``; returns the layout it was read as."""
    data = _read_bytes(path)
    if sha256 is not None and hashlib.sha256(data).hexdigest() != sha256:
        raise WeightsError(f"{path} changed since the run was configured (its SHA-256 is no longer {sha256[:12]}…)")
    layout, state = fit(read_state_dict(data, str(path)), method, model, str(path))
    method.pretrained_part(model).load_state_dict(state)
    return layout


def check(data: bytes, name: str, method: Method, input_shape: tuple[int, int, int]) -> str:
    """Whether uploaded weights fit the method's autoencoder for images of ``input_shape``: the layout they
    would be read as, or ``WeightsError``. Builds the model on the CPU and loads nothing into a run."""
    return fit(read_state_dict(data, name), method, method.build(input_shape), name)[0]


def save_upload(data: bytes, folder: Path) -> Path:
    """Keep uploaded weights under their content hash; returns the path a run configuration names."""
    path = folder / f"{hashlib.sha256(data).hexdigest()[:24]}.pt"
    if not path.exists():
        atomic_write_bytes(path, data)
    return path


def _read_bytes(path: str | os.PathLike) -> bytes:
    try:
        return Path(path).read_bytes()
    except OSError as err:
        raise WeightsError(f"{path}: {err.strerror or err}") from None
