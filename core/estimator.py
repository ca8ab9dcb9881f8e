"""``DeepClustering``: every ClusterLab method as a scikit-learn estimator whose fits are ordinary runs.

A fit builds the same ``RunConfig`` as the CLI (so the same validation refuses the same knobs), trains
with the same ``Trainer`` and writes an ordinary run directory: the app's Runs page lists it and Explore
shows it while it trains, and ``python -m core train --resume <run_id_>`` continues it. The array is
stored once in the user cache the way an upload is (``save_upload``), and the run's ``data`` names that
file, which is how the CLI finds the data again.

The trainer runs inside the calling process rather than as a launched run process (``core.launch``): a
notebook wants a failure as an exception it can inspect, the fitted model in memory for ``transform``
and ``predict``, and its progress bar in the cell's output.
"""
from __future__ import annotations

import inspect
import math
import numbers
import warnings
from pathlib import Path

import numpy as np
import torch
from sklearn.base import BaseEstimator, ClusterMixin, TransformerMixin
from sklearn.utils.validation import (check_consistent_length, check_is_fitted, check_non_negative, column_or_1d,
                                      validate_data)
from tqdm.auto import tqdm

from core.data import load_dataset, save_upload
from core.data.dataset import from_pixels
from core.methods import get_method
from core.methods.base import assign_all, encode_all
from core.models import prefer_channels_last
from core.runs import RunStore, default_runs_dir, new_run_id
from core.train import RunConfig, Trainer, TrainerConfig

UPLOAD_PREFIX = "array"  # the stored array's file name (and the run id's data part): array-<content hash>


