"""The sweep directory and the tables read from it.

::

    sweeps/<id>/sweep.json   the manifest: spec (grid, seeds, …), trials (settings, seed, run id), state,
                             reason, runs_dir, started, updated
                launch.json  the scheduler's pid, as ``core.launch`` writes it for a run
                log.txt      the scheduler's log
                STOP         present when a stop was requested

The scheduler is the manifest's one writer after ``create``; every write is atomic. A trial's own
state and scores live in its run directory (``runs_dir/<run id>/``), an ordinary run.
"""
from __future__ import annotations

import datetime as dt
import math
import os
from pathlib import Path

import numpy as np
import pandas as pd

from core.launch import LAUNCH_NAME, run_state, state_with_process
from core.runs import ACTIVE_STATES, RunStore, StopFile, default_runs_dir, run_path, stamped_id
from core.storage import atomic_write_json, read_json

MANIFEST_NAME = "sweep.json"
METRICS = ("acc", "nmi", "ari")
FAILED_STATES = ("failed", "died")


def default_sweeps_dir() -> Path:
    return Path(os.environ.get("CLUSTERLAB_SWEEPS", "sweeps"))


def new_sweep_id(method: str, data: str) -> str:
    return stamped_id(method, data, "sweep")


class SweepStore(StopFile):
    """Read and write one sweep directory."""

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)

    @classmethod
    def create(cls, sweeps_dir: str | os.PathLike, sweep_id: str, manifest: dict) -> "SweepStore":
        store = cls(Path(sweeps_dir) / sweep_id)
        if store.path.exists():
            raise FileExistsError(f"sweep {sweep_id} already exists")
        store.path.mkdir(parents=True)
        store.write_manifest({"id": sweep_id, **manifest})
        return store

    @property
    def id(self) -> str:
        return self.path.name

    def read_manifest(self) -> dict:
        return read_json(self.path / MANIFEST_NAME, {})

    def write_manifest(self, manifest: dict) -> None:
        atomic_write_json(self.path / MANIFEST_NAME,
                          {**manifest, "updated": dt.datetime.now().isoformat(timespec="seconds")})

    def update_manifest(self, **fields) -> dict:
        manifest = {**self.read_manifest(), **fields}
        self.write_manifest(manifest)
        return manifest

    def runs_dir(self, manifest: dict | None = None) -> Path:
        manifest = self.read_manifest() if manifest is None else manifest
        return Path(manifest.get("runs_dir") or default_runs_dir())

    def pid(self, manifest: dict | None = None) -> int | None:
        """The scheduler's process: its own record, or the launcher's while it starts."""
        manifest = self.read_manifest() if manifest is None else manifest
        return manifest.get("pid") or read_json(self.path / LAUNCH_NAME, {}).get("pid")


def sweep_state(store: SweepStore, manifest: dict | None = None) -> str:
    """The manifest's state, or ``died`` when it claims to be active but its scheduler is gone."""
    manifest = store.read_manifest() if manifest is None else manifest
    return state_with_process(manifest.get("state", "unknown"), lambda: store.pid(manifest))


def trial_state(runs_dir: Path, run_id: str | None) -> tuple[str, dict]:
    """A trial's state and its run's status (``pending`` and {} before its run exists)."""
    if not run_id:
        return "pending", {}
    store = RunStore(run_path(runs_dir, run_id))
    status = store.read_status()
    return run_state(store, status), status


def sweep_table(store: SweepStore, runs_dir: str | os.PathLike | None = None) -> pd.DataFrame:
    """One row per trial, in grid order: one column per grid knob, seed, run_id, state, acc, nmi, ari, reason.

    The scores are the run's last evaluated epoch (final once its state is ``finished``); NaN before.
    """
    manifest = store.read_manifest()
    runs_dir = Path(runs_dir) if runs_dir else store.runs_dir(manifest)
    knobs = list(manifest.get("spec", {}).get("grid", {}))
    rows = []
    for trial in manifest.get("trials", []):
        run_id = trial.get("run_id")
        state, status = trial_state(runs_dir, run_id)
        scores = _last_scores(RunStore(run_path(runs_dir, run_id))) if run_id else {}
        reason = trial.get("reason") or (status.get("reason", "") if state != "finished" else "")
        if state == "died" and not reason:
            reason = "the training process ended without a final state"
        rows.append({**{k: trial["settings"].get(k) for k in knobs}, "seed": trial["seed"], "run_id": run_id,
                     "state": state, **{m: scores.get(m, math.nan) for m in METRICS}, "reason": reason})
    table = pd.DataFrame(rows, columns=[*knobs, "seed", "run_id", "state", *METRICS, "reason"])
    table["run_id"] = pd.Series([row["run_id"] for row in rows], dtype=object)  # None, not NaN, before a run exists
    return table


def _last_scores(run: RunStore) -> dict:
    metrics = run.read_metrics()
    if not len(metrics) or "acc" not in metrics:
        return {}
    scored = metrics.dropna(subset=["acc"])
    return {} if not len(scored) else {m: float(scored[m].iloc[-1]) for m in METRICS if m in scored}


def cell_summary(table: pd.DataFrame, knobs: list[str], metric: str) -> pd.DataFrame:
    """One row per grid cell (``knobs``' values, in grid order): mean and sd of ``metric`` over its finished
    seeds (sd NaN below two), n finished, n_failed (failed or died), n_pending (not ended yet, or stopped:
    a resume finishes them), and the failures' reasons joined."""
    columns = [*knobs, "mean", "sd", "n", "n_failed", "n_pending", "reasons"]
    if not len(table):
        return pd.DataFrame(columns=columns)
    rows = []
    for values, cell in table.groupby(knobs, sort=False, dropna=False):
        values = values if isinstance(values, tuple) else (values,)
        finished = cell.loc[cell["state"] == "finished", metric].astype(float)
        finished = finished[np.isfinite(finished)]
        failed = cell[cell["state"].isin(FAILED_STATES)]
        reasons = list(dict.fromkeys(str(r) for r in failed["reason"] if r))
        rows.append({**dict(zip(knobs, values)), "mean": finished.mean() if len(finished) else math.nan,
                     "sd": finished.std(ddof=1) if len(finished) > 1 else math.nan, "n": len(finished),
                     "n_failed": len(failed),
                     "n_pending": int((~cell["state"].isin(("finished", *FAILED_STATES))).sum()),
                     "reasons": "; ".join(reasons)})
    return pd.DataFrame(rows, columns=columns)


def list_sweeps(sweeps_dir: str | os.PathLike | None = None) -> pd.DataFrame:
    """One row per sweep, newest first: id, method, data, knobs, n_trials, done, running, failed, state, started."""
    root = Path(sweeps_dir) if sweeps_dir else default_sweeps_dir()
    columns = ["id", "method", "data", "knobs", "n_trials", "done", "running", "failed", "state", "started"]
    rows = []
    for path in sorted(root.glob(f"*/{MANIFEST_NAME}"), reverse=True):
        store = SweepStore(path.parent)
        manifest = store.read_manifest()
        spec = manifest.get("spec", {})
        states = sweep_table(store)["state"]
        rows.append({"id": store.id, "method": spec.get("method"), "data": spec.get("data"),
                     "knobs": " × ".join(spec.get("grid", {})), "n_trials": len(states),
                     "done": int((states == "finished").sum()), "running": int(states.isin(ACTIVE_STATES).sum()),
                     "failed": int(states.isin(FAILED_STATES).sum()), "state": sweep_state(store, manifest),
                     "started": manifest.get("started")})
    return pd.DataFrame(rows, columns=columns)
