"""Training runs as separate processes: start one, stop one, and tell how it is doing.

The app never trains in its own process: ``start_run`` writes the run directory and launches
``python -m core train --run-dir <dir> --quiet`` in a new session, so reloading the page, opening a
second tab or closing the browser does not touch it. The run directory is the only channel: the
trainer writes ``status.json`` and ``metrics.csv``; ``stop_run`` leaves the ``STOP`` file that the
trainer checks between batches (it then checkpoints and writes the state ``stopped``).

A run whose process died without writing a final state (killed, out of memory, machine rebooted)
still says ``running`` on disk; ``run_progress`` compares that with the process table and reports
it as ``died``.
"""
from __future__ import annotations

import datetime as dt
import logging
import math
import os
import socket
import subprocess
import sys
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from core.runs import ACTIVE_STATES, RUN_ID, RunStore, default_runs_dir, new_run_id
from core.storage import atomic_write_json, read_json
from core.train.config import RunConfig

log = logging.getLogger(__name__)

LOG_NAME = "log.txt"
LAUNCH_NAME = "launch.json"
ROOT = Path(__file__).resolve().parents[1]

# Processes this interpreter started. A finished child stays a zombie (and looks alive to
# ``os.kill(pid, 0)``) until it is waited for, so these are asked through ``poll()``.
_children: dict[int, subprocess.Popen] = {}
_children_lock = threading.Lock()


def start_run(config: RunConfig | dict, runs_dir: str | os.PathLike | None = None,
              run_id: str | None = None) -> RunStore:
    """Write a new run directory for ``config`` and start training it in a separate process.

    Parameters
    ----------
    config : the run's configuration (a ``RunConfig`` or its ``to_dict()``).
    runs_dir : where run directories live; default ``$CLUSTERLAB_RUNS`` or ``./runs``.
    run_id : the directory name; default a fresh ``new_run_id``.

    Returns
    -------
    The new run's store. Its status is ``queued`` until the process has loaded the data.
    """
    values = config.to_dict() if isinstance(config, RunConfig) else dict(config)
    RunConfig.from_dict(values)  # refuse a config the trainer would refuse, before writing anything
    runs_dir = Path(runs_dir) if runs_dir else default_runs_dir()
    run_id = run_id or new_run_id(values["method"], str(values.get("data", "digits")), int(values.get("seed", 0)))
    store = RunStore.create(runs_dir.resolve(), run_id, values)
    process = spawn([sys.executable, "-m", "core", "train", "--run-dir", str(store.path), "--quiet"], store.path)
    log.info("started run %s (pid %d)", store.id, process.pid)
    return store


def spawn(command: list[str], folder: Path, env: dict | None = None) -> subprocess.Popen:
    """Start ``command`` in its own session with this checkout importable, its output appended to
    ``folder/log.txt`` and its pid written to ``folder/launch.json``.

    ``start_new_session``: the process gets its own process group, so a Ctrl-C in the terminal that
    runs the app, or the app's exit, does not stop it.
    """
    env = {**os.environ, **(env or {})}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    with open(folder / LOG_NAME, "ab") as log_file:
        process = subprocess.Popen(command, stdout=log_file, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                   start_new_session=True, env=env)
    with _children_lock:
        _children[process.pid] = process
    atomic_write_json(folder / LAUNCH_NAME, {"pid": process.pid, "command": command,
                                            "launched": dt.datetime.now().isoformat(timespec="seconds")})
    return process


def stop_run(store: RunStore) -> bool:
    """Ask a run to stop after its current batch (it checkpoints first); returns whether it was running."""
    if run_state(store) not in ACTIVE_STATES:
        return False
    store.request_stop()
    return True


def is_alive(pid: int | None) -> bool:
    """Whether process ``pid`` exists and is not a zombie (a process that exited but was not waited for)."""
    if not pid:
        return False
    with _children_lock:
        child = _children.get(int(pid))
    if child is not None:
        return child.poll() is None
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        return True
    except OSError:
        return False
    stat = Path(f"/proc/{int(pid)}/stat")
    try:
        # the state letter follows the parenthesised command name, which may itself hold spaces
        return stat.read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return True  # no /proc (macOS): trust os.kill


def run_pid(store: RunStore, status: dict | None = None) -> int | None:
    """The training process: the trainer's own pid, or the launcher's record while still queued."""
    status = store.read_status() if status is None else status
    return status.get("pid") or read_json(store.path / LAUNCH_NAME, {}).get("pid")


def run_state(store: RunStore, status: dict | None = None) -> str:
    """The status' state, or ``died`` when it claims to be active but its process is gone."""
    status = store.read_status() if status is None else status
    return state_with_process(status.get("state", "unknown"), lambda: run_pid(store, status), status.get("host"))


