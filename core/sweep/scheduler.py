"""A sweep's scheduler: turns the manifest's trials into runs and feeds them to an executor.

Pretraining once per seed: the trials that share a pretrained autoencoder (same seed and pretraining
settings: ``core.train.cache.pretrain_signature``) form a group. One trial of a group runs first and
pretrains; the group's other trials wait until its run has passed the pretraining (its autoencoder
is then in the cache) and start from the cached autoencoder. Groups do not wait for one another, so
the seeds pretrain side by side. The cache entry's lock (in the trainer) keeps the rule even for
runs this scheduler does not know about.

Stop: the sweep's ``STOP`` file (or ``stop_event``) leaves a ``STOP`` file in every running trial's
run directory: each ends after its batch with a checkpoint, and no new trial starts. Resume: the
same function on the same manifest; finished and failed trials are skipped, stopped ones continue
from their checkpoint, the others start.
"""
from __future__ import annotations

import datetime as dt
import json
import logging
import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from core.launch import is_alive, log_tail, run_pid, run_state
from core.runs import RunStore, new_run_id, run_path
from core.sweep.executors import Ended, Executor, make_executor
from core.sweep.spec import SweepSpec, trial_configs
from core.sweep.store import FAILED_STATES, SweepStore
from core.train.cache import pretrain_signature

log = logging.getLogger(__name__)

PAST_PRETRAINING = ("init", "cluster")  # status phases of a run whose autoencoder is cached
TRIAL_END_STATES = ("finished", *FAILED_STATES)  # a resume does not run these again


@dataclass(frozen=True)
class SweepProgress:
    """Trial counts of a sweep in progress, for a progress bar."""

    total: int
    done: int
    failed: int
    running: int
    elapsed: float

    @property
    def pending(self) -> int:
        return self.total - self.done - self.failed - self.running

    @property
    def eta_seconds(self) -> float | None:
        """Remaining trials at the pace of those that ended (None before the first)."""
        ended = self.done + self.failed
        return self.elapsed / ended * (self.total - ended) if ended else None


def run_sweep(store: SweepStore, executor: Executor | None = None,
              progress: Callable[[SweepProgress], None] | None = None,
              stop_event: threading.Event | None = None, poll_s: float = 0.5) -> str:
    """Run (or resume) the sweep in ``store`` to its end; returns its final state (finished or stopped).

    A trial that fails is recorded with its reason and the others go on; an error of the scheduler
    itself (the Ray cluster unreachable, …) leaves the state ``failed`` with the reason and is raised.
    """
    manifest = store.read_manifest()
    store.update_manifest(state="running", pid=os.getpid(), reason="",
                          started=manifest.get("started") or dt.datetime.now().isoformat(timespec="seconds"))
    try:
        executor = executor or make_executor(SweepSpec.from_dict(manifest["spec"]))
        try:
            state = _Scheduler(store, executor, progress, stop_event or threading.Event()).run(poll_s)
        finally:
            executor.close()
    except BaseException as err:
        store.update_manifest(state="failed", reason=f"{type(err).__name__}: {err}")
        raise
    store.update_manifest(state=state)
    log.info("sweep %s %s", store.id, state)
    return state


