"""The one training loop every method, the CLI, the app and the benchmarks share.

Phases run in order: ``pretrain`` (if the method has it; served from the autoencoder cache when the
same data, architecture, pretraining settings and seed were seen before, or replaced by the imported
weights the run names, as one row of the loaded codes) → ``init`` (the method's
cluster initialisation) → ``cluster`` (if the method has it). After every epoch the trainer evaluates
the model, writes a metrics row, a latent snapshot and a checkpoint, and calls the callbacks with the
epoch's event; a callback returning True stops the run, as does the run's stop file or ``stop_event``.
Nothing in this file knows a particular method.
"""
from __future__ import annotations

import contextlib
import datetime as dt
import functools
import logging
import math
import os
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch

from core.data import DataError, ImageDataset
from core.methods import Batch, Method, get_method
from core.methods.base import assign_all, encode_all
from core.metrics import evaluate
from core.models import prefer_channels_last
from core.repro import describe_device, library_versions, resolve_device, seed_everything
from core.runs import RunStore
from core.storage import LockHeld, file_lock
from core.train.cache import AutoencoderCache, pretrain_signature
from core.train.config import RunConfig
from core.train.init_weights import WeightsError, load_into

log = logging.getLogger(__name__)

Callback = Callable[[dict], "bool | None"]
STATUS_INTERVAL_S = 2.0
LOCK_POLL_S = 0.5


class StopTraining(Exception):
    """Raised inside the loop when a stop was requested; carries the reason."""


@dataclass
class _Position:
    """Where the run stands; saved in every checkpoint."""

    epoch: int = 0          # rows written so far (the global epoch counter)
    phase: int = 0          # index into the phase plan
    phase_epoch: int = 0    # epochs finished in the current phase
    step: int = 0           # optimisation steps taken in the cluster phase
    elapsed: float = 0.0    # training seconds before this process


