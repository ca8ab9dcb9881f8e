"""The projector: 2-D pictures of a run's latent snapshots, one frame per epoch, cached on disk.

Three kinds of frame, all written to ``runs/<id>/frames/<kind>/epoch_NNNN.npz`` (``xy`` (S, 2),
optional ``centroids`` (K, 2), ``previous``, ``seconds``):

``pca``
    PCA of the epoch's codes, rotated (no scaling) onto the previous frame so that sign flips and
    swapped axes do not make the picture jump. Milliseconds per frame: computed on demand.
``tsne``
    openTSNE. The first frame is an ordinary fit; every later frame builds perplexity affinities on
    the new codes and continues gradient descent from the previous frame, with no early
    exaggeration, so points move instead of being redrawn. Centroids are placed at the median of
    their nearest codes' positions (openTSNE's ``prepare_partial``, the start of ``transform``).
``umap``
    umap-learn with ``init=`` the previous frame, then Procrustes-aligned onto it (UMAP rescales
    any initialisation into a box, so without the alignment frames would jump). Centroids go
    through the fitted model's ``transform``.

Frames are computed in order: frame *t* needs frame *t-1*. For long runs only a schedule of epochs
gets a frame (at most about ``MAX_FRAMES``; phase boundaries always), and the chain warm-starts from
whichever earlier frame exists, so any subset of frames is valid.

t-SNE and UMAP frames take seconds, and UMAP's first fit in a process compiles numba code for
tens of seconds, so the app never computes them in its script thread: ``BackgroundProjector``
starts ``python -m core.embed serve`` (a separate, lower-priority process that warms UMAP up at
once) and sends it requests; pages read whatever frames are ready.
"""
from __future__ import annotations

import argparse
import json
import logging
import math
import os
import subprocess
import sys
import threading
import time
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from scipy.linalg import orthogonal_procrustes

from core.runs import ACTIVE_STATES, RunIdError, RunStore, run_path
from core.storage import atomic_save_npz

log = logging.getLogger(__name__)

KINDS: dict[str, str] = {"tsne": "t-SNE", "umap": "UMAP", "pca": "PCA"}
MAX_FRAMES = 80
TSNE_WARM_ITERATIONS = 100
UMAP_WARM_EPOCHS = 60
# A warm UMAP fit starts from a finished layout, so it takes small steps: at umap-learn's default 1.0
# the points of 200 unchanged blob codes were reshuffled within their clusters (Procrustes disparity
# 0.159 to the previous frame); at 0.1 they hold still (0.027), and after a large change of 3,000
# codes the warm frame was as trustworthy as a cold fit (0.975 vs 0.974, 10 neighbours).
UMAP_WARM_LEARNING_RATE = 0.1
EXACT_NEIGHBOURS_UP_TO = 5000  # below this, brute-force kNN beats building an Annoy index


@dataclass(frozen=True)
class Frame:
    """One epoch's 2-D picture.

    Attributes
    ----------
    epoch : the snapshot epoch it shows.
    xy : (S, 2) positions of the snapshot's samples, in the order of ``snapshots/indices.npz``.
    centroids : (K, 2) positions of the cluster centres, or None before the clusters exist.
    previous : the epoch of the frame it was warm-started from (None for a cold start).
    seconds : how long it took to compute.
    """

    epoch: int
    xy: np.ndarray
    centroids: np.ndarray | None
    previous: int | None
    seconds: float


# ------------------------------------------------------------------------------------------------
# Alignment
# ------------------------------------------------------------------------------------------------