class _Scheduler:
    def __init__(self, store: SweepStore, executor: Executor, progress, stop_event: threading.Event):
        self.store, self.executor, self.progress, self.stop_event = store, executor, progress, stop_event
        self.manifest = store.read_manifest()
        self.spec = SweepSpec.from_dict(self.manifest["spec"])
        self.runs_dir = store.runs_dir(self.manifest).resolve()
        self.trials: list[dict] = self.manifest["trials"]
        configs = trial_configs(self.spec, store.id)
        self.configs = configs
        self.groups = [_group(config) for config in configs]
        self.passed: set[str] = set()        # groups whose autoencoder is cached
        self.in_flight: set[int] = set()     # trials this scheduler started that have not ended
        self.outside: set[int] = set()       # trials a process we did not start is still training
        self.todo: list[int] = []
        for index in range(len(self.trials)):
            self._sort_at_start(index)
        self.t0 = time.perf_counter()
        self.last_progress = None

    def _run(self, index: int) -> RunStore | None:
        run_id = self.trials[index].get("run_id")
        return RunStore(run_path(self.runs_dir, run_id)) if run_id else None

    def _sort_at_start(self, index: int) -> None:
        run = self._run(index)
        if run is None:
            self.todo.append(index)
            return
        status = run.read_status()
        state = run_state(run, status)
        if state == "finished" or status.get("phase") in PAST_PRETRAINING:
            self._mark_passed(index)
        if state in TRIAL_END_STATES:
            return
        pid = run_pid(run, status)
        if pid and is_alive(pid):  # a previous scheduler's trial still training: wait for it
            self.outside.add(index)
        else:
            self.todo.append(index)

    def _mark_passed(self, index: int) -> None:
        if self.groups[index] is not None:
            self.passed.add(self.groups[index])

    # -- the loop -----------------------------------------------------------------------------------
    def run(self, poll_s: float) -> str:
        stopping = False
        while True:
            for ended in self.executor.ended():
                self._ended(ended)
            self._watch()
            if not stopping and (self.store.stop_requested() or self.stop_event.is_set()):
                stopping = True
                self._stop_trials()
            if not stopping:
                self._dispatch()
            self._report()
            if not self.in_flight and not self.outside and (stopping or not self.todo):
                break
            time.sleep(poll_s)
        unfinished = any(run is None or run_state(run) not in TRIAL_END_STATES
                         for run in map(self._run, range(len(self.trials))))
        return "stopped" if unfinished else "finished"  # stopped: by request, or a trial stopped on its own

    def _dispatch(self) -> None:
        while self.executor.active < self.executor.width:
            index = next((i for i in self.todo if self._may_start(i)), None)
            if index is None:
                return
            self.todo.remove(index)
            run = self._run(index)
            resume = run is not None
            if run is None:
                run_id = new_run_id(self.spec.method, self.spec.data, self.trials[index]["seed"])
                run = RunStore.create(self.runs_dir, run_id, self.configs[index].to_dict())
                self.trials[index]["run_id"] = run_id
            self.trials[index]["reason"] = ""
            self._save()
            self.executor.submit(run.path, resume)
            self.in_flight.add(index)
            log.info("trial %d/%d → run %s%s", index + 1, len(self.trials), run.id, " (resumed)" if resume else "")

    def _may_start(self, index: int) -> bool:
        """A trial starts when its group's autoencoder is cached, or when none of its group is training
        (it then pretrains for the group)."""
        group = self.groups[index]
        return group is None or group in self.passed or not any(
            self.groups[i] == group for i in self.in_flight | self.outside)

    def _watch(self) -> None:
        """Note the groups whose pretraining a running trial has passed; forget outside trials that ended."""
        for index in self.in_flight | self.outside:
            status = self._run(index).read_status()
            if status.get("phase") in PAST_PRETRAINING or status.get("state") == "finished":
                self._mark_passed(index)
        self.outside = {i for i in self.outside if run_state(self._run(i)) in ("queued", "running")}

    def _ended(self, ended: Ended) -> None:
        index = next(i for i in self.in_flight if self.trials[i]["run_id"] == ended.run_id)
        self.in_flight.discard(index)
        run = self._run(index)
        status = run.read_status()
        if status.get("state") == "finished":
            self._mark_passed(index)
        if status.get("state") in ("queued", "running"):  # the process ended without a final state
            tail = log_tail(run, 1)
            self.trials[index]["reason"] = ended.error or (
                f"the training process exited with code {ended.returncode}" + (f": {tail}" if tail else ""))
            self._save()
        log.info("trial %d/%d (run %s) ended: %s", index + 1, len(self.trials), run.id, status.get("state"))

    def _stop_trials(self) -> None:
        log.info("sweep %s: stopping %d running trials", self.store.id, len(self.in_flight | self.outside))
        for index in self.in_flight | self.outside:
            self._run(index).request_stop()

    def _report(self) -> None:
        if self.progress is None:
            return
        states = [run_state(run) if run else "pending" for run in map(self._run, range(len(self.trials)))]
        counts = (states.count("finished"), sum(s in FAILED_STATES for s in states),
                  sum(s in ("queued", "running") for s in states))
        if counts != self.last_progress:
            self.last_progress = counts
            self.progress(SweepProgress(len(states), *counts, elapsed=time.perf_counter() - self.t0))

    def _save(self) -> None:
        self.manifest = {**self.store.read_manifest(), "trials": self.trials}
        self.store.write_manifest(self.manifest)


def _group(config) -> str | None:
    signature = pretrain_signature(config)
    return None if signature is None else json.dumps(signature, sort_keys=True)


def new_manifest(spec: SweepSpec, runs_dir: Path) -> dict:
    """The manifest of a sweep not started yet: its spec, its trials (no runs yet), the runs folder."""
    return {"spec": spec.to_dict(), "state": "queued", "reason": "", "runs_dir": str(Path(runs_dir).resolve()),
            "trials": [{"settings": t.settings, "seed": t.seed, "run_id": None, "reason": ""} for t in spec.trials()]}
