"""Shared fixtures: every test writes runs, sweeps and caches under its own temporary folder."""
from __future__ import annotations

import os
from pathlib import Path

import pytest

SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"


@pytest.fixture(autouse=True)
def isolated_dirs(tmp_path, monkeypatch):
    monkeypatch.setenv("CLUSTERLAB_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("CLUSTERLAB_RUNS", str(tmp_path / "runs"))
    monkeypatch.setenv("CLUSTERLAB_SWEEPS", str(tmp_path / "sweeps"))
    if "CLUSTERLAB_DATA" not in os.environ and SHARED_DATA.is_dir():
        monkeypatch.setenv("CLUSTERLAB_DATA", str(SHARED_DATA))
    return tmp_path


@pytest.fixture(scope="session")
def shared_data():
    """The benchmark data folder; tests that need real data fail loudly without it."""
    folder = Path(os.environ.get("CLUSTERLAB_DATA", SHARED_DATA))
    assert (folder / "usps.npz").is_file(), f"set CLUSTERLAB_DATA to the folder holding usps.npz (looked in {folder})"
    return folder


# -- app and projector tests: a small finished run written directly, without training ----------------
def write_synthetic_run(runs_dir: Path, run_id: str = "20260101-000000-idec-digits-s0-test", n_samples: int = 300,
                        pretrain_epochs: int = 2, cluster_epochs: int = 3, state: str = "finished"):
    """A run directory like the trainer's (IDEC on digits), with blob-shaped latent codes.

    Ten well-separated blobs in 5-D, one per digit class, tighten from epoch to epoch; the clusters
    are the classes under a fixed permutation, with a few samples assigned wrongly at each epoch.
    Returns the ``RunStore``.
    """
    import numpy as np
    import pandas as pd
    from sklearn.datasets import load_digits

    from core.runs import RunStore
    from core.train import RunConfig

    rng = np.random.default_rng(0)
    digits = load_digits()
    indices = np.sort(rng.choice(len(digits.target), n_samples, replace=False))
    truth = digits.target[indices]
    centres = rng.normal(size=(10, 5)) * 6.0
    noise = rng.normal(size=(n_samples, 5))
    permutation = np.array([3, 0, 7, 1, 9, 2, 8, 4, 6, 5])  # cluster id of each class
    config = RunConfig.build("idec", "digits", overrides={"pretrain_epochs": pretrain_epochs, "epochs": cluster_epochs,
                                                          "snapshot_size": n_samples}).to_dict()
    config.update(n_clusters=10, n_samples=len(digits.target), image_shape=[1, 8, 8])
    store = RunStore.create(runs_dir, run_id, config)
    store.save_snapshot_indices(indices, truth)
    phases = ["pretrain"] * pretrain_epochs + ["init"] + ["cluster"] * cluster_epochs
    rows, previous = [], None
    for epoch, phase in enumerate(phases, start=1):
        spread = 1.5 / epoch
        z = (centres[truth] + spread * noise).astype(np.float32)
        snapshot = {"z": z}
        row = {"epoch": epoch, "phase": phase, "time": float(epoch), "epoch_time": 1.0, "loss": 1.0 / epoch,
               "loss_recon": 0.5 / epoch}
        if phase != "pretrain":
            labels = permutation[truth].copy()
            wrong = rng.choice(n_samples, max(1, n_samples // (10 * epoch)), replace=False)
            labels[wrong] = rng.integers(0, 10, len(wrong))
            centroids = np.stack([z[labels == k].mean(0) for k in range(10)]).astype(np.float32)
            snapshot.update(labels=labels, confidence=np.full(n_samples, 0.5 + 0.1 * epoch, np.float32),
                            centroids=centroids, sizes=np.bincount(labels, minlength=10))
            acc = float(np.mean(labels == permutation[truth]))
            row.update(loss_kl=0.1 / epoch, acc=acc, nmi=acc - 0.05, ari=acc - 0.1,
                       changed=float("nan") if previous is None else float(np.mean(labels != previous)))
            previous = labels
        store.save_snapshot(epoch, **snapshot)
        rows.append(row)
    store.write_metrics(rows)
    store.write_status(state, epoch=len(phases), phase=phases[-1], total_epochs=len(phases), reason="all epochs done")
    if state == "finished":
        store.save_assignments(permutation[digits.target], np.full(len(digits.target), 0.9, np.float32),
                               digits.target)
    return store


@pytest.fixture
def synthetic_run(tmp_path):
    """A finished IDEC-on-digits run in ``$CLUSTERLAB_RUNS`` (see ``write_synthetic_run``)."""
    return write_synthetic_run(tmp_path / "runs")