def align_to(moving: np.ndarray, fixed: np.ndarray, scale: bool = True,
             extra: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray | None]:
    """Rotate (and reflect, translate, optionally scale) ``moving`` onto ``fixed``.

    Parameters
    ----------
    moving : (S, 2) the new frame.
    fixed : (S, 2) the previous frame, same samples in the same order.
    scale : also fit one uniform scale factor (UMAP frames live in an arbitrary box; PCA frames
        keep their own scale, which says how spread the codes are).
    extra : (K, 2) points moved by the same transform (the centroids).

    Returns
    -------
    The aligned ``moving`` and ``extra``.
    """
    moving_mean, fixed_mean = moving.mean(0), fixed.mean(0)
    a, b = moving - moving_mean, fixed - fixed_mean
    rotation, singular_sum = orthogonal_procrustes(a, b)  # min ||a R - b||
    factor = singular_sum / max(float((a ** 2).sum()), 1e-12) if scale else 1.0

    def transform(points):
        return (points - moving_mean) @ rotation * factor + fixed_mean

    return transform(moving), None if extra is None else transform(extra)


# ------------------------------------------------------------------------------------------------
# One frame of each kind
# ------------------------------------------------------------------------------------------------

def project_pca(z: np.ndarray, previous: np.ndarray | None, centroids: np.ndarray | None,
                random_state: int = 0) -> tuple[np.ndarray, np.ndarray | None]:
    """PCA of ``z`` (S, d), rotated onto ``previous`` (S, 2) when given; centroids (K, d) alike."""
    from sklearn.decomposition import PCA

    pca = PCA(n_components=2, random_state=random_state).fit(z)
    xy = pca.transform(z)
    cxy = None if centroids is None else pca.transform(centroids)
    if previous is not None:
        xy, cxy = align_to(xy, previous, scale=False, extra=cxy)
    return xy, cxy


def project_tsne(z: np.ndarray, previous: np.ndarray | None, centroids: np.ndarray | None,
                 random_state: int = 0, n_jobs: int = 1,
                 warm_iterations: int = TSNE_WARM_ITERATIONS) -> tuple[np.ndarray, np.ndarray | None]:
    """t-SNE of ``z`` (S, d); warm-started from ``previous`` (S, 2) without early exaggeration.

    ``n_jobs`` defaults to 1: on a 2-core machine that is also training, a second thread made
    Barnes-Hut gradient descent five times slower (3.5 s instead of 0.7 s for 100 iterations).
    """
    from openTSNE import TSNEEmbedding, affinity, initialization

    n = len(z)
    perplexity = float(min(30.0, max((n - 1) / 3.0, 2.0)))
    method = "exact" if n <= EXACT_NEIGHBOURS_UP_TO else "auto"
    with warnings.catch_warnings():  # openTSNE warns about perplexity on tiny inputs; not actionable here
        warnings.simplefilter("ignore")
        affinities = affinity.PerplexityBasedNN(z, perplexity=perplexity, method=method, n_jobs=n_jobs,
                                                random_state=random_state, verbose=False)
        if previous is None:
            start = initialization.pca(z, random_state=random_state)
            embedding = TSNEEmbedding(start, affinities, negative_gradient_method="auto", n_jobs=n_jobs,
                                      random_state=random_state)
            embedding = embedding.optimize(250, exaggeration=12, momentum=0.5)
            embedding = embedding.optimize(500, momentum=0.8)
        else:
            # The previous frame is already at t-SNE's working scale, so it is used as it is; the
            # caution about rescaling concerns arbitrary inits, not an optimised embedding.
            embedding = TSNEEmbedding(np.asarray(previous, dtype=np.float64), affinities,
                                      negative_gradient_method="auto", n_jobs=n_jobs, random_state=random_state)
            embedding = embedding.optimize(warm_iterations, exaggeration=1, momentum=0.8)
        cxy = None
        if centroids is not None:
            # The median of the centroids' nearest codes' positions: transform()'s own starting
            # point. Its 250 optimisation steps cost ~8 s for 10 points and barely move them.
            k = int(min(25, n))
            cxy = np.asarray(embedding.prepare_partial(centroids.astype(np.float64), initialization="median", k=k))
    return np.asarray(embedding), cxy


