"""The run directory: everything a run writes, read back by the app, the CLI and the benchmarks.

::

    runs/<id>/config.json        resolved config, seed, library versions, device
              status.json        state (queued/running/finished/stopped/failed), reason, progress
              metrics.csv        one row per epoch: epoch, phase, time, loss, loss_<term>, acc, nmi, ari, changed
              snapshots/indices.npz       the fixed subsample: indices, labels
              snapshots/epoch_NNNN.npz    z (S, d), labels (S,), confidence (S,), centroids (K, d), sizes (K,)
              checkpoints/last.pt         model, optimizer, method state, counters
              assignments.npz    final labels and confidence for every sample
              frames/<kind>/epoch_NNNN.npz   2-D projections (written by core.embed)
              STOP               present when a stop was requested
              writer.lock        locked by the one process training the run (its pid inside)

One process writes a run (the trainer); every file is replaced atomically, so readers never see half
of one. Readers never write, except ``request_stop`` and the projector's frames.
"""
from __future__ import annotations

import datetime as dt
import io
import os
import re
import secrets
import shutil
from pathlib import Path, PurePath

import numpy as np
import pandas as pd
import torch

from core.storage import (atomic_save_npz, atomic_torch_save, atomic_write_json, atomic_write_text, file_lock,
                          partial_writes, read_json)

ACTIVE_STATES = ("queued", "running")
WRITER_LOCK = "writer.lock"  # held by the training process for its whole life


def default_runs_dir() -> Path:
    return Path(os.environ.get("CLUSTERLAB_RUNS", "runs"))


# What a run id may look like: one folder name of letters, digits, '-' and '_' (what ``new_run_id`` makes),
# so that no id can name a parent ('..'), an absolute path, or a nested folder.
RUN_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]{0,199}")


class RunIdError(ValueError):
    """A run id that is not one folder inside the runs folder; the message says why."""


def run_path(runs_dir: str | os.PathLike, run_id: str) -> Path:
    """The folder of run ``run_id`` inside ``runs_dir``: the one check every way to a run goes through
    (the app's URL and pages, the CLI's ``--resume``, the projector).

    Raises ``RunIdError`` unless ``run_id`` is a single name of the generated form and its folder, links
    resolved, lies directly inside ``runs_dir``.
    """
    if not isinstance(run_id, str) or not RUN_ID.fullmatch(run_id):
        raise RunIdError(f"{str(run_id)[:80]!r} is not a run id: a run id is one folder name of letters, digits, "
                         "'-' and '_'")
    root = Path(runs_dir)
    if (root / run_id).resolve().parent != root.resolve():
        raise RunIdError(f"run {run_id} does not lie inside the runs folder {root}")
    return root / run_id


def data_token(data: str) -> str:
    """A data set's name as a run-id part: ``digits`` → ``digits``; ``x/../../escaped`` → ``escaped``;
    ``/…/my set.zip`` → ``my_set``."""
    name = PurePath(data.replace("\\", "/")).name
    stem = name.rsplit(".", 1)[0] if name.lower().endswith((".npz", ".zip")) else name
    return re.sub(r"[^A-Za-z0-9_-]+", "_", stem).strip("_-")[:48] or "data"


def new_run_id(method: str, data: str, seed: int) -> str:
    return stamped_id(method, data, f"s{int(seed)}")


def stamped_id(method: str, data: str, tag: str) -> str:
    """``<date>-<time>-<method>-<data>-<tag>-<4 hex>``: sorts by start time, and says what it holds."""
    stamp = dt.datetime.now().strftime("%Y%m%d-%H%M%S")
    return f"{stamp}-{data_token(method)}-{data_token(data)}-{tag}-{secrets.token_hex(2)}"


class StopFile:
    """A folder's ``STOP`` file: how a reader asks the folder's writer (a trainer, a sweep scheduler) to
    stop after its current step, without writing any file the writer owns."""

    path: Path

    def request_stop(self) -> None:
        (self.path / "STOP").touch()

    def stop_requested(self) -> bool:
        return (self.path / "STOP").exists()

    def clear_stop(self) -> None:
        (self.path / "STOP").unlink(missing_ok=True)