class DeepClustering(ClusterMixin, TransformerMixin, BaseEstimator):
    """A ClusterLab method, fitted like a scikit-learn clusterer; each fit is a run the app can watch.

    Parameters
    ----------
    method : a registered method: ``kmeans``, ``ae-kmeans``, ``dec``, ``idec``, ``cdc``, ``decs``,
        ``secu``, ``dcss``, ``dscdan`` (``python -m core methods`` lists them with their knobs).
    n_clusters : K, at least 2; a fit needs at least 2·K samples.
    preset : a method preset (``paper``, ``fast``, or one the method adds), applied before the knobs.
    seed : seeds the weights, the batch order and k-means; the same seed on the same data and device
        gives the same ``labels_``.
    device : ``auto`` (cuda → mps → cpu), ``cpu``, ``cuda``, ``cuda:1``, ``mps``.
    runs_dir : where the run directory is written; default ``$CLUSTERLAB_RUNS`` or ``./runs``, where
        the app looks.
    verbose : 0 for silence, 1 for a progress bar over the run's epochs (tqdm's: a widget in Jupyter).
    **knobs : any knob of the method's config or of the trainer (``epochs``, ``pretrain_epochs``,
        ``batch_size``, ``snapshot_size``), e.g. ``alpha=1.0``. A knob left out (or None) keeps the
        method's default or the preset's value. ``get_params`` lists every knob of the method, so
        ``clone`` and ``ParameterGrid`` see them; unknown or out-of-range knobs are refused by ``fit``,
        with the CLI's messages.

    Input
    -----
    ``X`` holds non-negative intensities: floats in [0, 1] are taken as they are; an array whose largest
    value exceeds 1 is read as 0–255 (and refused above 255). Like every upload, the array is stored
    as 8-bit pixels and the run trains on those, so a resumed run sees the very same numbers; new data
    given to ``transform`` and ``predict`` is scaled and rounded the same way. Shapes: (N, H, W) or
    (N, C, H, W) images; (N, D) rows are square images when D is a square (64 → 8×8, as
    ``load_digits`` gives them) and 1×D strips otherwise, which the MLP autoencoders (and k-means)
    take as they are, while convolutional methods need square images of side ≥ 8.

    Attributes
    ----------
    labels_ : (N,) int64, the method's own assignment of the training samples.
    cluster_centers_ : (K, d), the centres in the latent space of ``transform`` (pixels for k-means).
    run_id_ : the run directory's name under ``runs_dir``.
    history_ : the run's metrics, one row per epoch (loss terms; ACC, NMI, ARI when ``y`` was given).
    n_iter_ : the epochs the run counted (pretraining, cluster initialisation and clustering).
    model_, method_, device_ : the trained torch module, the method object that reads it, its device.
    image_shape_ : (C, H, W) the fit saw; ``n_features_in_`` is C for images, D for rows.
    pixel_scale_ : 1.0 or 255.0, the scale ``X`` was read in.

    The fitted model stays in memory; the run's ``checkpoints/last.pt`` holds the same weights.
    """

    def __init__(self, method: str = "idec", n_clusters: int = 10, preset: str | None = None, seed: int = 0,
                 device: str = "auto", runs_dir: str | Path | None = None, verbose: int = 1, **knobs):
        self.method = method
        self.n_clusters = n_clusters
        self.preset = preset
        self.seed = seed
        self.device = device
        self.runs_dir = runs_dir
        self.verbose = verbose
        self._knobs = knobs

    # -- parameters: the signature's, then every knob of the method and the trainer ------------------
    def get_params(self, deep: bool = True) -> dict:
        params = super().get_params(deep=False)
        params.update({name: self._knobs.get(name) for name in knob_names(self.method)})
        params.update(self._knobs)  # a knob the method lacks stays visible (and clone keeps it) until fit refuses it
        return params

    def set_params(self, **params) -> "DeepClustering":
        own = set(self._get_param_names())
        for name, value in params.items():
            if name in own:
                setattr(self, name, value)
            else:
                self._knobs[name] = value
        return self

    def __repr__(self, N_CHAR_MAX: int = 700) -> str:
        # BaseEstimator's repr would list every knob, unset ones (None) included, since none is in the signature.
        defaults = {name: p.default for name, p in inspect.signature(type(self).__init__).parameters.items()}
        shown = [f"{name}={value!r}" for name, value in self.get_params(deep=False).items()
                 if value is not None and (name not in defaults or repr(value) != repr(defaults[name]))]
        text = f"{type(self).__name__}({', '.join(shown)})"
        return text if len(text) <= N_CHAR_MAX else text[:N_CHAR_MAX - 4] + "...)"

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.input_tags.positive_only = True  # intensities: negative values are refused
        tags.transformer_tags.preserves_dtype = []  # latent codes are float32 whatever X was
        return tags

    # -- fit -----------------------------------------------------------------------------------------
    def fit(self, X, y=None) -> "DeepClustering":
        """Train the method on ``X`` into a new run directory; ``y`` only scores each epoch (ACC/NMI/ARI).

        Raises ``ValueError`` (``ConfigError``) for a knob the CLI would refuse, and what the trainer
        raises; a run that diverged raises ``RuntimeError`` after its directory recorded why. A run
        stopped from the app keeps the model as it stood (with a warning); an interrupted one is marked
        stopped, so ``python -m core train --resume <id>`` can continue it.
        """
        X = validate_data(self, X, allow_nd=True, dtype=(np.float32, np.float64), ensure_min_samples=2)
        if y is not None:
            y = column_or_1d(y, warn=True)
            check_consistent_length(X, y)
        images = self._images(X, fitting=True)  # (N, H, W, C) uint8
        dataset = from_pixels(UPLOAD_PREFIX, images, y)
        path = str(save_upload(dataset).resolve())  # array-<content hash>.npz
        config = RunConfig.build(self.method, path, self.seed, self.preset, self._overrides(),
                                 device=self.device, n_clusters=_plain_int(self.n_clusters))
        config.check_samples(len(dataset), dataset.n_classes)  # as the trainer will, before a run directory exists
        store = RunStore.create(self.runs_dir or default_runs_dir(), new_run_id(self.method, path, self.seed),
                                config.to_dict())
        progress = _ProgressBar(store.id) if self.verbose else None
        # Trained on the file's pixels, which are what a resumed run reads.
        trainer = Trainer(config, load_dataset(path), store, callbacks=[progress] if progress else [])
        try:
            trainer.run()
        except KeyboardInterrupt:
            store.write_status("stopped", reason="interrupted in the calling process")
            raise
        finally:
            if progress:
                progress.close()
        self._keep(trainer, store)
        return self

    def _overrides(self) -> dict:
        return {name: value for name, value in self._knobs.items() if value is not None}

    def _keep(self, trainer: Trainer, store: RunStore) -> None:
        """Take the fitted attributes from a finished (or stopped) run."""
        status = store.read_status()
        if status["state"] == "failed":
            raise RuntimeError(f"run {store.id} failed: {status.get('reason', '')}")
        centroids = trainer.method.centroids(trainer.model)
        if centroids is None:
            raise RuntimeError(f"run {store.id} {status['state']} before its clusters were initialised: "
                               f"{status.get('reason', '')}")
        if status["state"] != "finished":
            warnings.warn(f"run {store.id} {status['state']}: {status.get('reason', '')}; "
                          f"the estimator keeps the model as it stood", RuntimeWarning, stacklevel=3)
        self.model_, self.method_, self.device_ = trainer.model, trainer.method, trainer.device
        self.run_id_ = store.id
        self.labels_ = assign_all(trainer.method, trainer.model, trainer.x)[1].cpu().numpy().astype(np.int64)
        self.cluster_centers_ = centroids.cpu().numpy()
        self.history_ = store.read_metrics()
        self.n_iter_ = int(self.history_["epoch"].iloc[-1]) if len(self.history_) else 0

    # -- read-outs -------------------------------------------------------------------------------------
    def transform(self, X) -> np.ndarray:
        """Latent codes of ``X``, (N, d) float32 (the method's ``embed``; pixels for k-means)."""
        x = self._tensor(X)
        return encode_all(self.method_, self.model_, x).cpu().numpy()

    def predict(self, X) -> np.ndarray:
        """Clusters of ``X``, (N,) int64, by the method's own assignment (as ``labels_`` on the training data)."""
        x = self._tensor(X)
        return assign_all(self.method_, self.model_, x)[1].cpu().numpy().astype(np.int64)

    def _tensor(self, X) -> torch.Tensor:
        """New data as the trainer holds its images: (N, C, H, W) float32 on the model's device."""
        check_is_fitted(self, "model_")
        X = validate_data(self, X, reset=False, allow_nd=True, dtype=(np.float32, np.float64))
        x = from_pixels("X", self._images(X, fitting=False), None).x
        return prefer_channels_last(self.model_, torch.from_numpy(x).to(self.device_))[1]

    def _images(self, X: np.ndarray, fitting: bool) -> np.ndarray:
        """``X`` as 8-bit images (N, H, W, C); a fit records the shape and the scale that later data must match."""
        if X.ndim == 2:
            side = math.isqrt(X.shape[1])
            shape = (1, side, side) if side * side == X.shape[1] else (1, 1, X.shape[1])
        elif X.ndim == 3:
            shape = (1, *X.shape[1:])
        elif X.ndim == 4:
            shape = X.shape[1:]
        else:
            raise ValueError(f"expected X shaped (N, D), (N, H, W) or (N, C, H, W), got {X.shape}")
        if fitting:
            self.image_shape_ = tuple(int(s) for s in shape)
            self.pixel_scale_ = 255.0 if X.max() > 1.0 else 1.0
        elif tuple(shape) != self.image_shape_:
            raise ValueError(f"X holds samples shaped {tuple(shape)}, but {type(self).__name__} was fitted on "
                             f"{self.image_shape_}")
        check_non_negative(X, type(self).__name__)
        unit = X / self.pixel_scale_
        if unit.max() > 1.0:
            raise ValueError(f"X must hold intensities in [0, 1] or 0–255 (as fitted: 0–{self.pixel_scale_:g}); "
                             f"found values up to {X.max():g}")
        pixels = np.round(unit * 255).astype(np.uint8).reshape(len(X), *shape)  # (N, C, H, W)
        return pixels.transpose(0, 2, 3, 1)