def project_umap(z: np.ndarray, previous: np.ndarray | None, centroids: np.ndarray | None,
                 random_state: int = 0, warm_epochs: int = UMAP_WARM_EPOCHS,
                 learning_rate: float = UMAP_WARM_LEARNING_RATE) -> tuple[np.ndarray, np.ndarray | None]:
    """UMAP of ``z`` (S, d) with ``init=previous``, Procrustes-aligned onto ``previous``."""
    import umap

    n = len(z)
    # force_approximation_algorithm: below 4,096 points umap-learn would compute all pairwise
    # distances through a Python callback (2.4 s at 1,800 points); NN-descent takes 0.3 s and
    # leaves the search index that ``transform`` needs for the centroids.
    model = umap.UMAP(n_neighbors=int(min(15, n - 1)), min_dist=0.1, random_state=random_state,
                      init="spectral" if previous is None else np.asarray(previous, dtype=np.float64),
                      n_epochs=None if previous is None else warm_epochs,
                      learning_rate=1.0 if previous is None else learning_rate, force_approximation_algorithm=True)
    with warnings.catch_warnings():  # "n_jobs overridden by random_state" and similar notices
        warnings.simplefilter("ignore")
        xy = model.fit_transform(z)
        cxy = None if centroids is None else model.transform(centroids.astype(np.float32))
    if previous is not None:
        xy, cxy = align_to(xy, previous, scale=True, extra=cxy)
    return xy, cxy


PROJECTIONS = {"pca": project_pca, "tsne": project_tsne, "umap": project_umap}


def warm_up_umap(random_state: int = 0) -> float:
    """Compile umap-learn's numba code (fit, warm fit, transform) on a tiny input; returns seconds.

    The first UMAP fit in a process compiles for 10–30 s; doing it here, at app start in the
    background, keeps that wait away from the first click on "UMAP".
    """
    started = time.perf_counter()
    rng = np.random.default_rng(random_state)
    z = rng.normal(size=(300, 10)).astype(np.float32)
    centres = z[:5]
    xy, _ = project_umap(z, None, centres, random_state)
    project_umap(z + 0.01, xy, centres, random_state)
    seconds = time.perf_counter() - started
    log.info("UMAP warmed up in %.1f s", seconds)
    return seconds


# ------------------------------------------------------------------------------------------------
# Frames of a run on disk
# ------------------------------------------------------------------------------------------------

def frame_path(store: RunStore, kind: str, epoch: int) -> Path:
    """Where the ``kind`` frame of ``epoch`` is cached: ``runs/<id>/frames/<kind>/epoch_NNNN.npz``."""
    return store.path / "frames" / kind / f"epoch_{epoch:04d}.npz"


def ready_epochs(store: RunStore, kind: str) -> list[int]:
    """Epochs whose ``kind`` frame is on disk, ascending."""
    folder = store.path / "frames" / kind
    return sorted(int(p.stem[6:]) for p in folder.glob("epoch_*.npz")) if folder.is_dir() else []


def load_frame(store: RunStore, kind: str, epoch: int) -> Frame | None:
    """The cached frame, or None when it is not computed (yet)."""
    try:
        with np.load(frame_path(store, kind, epoch), allow_pickle=False) as npz:
            centroids = npz["centroids"] if "centroids" in npz.files else None
            previous = int(npz["previous"])
            return Frame(epoch, npz["xy"], centroids, None if previous < 0 else previous, float(npz["seconds"]))
    except (FileNotFoundError, ValueError, OSError):  # not there, or a file from an older layout
        return None


def frame_epochs(store: RunStore, max_frames: int = MAX_FRAMES) -> list[int]:
    """The snapshot epochs that get a frame: every ``stride``-th epoch, phase starts, and the last one.

    ``stride`` keeps a long run to about ``max_frames`` frames. The newest snapshot of a run that
    is still training is left out unless it falls on the stride, so following a live run does not
    compute a frame for every epoch.
    """
    epochs = store.snapshot_epochs()
    if not epochs:
        return []
    status = store.read_status()
    total = int(status.get("total_epochs") or epochs[-1])
    stride = max(1, math.ceil(total / max_frames))
    chosen = {e for e in epochs if (e - 1) % stride == 0}
    metrics = store.read_metrics()
    if "phase" in metrics.columns and len(metrics):
        starts = metrics["epoch"][metrics["phase"].ne(metrics["phase"].shift())]
        chosen |= {int(e) for e in starts} & set(epochs)
    if status.get("state") not in ACTIVE_STATES:
        chosen.add(epochs[-1])
    return sorted(chosen)


