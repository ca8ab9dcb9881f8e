"""Start, stop and watch a sweep whose scheduler is its own process, as ``core.launch`` does for a run.

``start_sweep`` writes the manifest and launches ``python -m core sweep --sweep-dir <dir> --quiet``
in a new session, so the app's reloads and tabs never touch it; ``stop_sweep`` leaves the ``STOP``
files that the scheduler and the trainers check.
"""
from __future__ import annotations

import logging
import os
import sys
from pathlib import Path

from core.launch import spawn
from core.runs import ACTIVE_STATES, RunStore, default_runs_dir, run_path
from core.sweep.scheduler import new_manifest
from core.sweep.spec import SweepSpec, checked_spec
from core.sweep.store import SweepStore, default_sweeps_dir, new_sweep_id, sweep_state, sweep_table

log = logging.getLogger(__name__)


def create_sweep(spec: SweepSpec, sweeps_dir: str | os.PathLike | None = None,
                 runs_dir: str | os.PathLike | None = None) -> SweepStore:
    """Validate ``spec`` (every trial's configuration is built) and write its sweep directory; starts nothing."""
    spec = checked_spec(spec)
    runs_dir = Path(runs_dir) if runs_dir else default_runs_dir()
    sweeps_dir = Path(sweeps_dir) if sweeps_dir else default_sweeps_dir()
    return SweepStore.create(sweeps_dir.resolve(), new_sweep_id(spec.method, spec.data), new_manifest(spec, runs_dir))


def start_sweep(spec: SweepSpec, sweeps_dir: str | os.PathLike | None = None,
                runs_dir: str | os.PathLike | None = None) -> SweepStore:
    """Write a new sweep for ``spec`` and start its scheduler in a separate process.

    Raises ``ValueError`` before writing anything when a grid value or setting is refused.
    Returns the sweep's store; its state is ``queued`` until the scheduler runs.
    """
    store = create_sweep(spec, sweeps_dir, runs_dir)
    launch_scheduler(store)
    return store


def launch_scheduler(store: SweepStore) -> None:
    process = spawn([sys.executable, "-m", "core", "sweep", "--sweep-dir", str(store.path), "--quiet"], store.path)
    log.info("started sweep %s (pid %d)", store.id, process.pid)


def stop_sweep(store: SweepStore) -> bool:
    """Ask a sweep to stop: its running trials end after their batch with a checkpoint, no trial starts.
    Returns whether it was active. The trials are told directly too, in case the scheduler is gone."""
    if sweep_state(store) not in ACTIVE_STATES:
        return False
    store.request_stop()
    table = sweep_table(store)
    for run_id in table.loc[table["state"].isin(ACTIVE_STATES), "run_id"]:
        RunStore(run_path(store.runs_dir(), run_id)).request_stop()
    return True


def resume_sweep(store: SweepStore) -> bool:
    """Continue a stopped sweep (or one whose scheduler died) in a new scheduler process: finished and
    failed trials are skipped, stopped ones go on from their checkpoint. Returns whether it was resumable."""
    if sweep_state(store) in ACTIVE_STATES or sweep_state(store) == "finished":
        return False
    store.clear_stop()
    launch_scheduler(store)
    return True