class RunStore(StopFile):
    """Read and write one run directory."""

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)

    @classmethod
    def open(cls, runs_dir: str | os.PathLike, run_id: str) -> "RunStore":
        """The existing run ``run_id`` of ``runs_dir``; ``RunIdError`` for an id that is not one, or names no run."""
        store = cls(run_path(runs_dir, run_id))
        if not (store.path / "config.json").is_file():
            raise RunIdError(f"no run {run_id} in {runs_dir}")
        return store

    @classmethod
    def create(cls, runs_dir: str | os.PathLike, run_id: str, config: dict) -> "RunStore":
        store = cls(run_path(runs_dir, run_id))
        if store.path.exists():
            raise FileExistsError(f"run {run_id} already exists")
        (store.path / "snapshots").mkdir(parents=True)
        store.write_config(config)
        store.write_status("queued")
        return store

    @property
    def id(self) -> str:
        return self.path.name

    # -- config and status ----------------------------------------------------------------------
    def write_config(self, config: dict) -> None:
        atomic_write_json(self.path / "config.json", config)

    def read_config(self) -> dict:
        return read_json(self.path / "config.json", {})

    def write_status(self, state: str, **fields) -> None:
        status = {**read_json(self.path / "status.json", {}), **fields, "state": state,
                  "updated": dt.datetime.now().isoformat(timespec="seconds")}
        atomic_write_json(self.path / "status.json", status)

    def read_status(self) -> dict:
        return read_json(self.path / "status.json", {"state": "unknown"})

    # -- metrics ----------------------------------------------------------------------------------
    def write_metrics(self, rows: list[dict]) -> None:
        atomic_write_text(self.path / "metrics.csv", pd.DataFrame(rows).to_csv(index=False))

    def read_metrics(self) -> pd.DataFrame:
        try:
            return pd.read_csv(self.path / "metrics.csv")
        except (FileNotFoundError, pd.errors.EmptyDataError):
            return pd.DataFrame()

    # -- snapshots ---------------------------------------------------------------------------------
    def save_snapshot_indices(self, indices: np.ndarray, labels: np.ndarray | None) -> None:
        arrays = {"indices": indices}
        if labels is not None:
            arrays["labels"] = labels
        atomic_save_npz(self.path / "snapshots" / "indices.npz", **arrays)

    def save_snapshot(self, epoch: int, **arrays) -> None:
        atomic_save_npz(self.path / "snapshots" / f"epoch_{epoch:04d}.npz", **arrays)

    def snapshot_epochs(self) -> list[int]:
        return sorted(int(p.stem[6:]) for p in (self.path / "snapshots").glob("epoch_*.npz"))

    def load_snapshot(self, epoch: int) -> dict[str, np.ndarray]:
        with np.load(self.path / "snapshots" / f"epoch_{epoch:04d}.npz", allow_pickle=False) as npz:
            return dict(npz)

    def load_snapshot_indices(self) -> dict[str, np.ndarray]:
        with np.load(self.path / "snapshots" / "indices.npz", allow_pickle=False) as npz:
            return dict(npz)

    # -- checkpoints and results -----------------------------------------------------------------
    def save_checkpoint(self, state: dict) -> None:
        atomic_torch_save(self.path / "checkpoints" / "last.pt", state)

    def writer(self):
        """The run's writer lock, a context manager: one training process per run. Refused at once
        (``LockHeld``, with the holder's pid) while another process holds it; released when the holder exits,
        even by ``kill -9``."""
        return file_lock(self.path / WRITER_LOCK, blocking=False)

    def discard_partial_writes(self) -> None:
        """Delete what a killed training process left half-written (before it resumes; under ``writer``)."""
        for path in partial_writes(self.path):
            path.unlink(missing_ok=True)

    def load_checkpoint(self, map_location=None) -> dict | None:
        path = self.path / "checkpoints" / "last.pt"
        if not path.exists():
            return None
        return torch.load(io.BytesIO(path.read_bytes()), map_location=map_location, weights_only=True)

    def save_assignments(self, labels: np.ndarray, confidence: np.ndarray, y: np.ndarray | None) -> None:
        arrays = {"labels": labels, "confidence": confidence}
        if y is not None:
            arrays["y"] = y
        atomic_save_npz(self.path / "assignments.npz", **arrays)

    def assignments_frame(self) -> pd.DataFrame:
        """Per-sample assignments as a table (index, cluster, confidence, label)."""
        with np.load(self.path / "assignments.npz", allow_pickle=False) as npz:
            frame = pd.DataFrame({"index": np.arange(len(npz["labels"])), "cluster": npz["labels"],
                                  "confidence": npz["confidence"]})
            if "y" in npz.files:
                frame["label"] = npz["y"]
        return frame

    def delete(self) -> None:
        shutil.rmtree(self.path)


def list_runs(runs_dir: str | os.PathLike | None = None) -> pd.DataFrame:
    """One row per run, newest first: id, method, data, seed, state, epoch, acc, nmi, ari, started."""
    root = Path(runs_dir) if runs_dir else default_runs_dir()
    rows = []
    for path in sorted(root.glob("*/config.json"), reverse=True):
        if not RUN_ID.fullmatch(path.parent.name):  # a folder someone put there by hand: not a run
            continue
        store = RunStore(path.parent)
        config, status = store.read_config(), store.read_status()
        metrics = store.read_metrics()
        last = metrics.iloc[-1] if len(metrics) else {}
        rows.append({"id": store.id, "method": config.get("method"), "data": config.get("data"),
                     "seed": config.get("seed"), "state": status.get("state"), "reason": status.get("reason", ""),
                     "epoch": last.get("epoch"), "acc": last.get("acc"), "nmi": last.get("nmi"),
                     "ari": last.get("ari"), "started": status.get("started")})
    columns = ["id", "method", "data", "seed", "state", "reason", "epoch", "acc", "nmi", "ari", "started"]
    return pd.DataFrame(rows, columns=columns)


SETTINGS = ("method", "data", "preset", "seed", "n_clusters", "device", "init_weights")  # a config's own fields, in this order


def flat_settings(config: dict) -> dict[str, object]:
    """A run's settings (its ``config.json``) as one flat mapping: the fields of ``SETTINGS``, then every
    trainer knob, then every method knob (a knob's name alone: no method has one named like a trainer knob)."""
    return {**{name: config.get(name) for name in SETTINGS}, **config.get("trainer", {}), **config.get("params", {})}


def differing_settings(configs: dict[str, dict]) -> pd.DataFrame:
    """One row per run id, one column per setting not the same in every run (a knob a run lacks is empty)."""
    flat = pd.DataFrame({run_id: flat_settings(config) for run_id, config in configs.items()}).T
    varying = [name for name in flat.columns if flat[name].astype(str).nunique(dropna=False) > 1]
    return flat[varying].rename_axis("run")