def missing_epochs(store: RunStore, kind: str, upto: int | None = None) -> list[int]:
    """Scheduled epochs (≤ ``upto``) without a ``kind`` frame yet, ascending."""
    ready = set(ready_epochs(store, kind))
    return [e for e in frame_epochs(store) if e not in ready and (upto is None or e <= upto)]


def compute_frame(store: RunStore, kind: str, epoch: int, random_state: int = 0) -> Frame:
    """Compute, cache and return the ``kind`` frame of ``epoch``, warm-started from the nearest earlier frame."""
    if kind not in PROJECTIONS:
        raise ValueError(f"unknown projection {kind!r}; choose from {', '.join(PROJECTIONS)}")
    snapshot = store.load_snapshot(epoch)
    earlier = [e for e in ready_epochs(store, kind) if e < epoch]
    previous = load_frame(store, kind, earlier[-1]) if earlier else None
    if previous is not None and len(previous.xy) != len(snapshot["z"]):
        previous = None  # a different subsample (should not happen): start cold rather than fail
    started = time.perf_counter()
    xy, cxy = PROJECTIONS[kind](snapshot["z"].astype(np.float32, copy=False),
                                None if previous is None else previous.xy,
                                snapshot.get("centroids"), random_state)
    seconds = time.perf_counter() - started
    arrays = {"xy": xy.astype(np.float32), "previous": np.int64(-1 if previous is None else previous.epoch),
              "seconds": np.float64(seconds)}
    if cxy is not None:
        arrays["centroids"] = cxy.astype(np.float32)
    atomic_save_npz(frame_path(store, kind, epoch), **arrays)
    log.debug("%s frame %d of %s in %.2f s", kind, epoch, store.id, seconds)
    return Frame(epoch, arrays["xy"], arrays.get("centroids"), None if previous is None else previous.epoch, seconds)


def compute_frames(store: RunStore, kind: str, upto: int | None = None, max_seconds: float | None = None) -> list[int]:
    """Compute the missing scheduled frames up to ``upto`` in order; returns the epochs computed.

    ``max_seconds`` stops after the frame that crosses that budget (the caller asks again later).
    """
    started, done = time.perf_counter(), []
    for epoch in missing_epochs(store, kind, upto):
        compute_frame(store, kind, epoch)
        done.append(epoch)
        if max_seconds is not None and time.perf_counter() - started > max_seconds:
            break
    return done


# ------------------------------------------------------------------------------------------------
# What Explore shows for one epoch
# ------------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class EpochView:
    """A frame joined with what is known about its samples at that epoch.

    Attributes
    ----------
    epoch : the epoch asked for; ``frame.epoch`` may be earlier while that frame is computing.
    frame : the 2-D picture shown.
    sample_index : (S,) row of each point in the data set.
    true_labels : (S,) class of each point, or None for unlabelled data.
    clusters, confidence : (S,) predicted cluster and its soft-assignment probability at
        ``frame.epoch``, or None before the clusters exist.
    changed : (S,) bool, cluster differs from ``previous_epoch``'s (None without both).
    previous_epoch : the scheduled epoch before ``frame.epoch`` that ``changed`` compares with.
    """

    epoch: int
    frame: Frame
    sample_index: np.ndarray
    true_labels: np.ndarray | None
    clusters: np.ndarray | None
    confidence: np.ndarray | None
    changed: np.ndarray | None
    previous_epoch: int | None