class Trainer:
    """Runs one configured method on one data set into one run directory.

    Parameters
    ----------
    config : the resolved run configuration.
    dataset : the images (and labels, for the metrics).
    store : the run directory to write.
    callbacks : called with each epoch's event dict; returning True stops the run.
    stop_event : another thread's way to stop the run between batches.
    cache : where pretrained autoencoders are kept (default: the user cache).
    """

    def __init__(self, config: RunConfig, dataset: ImageDataset, store: RunStore,
                 callbacks: list[Callback] | None = None, stop_event: threading.Event | None = None,
                 cache: AutoencoderCache | None = None):
        self.config = config
        self.dataset = dataset
        self.store = store
        self.callbacks = list(callbacks or [])
        self.stop_event = stop_event or threading.Event()
        self.cache = cache or AutoencoderCache()
        self.device = resolve_device(config.device)
        config.check_samples(len(dataset), dataset.n_classes)
        self.n_clusters = config.n_clusters or dataset.n_classes or 10
        method_cls: type[Method] = get_method(config.method)
        self.method = method_cls(config.params, self.n_clusters, config.seed)
        self.plan = [p for p in ("pretrain", "init", "cluster") if p == "init" or p in method_cls.phases]
        self.rows: list[dict] = []
        self.previous_labels: np.ndarray | None = None
        self.finish_reason = ""
        self._last_status = 0.0

    # ------------------------------------------------------------------------------------------------
    def run(self, resume: bool = False) -> dict:
        """Train to the end (or to a stop); returns the last metrics row.

        A run has one writer: its lock (``RunStore.writer``) is held for the whole training, and a second
        trainer on the same run raises ``LockHeld`` before it touches anything. A resume refuses data other
        than the run's (``DataError``), then deletes what a killed writer left half-written and the stop
        request that ended the run.
        """
        with self.store.writer():
            return self._train(resume)

    def _train(self, resume: bool) -> dict:
        generator = seed_everything(self.config.seed)
        x = torch.from_numpy(self.dataset.x).to(self.device)  # (N, C, H, W), resident on the device
        self.model, self.x = prefer_channels_last(self.method.build(self.dataset.shape).to(self.device), x)
        position = _Position()
        optimizer = None
        if resume:
            self._check_same_data()
            self.store.discard_partial_writes()
            self.store.clear_stop()  # the stop that ended it was acted on
        checkpoint = self.store.load_checkpoint(map_location=self.device) if resume else None
        if checkpoint:
            position, optimizer = self._restore(checkpoint, generator)
        else:
            self._start_fresh()
        self.store.write_status("running", pid=os.getpid(), host=socket.gethostname(),
                                started=self.store.read_status().get("started") or _now(),
                                total_epochs=self._total_epochs(), reason="")
        self._t0 = time.perf_counter() - position.elapsed
        try:
            while position.phase < len(self.plan):
                phase = self.plan[position.phase]
                if position.phase_epoch == 0:
                    # Each phase starts from its own seed, so a cached pretraining and a fresh one
                    # lead to the same clustering phase.
                    generator = seed_everything(self.config.seed + 1000 * position.phase)
                if phase == "init":
                    self._init(position)
                else:
                    optimizer = optimizer or self.method.optimizer(self.model, phase)
                    finished = self._train_phase(phase, position, optimizer, generator)
                    optimizer = None
                    if not finished:  # the method ended the run: no phase follows
                        position.phase = len(self.plan)
                        self._checkpoint(position, optimizer, generator)
                        break
                position.phase += 1
                position.phase_epoch = 0
                self._checkpoint(position, optimizer, generator)
            self._finish()
        except StopTraining as stop:
            self.store.write_status("stopped", reason=str(stop))
            log.info("run %s stopped: %s", self.store.id, stop)
        except (FloatingPointError, WeightsError) as err:
            self.store.write_status("failed", reason=str(err))
            log.error("run %s failed: %s", self.store.id, err)
        except Exception as err:
            self.store.write_status("failed", reason=f"{type(err).__name__}: {err}")
            raise
        return self.rows[-1] if self.rows else {}

    # -- phases -----------------------------------------------------------------------------------
    def _train_phase(self, phase: str, position: _Position, optimizer, generator) -> bool:
        """Train epochs of a phase; returns False when the method ended the run (converged or out of iterations)."""
        n_epochs = self._phase_epochs(phase)
        if n_epochs == 0:
            return True
        if phase == "pretrain" and position.phase_epoch == 0 and self.config.init_weights:
            self._import_weights()
            position.epoch += n_epochs
            self._record(position, phase, {"imported": 1.0}, epoch_time=0.0)
            return True
        if phase == "pretrain" and self.method.pretrained_part(self.model) is not None:
            # One process at a time pretrains a cache entry; one that waited finds it in the cache.
            with self._cache_entry_lock(position):
                if position.phase_epoch == 0 and self._load_pretrained():
                    position.epoch += n_epochs
                    self._record(position, phase, {"cached": 1.0}, epoch_time=0.0)
                    return True
                return self._train_epochs(phase, position, optimizer, generator, n_epochs)
        return self._train_epochs(phase, position, optimizer, generator, n_epochs)

    def _train_epochs(self, phase: str, position: _Position, optimizer, generator, n_epochs: int) -> bool:
        step_fn = self.method.pretrain_step if phase == "pretrain" else (
            lambda model, batch: self.method.training_step(model, batch, phase))
        n = len(self.x)
        batch_size = self.method.batch_size(phase, n) or self.config.trainer.batch_size
        self.method.on_phase_start(self.model, phase, optimizer, n_epochs, math.ceil(n / batch_size))
        while position.phase_epoch < n_epochs:
            started = time.perf_counter()
            extras = self.method.on_epoch_start(self.model, phase, position.epoch, self.x)
            order = torch.randperm(n, generator=generator).to(self.device)
            totals: dict[str, torch.Tensor] = {}
            n_batches = math.ceil(n / batch_size)
            ended = None  # why the method ended the run, when it does
            self.model.train()
            for b in range(n_batches):
                self._check_stop(position, b, n_batches, phase)
                ended = phase == "cluster" and self.method.before_step(self.model, position.step, self.x)
                if ended:
                    self.finish_reason = f"{ended} (iteration {position.step})"
                    break
                index = order[b * batch_size:(b + 1) * batch_size]
                losses = step_fn(self.model, Batch(self.x[index], index))
                optimizer.zero_grad(set_to_none=True)
                losses["loss"].backward()
                optimizer.step()
                for name, value in losses.items():
                    totals[name] = totals.get(name, 0.0) + value.detach()
                if phase == "cluster":
                    position.step += 1
            steps = max(b + (not ended), 1)
            means = {name: (total / steps).item() for name, total in totals.items()}
            if not all(math.isfinite(v) for v in means.values()):
                raise FloatingPointError(f"the loss became NaN or infinite in epoch {position.epoch + 1} ({phase})")
            extras.update(self.method.on_epoch_end(self.model, phase, position.epoch))
            position.phase_epoch += 1
            position.epoch += 1
            extras.update({f"loss_{k}" if k != "loss" else k: v for k, v in means.items()})
            stop = self._record(position, phase, extras, time.perf_counter() - started)
            self._checkpoint(position, optimizer, generator)
            if phase == "pretrain" and position.phase_epoch == n_epochs:
                self._save_pretrained()
            if ended:
                return False
            if stop:
                raise StopTraining("a callback asked to stop")
        return True

    def _init(self, position: _Position) -> None:
        started = time.perf_counter()
        self.method.init_clusters(self.model, self.x)
        position.epoch += 1
        self._record(position, "init", {}, time.perf_counter() - started)

    # -- per-epoch record -------------------------------------------------------------------------
    def _record(self, position: _Position, phase: str, values: dict, epoch_time: float) -> bool:
        """Evaluate, write the metrics row and the snapshot, call the callbacks."""
        row = {"epoch": position.epoch, "phase": phase, "time": round(time.perf_counter() - self._t0, 3),
               "epoch_time": round(epoch_time, 3), **values}
        snapshot = self._evaluate(row)
        self.rows.append(row)
        self.store.write_metrics(self.rows)
        self.store.save_snapshot(position.epoch, **snapshot)
        event = {**row, "sizes": snapshot.get("sizes"), "total_epochs": self._total_epochs()}
        self.store.write_status("running", epoch=position.epoch, phase=phase, batch=None)
        return any(bool(callback(event)) for callback in self.callbacks)

    def _evaluate(self, row: dict) -> dict[str, np.ndarray]:
        """Fill the row's metrics in place; return the epoch's snapshot arrays."""
        z = encode_all(self.method, self.model, self.x[self.snapshot_index]).cpu().numpy()  # (S, d)
        alternatives = self.method.readouts(self.model, self.x)
        if self.dataset.y is not None:  # scored before the cluster initialisation too (DSCDAN's k-means on μ)
            for name, other in alternatives.items():
                row.update({f"{metric}_{name}": value
                            for metric, value in evaluate(self.dataset.y, other.cpu().numpy()).items()})
        centroids = self.method.centroids(self.model)
        if centroids is None:
            return {"z": z}
        q, labels = assign_all(self.method, self.model, self.x)  # (N, K), (N,)
        labels = labels.cpu().numpy()
        confidence = q.max(1).values.cpu().numpy()
        sizes = np.bincount(labels, minlength=self.n_clusters)
        if self.dataset.y is not None:
            row.update(evaluate(self.dataset.y, labels))
        row["changed"] = (float(np.mean(labels != self.previous_labels))
                          if self.previous_labels is not None else float("nan"))
        row["min_size"], row["max_size"] = int(sizes.min()), int(sizes.max())
        self.previous_labels = labels
        return {"z": z, "labels": labels[self.snapshot_index_np], "confidence": confidence[self.snapshot_index_np],
                "centroids": centroids.cpu().numpy(), "sizes": sizes}

    # -- stop, checkpoint, resume -------------------------------------------------------------------
    def _check_stop(self, position: _Position, batch: int, n_batches: int, phase: str) -> None:
        if self.stop_event.is_set() or self.store.stop_requested():
            raise StopTraining("stopped by request")
        now = time.perf_counter()
        if now - self._last_status > STATUS_INTERVAL_S:
            self._last_status = now
            self.store.write_status("running", epoch=position.epoch, phase=phase, batch=batch, batches=n_batches,
                                    elapsed=round(now - self._t0, 1))

    def _checkpoint(self, position: _Position, optimizer, generator) -> None:
        position.elapsed = time.perf_counter() - self._t0
        self.store.save_checkpoint({
            "position": vars(position).copy(), "model": self.model.state_dict(),
            "optimizer": optimizer.state_dict() if optimizer else None,
            "method": self.method.state_dict(), "rng": generator.get_state(),
            "previous_labels": None if self.previous_labels is None else torch.from_numpy(self.previous_labels)})

    def _restore(self, checkpoint: dict, generator) -> tuple[_Position, torch.optim.Optimizer | None]:
        position = _Position(**checkpoint["position"])
        self.model.load_state_dict(checkpoint["model"])
        self.method.load_state_dict(checkpoint["method"])
        generator.set_state(checkpoint["rng"])
        labels = checkpoint["previous_labels"]
        self.previous_labels = None if labels is None else labels.numpy()
        self._load_snapshot_index()
        self.rows = [r for r in self.store.read_metrics().to_dict("records") if r["epoch"] <= position.epoch]
        optimizer = None
        if checkpoint["optimizer"] is not None and position.phase < len(self.plan):
            optimizer = self.method.optimizer(self.model, self.plan[position.phase])
            optimizer.load_state_dict(checkpoint["optimizer"])
        log.info("resuming %s at epoch %d (%s)", self.store.id, position.epoch, self.plan[min(position.phase,
                                                                                               len(self.plan) - 1)])
        return position, optimizer

    def _start_fresh(self) -> None:
        rng = np.random.default_rng(self.config.seed)
        size = min(self.config.trainer.snapshot_size, len(self.x))
        indices = np.sort(rng.choice(len(self.x), size, replace=False))
        self.store.save_snapshot_indices(indices, None if self.dataset.y is None else self.dataset.y[indices])
        self._load_snapshot_index()
        resolved = {**self.config.to_dict(), "n_clusters": self.n_clusters, "device_name": describe_device(self.device),
                    "resolved_device": str(self.device), "versions": library_versions(),
                    "n_samples": len(self.x), "image_shape": list(self.dataset.shape),
                    "data_fingerprint": self.data_fingerprint}
        self.store.write_config(resolved)

    def _load_snapshot_index(self) -> None:
        self.snapshot_index_np = self.store.load_snapshot_indices()["indices"]
        self.snapshot_index = torch.from_numpy(self.snapshot_index_np).to(self.device)

    def _finish(self) -> None:
        if self.method.centroids(self.model) is not None:
            q, labels = assign_all(self.method, self.model, self.x)
            self.store.save_assignments(labels.cpu().numpy(), q.max(1).values.cpu().numpy(), self.dataset.y)
        self.store.write_status("finished", reason=self.finish_reason or "all epochs done")

    def _check_same_data(self) -> None:
        """Refuse to resume on data other than the run started on (its metrics would mix two data sets)."""
        recorded = self.store.read_config().get("data_fingerprint")
        if recorded is not None and recorded != self.data_fingerprint:
            raise DataError(f"run {self.store.id} was trained on data with fingerprint {recorded}, but "
                            f"{self.config.data} now holds other data ({self.data_fingerprint}): start a new run")

    @functools.cached_property
    def data_fingerprint(self) -> str:
        """The data's content hash (``ImageDataset.fingerprint``), computed once."""
        return self.dataset.fingerprint()

    # -- pretraining cache ------------------------------------------------------------------------
    @functools.cached_property
    def pretrain_key(self) -> dict:
        """What identifies this run's pretrained autoencoder in the cache."""
        return {"data": self.data_fingerprint, "shape": list(self.dataset.shape),
                **pretrain_signature(self.config, self.n_clusters)}

    def _import_weights(self) -> None:
        """Load the run's weights file into the pretrained part, in place of pretraining."""
        layout = load_into(self.method, self.model, self.config.init_weights, self.config.init_weights_sha256)
        log.info("autoencoder imported from %s (read as %s)", self.config.init_weights, layout)

    def _load_pretrained(self) -> bool:
        part = self.method.pretrained_part(self.model)
        if part is None:
            return False
        state = self.cache.load(self.pretrain_key, self.device)
        if state is None:
            return False
        part.load_state_dict(state)
        log.info("pretrained autoencoder loaded from the cache")
        return True

    @contextlib.contextmanager
    def _cache_entry_lock(self, position: _Position):
        """Hold this run's cache entry lock, waiting (and still obeying a stop) while another process holds it."""
        path = self.cache.lock_path(self.pretrain_key)
        waiting = False
        while True:
            try:
                with file_lock(path, blocking=False):
                    yield
                return
            except LockHeld as held:
                if not waiting:
                    log.info("waiting for process %s, which pretrains the same autoencoder", held.pid)
                    waiting = True
                self._check_stop(position, 0, 1, "pretrain")
                time.sleep(LOCK_POLL_S)

    def _save_pretrained(self) -> None:
        part = self.method.pretrained_part(self.model)
        if part is not None:
            self.cache.save(self.pretrain_key, part.state_dict())

    # -- helpers -----------------------------------------------------------------------------------
    def _phase_epochs(self, phase: str) -> int:
        if phase == "pretrain":
            return 1 if self.config.init_weights else self.config.trainer.pretrain_epochs  # imported: one row
        return self.config.trainer.epochs

    def _total_epochs(self) -> int:
        return sum(1 if p == "init" else self._phase_epochs(p) for p in self.plan)


def _now() -> str:
    return dt.datetime.now().isoformat(timespec="seconds")