def _plain_int(value):
    """A NumPy integer (from ``np.arange``, say) as the ``int`` the run config takes; anything else unchanged."""
    return int(value) if isinstance(value, numbers.Integral) and not isinstance(value, bool) else value


def knob_names(method: str) -> list[str]:
    """The trainer's knobs, then the method's (only the trainer's for a name no method has)."""
    names = [k.name for k in TrainerConfig.knobs()]
    try:
        return names + [k.name for k in get_method(method).Config.knobs()]
    except (ValueError, TypeError):  # an unknown method is refused by fit, not here
        return names


class _ProgressBar:
    """A trainer callback drawing tqdm's auto bar over the run's epochs, with the phase, loss and ACC."""

    def __init__(self, run_id: str):
        self.run_id = run_id
        self.bar: tqdm | None = None

    def __call__(self, event: dict) -> None:
        if self.bar is None:
            self.bar = tqdm(total=event["total_epochs"], desc=self.run_id, unit="epoch")
        shown = {"phase": event["phase"]}
        shown.update({name: f"{event[name]:.4g}" for name in ("loss", "acc", "nmi")
                      if name in event and event[name] == event[name]})
        self.bar.set_postfix(shown, refresh=False)
        self.bar.update(event["epoch"] - self.bar.n)  # redraws, with the postfix

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