def epoch_view(store: RunStore, kind: str, epoch: int) -> EpochView | None:
    """The newest ready ``kind`` frame at or before ``epoch``, with its samples' labels; None if none is ready."""
    ready = [e for e in ready_epochs(store, kind) if e <= epoch]
    frame = load_frame(store, kind, ready[-1]) if ready else None
    if frame is None:
        return None
    return _views(store, [frame], epoch)[0]


def epoch_views(store: RunStore, kind: str) -> list[EpochView]:
    """Every ready ``kind`` frame of the schedule, in order, with labels: the frames of an animation."""
    scheduled = set(frame_epochs(store))
    frames = [load_frame(store, kind, e) for e in ready_epochs(store, kind) if e in scheduled]
    return _views(store, [f for f in frames if f is not None])


def _views(store: RunStore, frames: list[Frame], asked: int | None = None) -> list[EpochView]:
    """Join frames with their snapshots' labels, reading each snapshot once."""
    indices = store.load_snapshot_indices()
    schedule = frame_epochs(store)
    labels: dict[int, tuple[np.ndarray | None, np.ndarray | None]] = {}

    def labels_of(epoch: int):
        if epoch not in labels:
            with np.load(store.path / "snapshots" / f"epoch_{epoch:04d}.npz", allow_pickle=False) as npz:
                labels[epoch] = (npz["labels"] if "labels" in npz.files else None,
                                 npz["confidence"] if "confidence" in npz.files else None)
        return labels[epoch]

    views = []
    for frame in frames:
        clusters, confidence = labels_of(frame.epoch)
        earlier = [e for e in schedule if e < frame.epoch]
        changed = previous_epoch = None
        if clusters is not None and earlier:
            previous_epoch = earlier[-1]
            before = labels_of(previous_epoch)[0]
            changed = None if before is None else clusters != before
        views.append(EpochView(frame.epoch if asked is None else asked, frame, indices["indices"],
                               indices.get("labels"), clusters, confidence, changed, previous_epoch))
    return views


def centroid_trails(frames: list[Frame], upto: int) -> np.ndarray | None:
    """Each centroid's path through the frames up to epoch ``upto``: (K, F, 2) over the F frames (in epoch
    order) that have centroids, the last row of each path being its position at the newest of them; None
    when none has (pretraining)."""
    placed = sorted((f for f in frames if f.epoch <= upto and f.centroids is not None), key=lambda f: f.epoch)
    if not placed:
        return None
    return np.stack([f.centroids for f in placed], axis=1)  # (K, F, 2)


def colour_slots(true_labels: np.ndarray | None, clusters: np.ndarray | None, n_clusters: int) -> np.ndarray:
    """For each cluster, the colour slot of its Hungarian-matched class (unmatched clusters after them).

    Colouring cluster *c* like the class it stands for makes "predicted cluster" and "true label"
    pictures directly comparable.
    """
    slots = np.arange(n_clusters)
    if true_labels is None or clusters is None:
        return slots
    from scipy.optimize import linear_sum_assignment

    n_classes = int(true_labels.max()) + 1
    table = np.zeros((n_classes, n_clusters), np.int64)
    np.add.at(table, (true_labels, clusters), 1)
    classes, matched = linear_sum_assignment(table, maximize=True)
    slots = np.full(n_clusters, -1)
    slots[matched] = classes
    free = iter(sorted(set(range(max(n_clusters, n_classes))) - set(classes.tolist())))
    for cluster in range(n_clusters):
        if slots[cluster] < 0:
            slots[cluster] = next(free)
    return slots


# ------------------------------------------------------------------------------------------------
# The background process
# ------------------------------------------------------------------------------------------------