def state_with_process(state: str, pid: Callable[[], int | None], host: str | None = None) -> str:
    """``state``, or ``died`` when it claims to be active (queued, running) but process ``pid()`` is gone.

    A process on another machine (``host``: a Ray node writing to shared storage) cannot be checked
    from here; its state is taken as written.
    """
    if state in ACTIVE_STATES and host in (None, socket.gethostname()):
        process = pid()
        if process is not None and not is_alive(process):
            return "died"
    return state


def active_run_ids(runs_dir: str | os.PathLike | None = None) -> list[str]:
    """Runs whose process is alive (queued or running), newest first."""
    root = Path(runs_dir) if runs_dir else default_runs_dir()
    ids = []
    for status_path in sorted(root.glob("*/status.json"), reverse=True):
        if not RUN_ID.fullmatch(status_path.parent.name):
            continue
        store = RunStore(status_path.parent)
        if run_state(store) in ACTIVE_STATES:
            ids.append(store.id)
    return ids


@dataclass(frozen=True)
class RunProgress:
    """What the live panel shows about one run, read from its directory.

    Attributes
    ----------
    state : queued / running / finished / stopped / failed / died.
    phase, epoch, total_epochs, batch, batches : where training stands.
    fraction : epochs done / total, in [0, 1].
    eta_seconds : remaining epochs × recent seconds per epoch (None before two epochs); an upper
        bound, since DEC-style methods may stop early when they converge.
    elapsed_seconds : training time so far.
    reason : why it ended (or failed).
    stop_requested : a stop was asked for and not yet acted on.
    metrics : the run's ``metrics.csv``.
    sizes : (K,) cluster sizes at the newest epoch with clusters, or None.
    """

    run_id: str
    state: str
    phase: str
    epoch: int
    total_epochs: int
    batch: int | None
    batches: int | None
    fraction: float
    eta_seconds: float | None
    elapsed_seconds: float
    reason: str
    stop_requested: bool
    metrics: pd.DataFrame
    sizes: np.ndarray | None

    @property
    def active(self) -> bool:
        """Queued or running, with its process alive."""
        return self.state in ACTIVE_STATES


def run_progress(store: RunStore, recent_epochs: int = 5) -> RunProgress:
    """Read the status, metrics and newest cluster sizes of a run (cheap: meant to be polled)."""
    status = store.read_status()
    state = run_state(store, status)
    metrics = store.read_metrics()
    total = int(status.get("total_epochs") or 0)
    epoch = int(status.get("epoch") or (metrics["epoch"].iloc[-1] if len(metrics) else 0))
    batch, batches = status.get("batch"), status.get("batches")
    done = epoch + (batch / batches if batch is not None and batches else 0.0)
    fraction = min(done / total, 1.0) if total else 0.0
    if state == "finished":
        fraction = 1.0
    last_row_time = float(metrics["time"].iloc[-1]) if len(metrics) and "time" in metrics else 0.0
    elapsed = max(last_row_time, float(status.get("elapsed") or 0.0))  # status is fresher within an epoch
    eta = None
    if state in ACTIVE_STATES and len(metrics) >= 2 and total:
        recent = metrics["time"].diff().dropna().tail(recent_epochs)
        per_epoch = float(recent.median()) if len(recent) else math.nan
        if math.isfinite(per_epoch):
            eta = max(total - done, 0.0) * per_epoch
    return RunProgress(run_id=store.id, state=state, phase=str(status.get("phase") or "—"), epoch=epoch,
                       total_epochs=total, batch=batch, batches=batches, fraction=float(fraction),
                       eta_seconds=eta, elapsed_seconds=elapsed,
                       reason=str(status.get("reason") or ("the training process ended without a final state"
                                                           if state == "died" else "")),
                       stop_requested=store.stop_requested() and state in ACTIVE_STATES,
                       metrics=metrics, sizes=latest_sizes(store))


def latest_sizes(store: RunStore) -> np.ndarray | None:
    """Cluster sizes (K,) of the newest snapshot that has them."""
    for epoch in reversed(store.snapshot_epochs()):
        try:
            with np.load(store.path / "snapshots" / f"epoch_{epoch:04d}.npz", allow_pickle=False) as npz:
                # Snapshots have sizes from the init epoch on, so the newest one decides.
                return npz["sizes"] if "sizes" in npz.files else None
        except (OSError, ValueError):  # being replaced right now: try the one before
            continue
    return None


def log_tail(store: RunStore, lines: int = 30) -> str:
    """The last lines of the run's process log (what a failed run said)."""
    try:
        text = (store.path / LOG_NAME).read_text(errors="replace")
    except FileNotFoundError:
        return ""
    return "\n".join(text.splitlines()[-lines:])
