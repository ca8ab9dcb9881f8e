"""Where a sweep's trials run: one interface, two executors.

Each trial is the ordinary training command, ``python -m core train --run-dir <dir>`` (``--resume``
for a run that already has a directory), so a trial is trained, stopped and resumed exactly like a
run started from the app. The executor only starts commands and says which ones ended:

- ``LocalExecutor``: a pool of processes on this machine, one per CPU core share or one per GPU.
- ``RayExecutor``: the same commands as Ray tasks on a Ray cluster, each reserving ``num_cpus`` /
  ``num_gpus``; the run directories must be on storage every node shares (see the README).
"""
from __future__ import annotations

import logging
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from core.launch import LOG_NAME, ROOT, spawn

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Ended:
    """A trial command that ended: its run id, exit code (None when unknown) and what went wrong outside it."""

    run_id: str
    returncode: int | None
    error: str = ""


def train_command(python: str, run_dir: Path, resume: bool) -> list[str]:
    """The training command of one trial (``--resume`` continues a stopped run from its checkpoint)."""
    if resume:
        return [python, "-m", "core", "train", "--runs-dir", str(run_dir.parent), "--resume", run_dir.name, "--quiet"]
    return [python, "-m", "core", "train", "--run-dir", str(run_dir), "--quiet"]


class Executor:
    """Runs trial commands, at most ``width`` at a time."""

    width: int

    def submit(self, run_dir: Path, resume: bool) -> None:
        raise NotImplementedError

    def ended(self) -> list[Ended]:
        """The commands that ended since the last call."""
        raise NotImplementedError

    @property
    def active(self) -> int:
        raise NotImplementedError

    def close(self) -> None:
        """Release what the executor holds (its trials have ended or were asked to stop)."""


class LocalExecutor(Executor):
    """Trial processes on this machine: one per GPU when there are GPUs, else ``width`` sharing the CPU cores.

    Parameters
    ----------
    width : trials at a time; default one per GPU, or one per two CPU cores.
    gpus : the GPU indices to spread trials over (one trial each); default every visible CUDA device
        when ``use_gpus``.
    """

    def __init__(self, width: int | None = None, use_gpus: bool = True):
        self.gpus = _cuda_devices() if use_gpus else []
        cores = os.cpu_count() or 1
        self.width = width or len(self.gpus) or max(1, cores // 2)
        self.threads = max(1, cores // self.width)
        self._running: dict[str, tuple[subprocess.Popen, str | None]] = {}

    def submit(self, run_dir: Path, resume: bool) -> None:
        taken = {gpu for _, gpu in self._running.values()}
        gpu = next((g for g in self.gpus if g not in taken), None)
        env = {"OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", str(self.threads))}
        if gpu is not None:
            env["CUDA_VISIBLE_DEVICES"] = gpu
        process = spawn(train_command(sys.executable, run_dir, resume), run_dir, env)
        self._running[run_dir.name] = (process, gpu)

    def ended(self) -> list[Ended]:
        done = [Ended(run_id, process.returncode) for run_id, (process, _) in self._running.items()
                if process.poll() is not None]
        for item in done:
            del self._running[item.run_id]
        return done

    @property
    def active(self) -> int:
        return len(self._running)


def _cuda_devices() -> list[str]:
    import torch

    return [str(i) for i in range(torch.cuda.device_count())]


def train_in_subprocess(run_dir: str, resume: bool, root: str) -> int:
    """A Ray task: train one trial with the node's Python, appending to the run's log; returns the exit code."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [root, os.environ.get("PYTHONPATH")]))}
    path = Path(run_dir)
    with open(path / LOG_NAME, "ab") as log_file:
        return subprocess.run(train_command(sys.executable, path, resume), stdout=log_file, stderr=subprocess.STDOUT,
                              stdin=subprocess.DEVNULL, cwd=root, env=env).returncode


class RayExecutor(Executor):
    """Trials as Ray tasks on a Ray cluster (``address``: ``auto``, ``ray://host:10001``) or, without an
    address, on a Ray started in this process for its lifetime.

    Every node needs this checkout at the same path (the tasks import ``core`` from it) and the runs
    directory on shared storage: a trial writes its run directory where the scheduler and the app read it.
    """

    def __init__(self, address: str | None = None, width: int | None = None, num_cpus: float = 1.0,
                 num_gpus: float = 0.0, local_cpus: int | None = None):
        import ray

        self.ray = ray
        runtime_env = {"env_vars": {"PYTHONPATH": str(ROOT)}}
        if address:
            ray.init(address=address, runtime_env=runtime_env, log_to_driver=False)
        else:
            ray.init(num_cpus=local_cpus or os.cpu_count(), include_dashboard=False, runtime_env=runtime_env,
                     log_to_driver=False)
        resources = ray.cluster_resources()
        slots = int(resources.get("CPU", 1) // num_cpus) if num_cpus else None
        if num_gpus:
            slots = min(slots or 10 ** 6, int(resources.get("GPU", 0) // num_gpus))
        self.width = width or max(1, slots or 1)
        self.task = ray.remote(train_in_subprocess).options(num_cpus=num_cpus, num_gpus=num_gpus, max_retries=0)
        self._refs: dict = {}  # ObjectRef → run id
        log.info("Ray cluster %s: %s; %d trials at a time", address or "local", resources, self.width)

    def submit(self, run_dir: Path, resume: bool) -> None:
        self._refs[self.task.remote(str(run_dir), resume, str(ROOT))] = run_dir.name

    def ended(self) -> list[Ended]:
        if not self._refs:
            return []
        ready, _ = self.ray.wait(list(self._refs), num_returns=len(self._refs), timeout=0)
        done = []
        for ref in ready:
            run_id = self._refs.pop(ref)
            try:
                done.append(Ended(run_id, self.ray.get(ref)))
            except Exception as err:  # the task itself failed (node lost, worker killed)
                done.append(Ended(run_id, None, f"Ray task failed: {type(err).__name__}: {err}"))
        return done

    @property
    def active(self) -> int:
        return len(self._refs)

    def close(self) -> None:
        self.ray.shutdown()


def make_executor(spec) -> Executor:
    """The executor a ``SweepSpec`` asks for."""
    if spec.backend == "ray":
        return RayExecutor(spec.address, spec.workers, spec.cpus_per_trial, spec.gpus_per_trial,
                           local_cpus=spec.workers and int(spec.workers * spec.cpus_per_trial))
    return LocalExecutor(spec.workers, use_gpus=spec.device in ("auto", "cuda"))