class BackgroundProjector:
    """Client of one ``python -m core.embed serve`` process; safe to share between app sessions.

    Parameters
    ----------
    warm_up : compile UMAP in the worker at once (the app does; tests that never show UMAP do not).
    nice : added to the worker's niceness, so that a training run on the same CPU keeps priority.
    """

    def __init__(self, warm_up: bool = True, nice: int = 5):
        self.warm_up = warm_up
        self.nice = nice
        self.umap_ready = not warm_up  # without a warm-up, UMAP compiles on its first request
        self.umap_warmup_seconds: float | None = None
        self.errors: dict[tuple[str, str], str] = {}
        self.last_frame_seconds: dict[str, float] = {}
        self._lock = threading.Lock()
        self._process: subprocess.Popen | None = None
        self._start()

    def _start(self) -> None:
        command = [sys.executable, "-m", "core.embed", "serve", "--nice", str(self.nice)]
        if self.warm_up:
            command.append("--warm-up")
        root = Path(__file__).resolve().parents[1]
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(root), os.environ.get("PYTHONPATH")]))}
        # One thread each: the worker shares the CPU with training, and oversubscribed threads
        # slowed numba and Barnes-Hut several-fold on a 2-core machine.
        env.setdefault("NUMBA_NUM_THREADS", "1")
        env.setdefault("OMP_NUM_THREADS", "1")
        self._process = subprocess.Popen(command, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                         stderr=subprocess.DEVNULL, text=True, bufsize=1, env=env)
        threading.Thread(target=self._read_events, args=(self._process,), daemon=True,
                         name="projector-events").start()

    def _read_events(self, process: subprocess.Popen) -> None:
        for line in process.stdout:
            try:
                event = json.loads(line)
            except json.JSONDecodeError:
                continue
            kind = event.get("kind", "")
            if event.get("event") == "warm":
                self.umap_ready, self.umap_warmup_seconds = True, event["seconds"]
            elif event.get("event") == "frame":
                self.last_frame_seconds[kind] = event["seconds"]
                self.errors.pop((event["run"], kind), None)
            elif event.get("event") == "error":
                self.errors[(event["run"], kind)] = event["message"]

    @property
    def alive(self) -> bool:
        """Whether the worker process is running."""
        return self._process is not None and self._process.poll() is None

    def request(self, run_path: str | os.PathLike, kind: str, upto: int | None = None) -> None:
        """Ask for the missing ``kind`` frames of a run up to epoch ``upto``; returns at once."""
        run_path = Path(run_path).resolve()
        message = json.dumps({"runs": str(run_path.parent), "run": run_path.name, "kind": kind, "upto": upto}) + "\n"
        with self._lock:
            if not self.alive:
                log.warning("projector process ended (code %s); starting a new one",
                            None if self._process is None else self._process.returncode)
                self._start()
            try:
                self._process.stdin.write(message)
                self._process.stdin.flush()
            except (BrokenPipeError, OSError):
                self._start()
                self._process.stdin.write(message)
                self._process.stdin.flush()

    def error(self, run_path: str | os.PathLike, kind: str) -> str | None:
        """The last failure computing ``kind`` frames of that run, or None."""
        return self.errors.get((str(Path(run_path).resolve()), kind))

    def close(self) -> None:
        """End the worker: it exits at the end of its input (killed if it has not within 5 s)."""
        with self._lock:
            if self._process is not None and self._process.poll() is None:
                self._process.stdin.close()  # the worker exits at end of input
                try:
                    self._process.wait(timeout=5)
                except subprocess.TimeoutExpired:
                    self._process.kill()


class _Worker:
    """The serve loop: the most recently requested (run, kind) gets the next frame."""

    def __init__(self, events, warm_up: bool):
        self.events = events
        self.pending: dict[tuple[str, str], tuple[int | None, float]] = {}
        self.condition = threading.Condition()
        self.closed = False
        self.umap_ready = threading.Event()
        if warm_up:
            threading.Thread(target=self._warm_up, daemon=True, name="umap-warm-up").start()
        else:
            self.umap_ready.set()

    def _emit(self, **event) -> None:
        with self.condition:
            self.events.write(json.dumps(event) + "\n")
            self.events.flush()

    def _warm_up(self) -> None:
        try:
            seconds = warm_up_umap()
        except Exception as err:  # UMAP broken: t-SNE and PCA still work, UMAP requests report it
            log.exception("UMAP warm-up failed")
            seconds = float("nan")
            self._emit(event="error", run="", kind="umap", message=f"UMAP warm-up failed: {err}")
        self.umap_ready.set()
        self._emit(event="warm", kind="umap", seconds=seconds)
        with self.condition:
            self.condition.notify_all()

    def read_requests(self, lines) -> None:
        """Queue each JSON request line; a newer request for the same (run, kind) replaces the older."""
        for line in lines:
            try:
                request = json.loads(line)
                key = (str(run_path(request["runs"], request["run"])), request["kind"])
            except (json.JSONDecodeError, KeyError, TypeError, RunIdError):
                log.warning("ignoring malformed request %r", line)
                continue
            with self.condition:
                self.pending[key] = (request.get("upto"), time.monotonic())
                self.condition.notify_all()
        with self.condition:
            self.closed = True
            self.condition.notify_all()

    def _next_job(self) -> tuple[tuple[str, str], int | None, float] | None:
        with self.condition:
            while not self.closed:
                runnable = [(stamp, key, upto) for key, (upto, stamp) in self.pending.items()
                            if key[1] != "umap" or self.umap_ready.is_set()]
                if runnable:
                    stamp, key, upto = max(runnable)
                    return key, upto, stamp
                self.condition.wait(timeout=1.0)
            return None

    def serve(self) -> None:
        """Compute one frame at a time for the most recent request until the requests end."""
        while (job := self._next_job()) is not None:
            (run, kind), upto, stamp = job
            store = RunStore(run)
            try:
                missing = missing_epochs(store, kind, upto) if store.path.is_dir() else []
                if missing:
                    frame = compute_frame(store, kind, missing[0])
                    self._emit(event="frame", run=run, kind=kind, epoch=frame.epoch, seconds=frame.seconds)
                    continue
            except Exception as err:
                log.exception("frame of %s (%s) failed", run, kind)
                self._emit(event="error", run=run, kind=kind, message=f"{type(err).__name__}: {err}")
            with self.condition:  # done (or failed): forget it unless it was asked for again meanwhile
                if self.pending.get((run, kind), (None, None))[1] == stamp:
                    del self.pending[(run, kind)]


def serve(warm_up: bool = True, nice: int = 0, requests=None, events=None) -> None:
    """Run the projector loop: JSON requests on ``requests`` (stdin), JSON events on ``events`` (stdout).

    Ends when ``requests`` reaches its end, i.e. when the app that started it goes away.
    """
    if nice:
        try:
            os.nice(nice)
        except (AttributeError, OSError):  # not on this platform, or not allowed
            pass
    worker = _Worker(events or sys.stdout, warm_up)
    threading.Thread(target=worker.read_requests, args=(requests or sys.stdin,), daemon=True,
                     name="projector-requests").start()
    worker.serve()


def main(argv: list[str] | None = None) -> int:
    """``python -m core.embed serve`` (the app's worker) or ``compute --run-dir DIR --kind tsne`` (by hand)."""
    parser = argparse.ArgumentParser(prog="python -m core.embed", description="2-D frames of a run's snapshots")
    commands = parser.add_subparsers(dest="command", required=True)
    serve_parser = commands.add_parser("serve", help="answer frame requests on stdin (used by the app)")
    serve_parser.add_argument("--warm-up", action="store_true", help="compile UMAP at once")
    serve_parser.add_argument("--nice", type=int, default=0)
    compute = commands.add_parser("compute", help="compute the frames of one run")
    compute.add_argument("--run-dir", type=Path, required=True)
    compute.add_argument("--kind", choices=sorted(PROJECTIONS), default="tsne")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s", stream=sys.stderr)
    if args.command == "serve":
        serve(args.warm_up, args.nice)
    else:
        done = compute_frames(RunStore(args.run_dir), args.kind)
        log.info("computed %d %s frames", len(done), args.kind)
    return 0


if __name__ == "__main__":
    sys.exit(main())
