"""The trainer's contract over every registered method, and the run directory it leaves."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from core.data import ImageDataset, load_dataset
from core.methods import REGISTRY
from core.methods.base import LabelChange, encode_all
from core.runs import RunStore, list_runs, new_run_id
from core.storage import partial_writes
from core.train import AutoencoderCache, RunConfig, Trainer

ROOT = Path(__file__).resolve().parents[1]
TINY = {"pretrain_epochs": 3, "epochs": 3, "batch_size": 64, "snapshot_size": 200}


@pytest.fixture(scope="module")
def digits_subset():
    data = load_dataset("digits")
    keep = np.random.default_rng(0).choice(len(data), 400, replace=False)
    return ImageDataset("digits-400", data.x[keep], data.y[keep], data.class_names)


def run(method, dataset, tmp_path, overrides=None, callbacks=None, stop_event=None, seed=0, **fields):
    config = RunConfig.build(method, dataset.name, seed, overrides={**TINY, **(overrides or {})}, **fields)
    store = RunStore.create(tmp_path / "runs", new_run_id(method, dataset.name, seed), config.to_dict())
    trainer = Trainer(config, dataset, store, callbacks, stop_event)
    return trainer, trainer.run(), store


@pytest.mark.parametrize("method", sorted(REGISTRY))
def test_method_contract(method, digits_subset, tmp_path):
    trainer, last, store = run(method, digits_subset, tmp_path)
    metrics = store.read_metrics()
    assert store.read_status()["state"] == "finished"
    phases = list(dict.fromkeys(metrics["phase"]))
    assert phases == [p for p in ("pretrain", "init", "cluster") if p == "init" or p in REGISTRY[method].phases]
    assert metrics["epoch"].is_monotonic_increasing
    assert {"epoch", "phase", "time", "acc", "nmi", "ari", "changed"} <= set(metrics.columns)
    # what the app plots as the method's diagnostics is what its events carry
    declared = {c for columns in REGISTRY[method].diagnostics.values() for c in columns}
    assert declared <= set(metrics.columns), declared - set(metrics.columns)
    trained = metrics[metrics["phase"] != "init"]
    assert np.isfinite(trained["loss"]).all() if len(trained) else True
    for column in [c for c in metrics.columns if c.startswith("loss_")]:
        assert np.isfinite(metrics.loc[metrics[column].notna(), column]).all()
    # every named loss term of a training step has its own column
    model = trainer.model
    if "cluster" in REGISTRY[method].phases:
        from core.methods import Batch
        index = torch.arange(8)
        terms = trainer.method.training_step(model, Batch(trainer.x[index], index), "cluster")
        assert {f"loss_{t}" for t in terms if t != "loss"} <= set(metrics.columns)
    assignments = store.assignments_frame()
    assert len(assignments) == len(digits_subset) and assignments["cluster"].between(0, 9).all()
    assert 1 < assignments["cluster"].nunique() <= 10
    assert 0.0 <= last["acc"] <= 1.0
    snapshot = store.load_snapshot(store.snapshot_epochs()[-1])
    assert snapshot["z"].shape[0] == 200 and snapshot["centroids"].shape == (10, snapshot["z"].shape[1])


@pytest.mark.parametrize("method", ["kmeans", "idec"])
def test_same_seed_same_labels(method, digits_subset, tmp_path):
    labels = []
    for attempt in range(2):
        _, _, store = run(method, digits_subset, tmp_path / str(attempt))
        labels.append(store.assignments_frame()["cluster"].to_numpy())
    np.testing.assert_array_equal(labels[0], labels[1])


def test_snapshot_indices_are_fixed_and_saved(digits_subset, tmp_path):
    _, _, store = run("idec", digits_subset, tmp_path)
    indices = store.load_snapshot_indices()
    np.testing.assert_array_equal(indices["labels"], digits_subset.y[indices["indices"]])
    shapes = {store.load_snapshot(e)["z"].shape for e in store.snapshot_epochs()}
    assert shapes == {(200, 10)}


def test_callback_returning_true_stops_with_a_checkpoint_and_resume_finishes(digits_subset, tmp_path):
    trainer, _, store = run("idec", digits_subset, tmp_path, callbacks=[lambda event: event["epoch"] >= 2])
    assert store.read_status()["state"] == "stopped"
    assert list(store.read_metrics()["epoch"]) == [1, 2]
    config = RunConfig.from_dict(store.read_config())
    Trainer(config, digits_subset, store).run(resume=True)
    metrics = store.read_metrics()
    assert store.read_status()["state"] == "finished"
    assert list(metrics["epoch"]) == list(range(1, 3 + 1 + 3 + 1))


def test_stop_event_ends_between_batches(digits_subset, tmp_path):
    stop = threading.Event()
    stop.set()
    _, _, store = run("idec", digits_subset, tmp_path, stop_event=stop)
    assert store.read_status() | {"state": "stopped"} == store.read_status()
    assert store.read_status()["reason"] == "stopped by request"


def test_nan_loss_stops_the_run_with_the_reason(digits_subset, tmp_path):
    broken = ImageDataset("nan", digits_subset.x.copy(), digits_subset.y)
    broken.x[0, 0, 0, 0] = np.nan
    _, _, store = run("ae-kmeans", broken, tmp_path)
    status = store.read_status()
    assert status["state"] == "failed" and "NaN" in status["reason"]


def test_second_run_with_a_new_alpha_reuses_the_pretrained_autoencoder(digits_subset, tmp_path):
    first, _, _ = run("idec", digits_subset, tmp_path / "a")
    second, _, store = run("idec", digits_subset, tmp_path / "b", overrides={"alpha": 0.7})
    metrics = store.read_metrics()
    pretrain = metrics[metrics["phase"] == "pretrain"]
    assert len(pretrain) == 1 and pretrain["cached"].iloc[0] == 1.0
    z_first = encode_all(first.method, first.model.cpu(), torch.from_numpy(digits_subset.x[:5]))
    cached = AutoencoderCache().load(second.pretrain_key, torch.device("cpu"))
    assert cached is not None
    # a different seed is a different autoencoder
    third, _, store3 = run("idec", digits_subset, tmp_path / "c", seed=1)
    assert (store3.read_metrics()["phase"] == "pretrain").sum() == TINY["pretrain_epochs"]
    assert z_first.shape == (5, 10)


def test_list_runs_reports_each_run(digits_subset, tmp_path):
    run("kmeans", digits_subset, tmp_path)
    table = list_runs(tmp_path / "runs")
    assert list(table["method"]) == ["kmeans"] and table["state"].iloc[0] == "finished"


def _cli(*args, env):
    return subprocess.Popen([sys.executable, "-m", "core", *args], cwd=ROOT, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def test_kill_9_then_resume_continues_from_the_last_epoch(tmp_path):
    env = {**os.environ, "CLUSTERLAB_RUNS": str(tmp_path / "runs")}
    process = _cli("train", "--method", "idec", "--data", "digits", "--pretrain-epochs", "40", "--epochs", "5",
                   "--set", "snapshot_size=300", env=env)
    deadline = time.time() + 600  # a wait, not a timing check: a busy machine may take long
    while time.time() < deadline:
        checkpoints = list((tmp_path / "runs").glob("*/checkpoints/last.pt"))
        if checkpoints and RunStore(checkpoints[0].parents[1]).load_checkpoint()["position"]["epoch"] >= 3:
            break
        time.sleep(0.2)
    process.send_signal(signal.SIGKILL)
    process.wait()
    store = RunStore(checkpoints[0].parents[1])
    killed_at = store.load_checkpoint()["position"]["epoch"]
    assert killed_at >= 3 and store.read_status()["state"] == "running"  # nobody got to write "stopped"
    partial = set(partial_writes(store.path))  # a write the kill interrupted stays a temporary file
    for path in set(store.path.rglob("*.npz")) - partial:  # every file it left under its own name is complete
        np.load(path, allow_pickle=False)
    store.read_metrics()
    resumed = _cli("train", "--resume", store.id, "--quiet", env=env)
    output = resumed.communicate(timeout=300)[0]
    assert resumed.returncode == 0, output
    assert not partial_writes(store.path)  # resuming tidied them away
    epochs = list(store.read_metrics()["epoch"])
    assert epochs == list(range(1, 40 + 1 + 5 + 1))
    assert store.read_status()["state"] == "finished"


def test_sigterm_stops_after_the_batch_with_a_checkpoint(tmp_path):
    env = {**os.environ, "CLUSTERLAB_RUNS": str(tmp_path / "runs")}
    process = _cli("train", "--method", "ae-kmeans", "--data", "digits", "--pretrain-epochs", "200", "--quiet",
                   env=env)
    deadline = time.time() + 120
    while time.time() < deadline and not list((tmp_path / "runs").glob("*/checkpoints/last.pt")):
        time.sleep(0.2)
    process.send_signal(signal.SIGTERM)
    assert process.wait(timeout=60) == 0
    store = RunStore(next((tmp_path / "runs").iterdir()))
    assert store.read_status()["state"] == "stopped" and store.load_checkpoint() is not None


@pytest.mark.parametrize("overrides, reason", [
    ({"max_iter": 10, "tol": 0.0}, "all iterations done (iteration 10)"),
    ({"max_iter": 5000, "tol": 0.5, "update_interval": 5}, "converged: "),  # half the labels: met at once
])
def test_finished_status_says_why_the_method_ended(digits_subset, tmp_path, overrides, reason):
    _, _, store = run("dec", digits_subset, tmp_path, {**overrides, "epochs": 20})
    status = store.read_status()
    assert status["state"] == "finished" and status["reason"].startswith(reason)
    if reason.startswith("converged"):
        assert "tolerance 50.00%" in status["reason"]


@pytest.mark.parametrize("second, step, changed, stops", [
    ([0, 1, 1, 0], 10, 0.0, True),    # nothing changed: 0 < 0.3
    ([0, 1, 1, 2], 10, 0.25, True),   # one label of four (the last): 0.25 < 0.3
    ([1, 1, 1, 2], 10, 0.5, False),   # two of four (the first and last): 0.5 ≥ 0.3
    ([0, 1, 1, 0], 0, 0.0, False),    # step 0 never stops, even unchanged
])
def test_label_change_rule_by_hand(second, step, changed, stops):
    rule = LabelChange()
    assert rule.check(torch.tensor([0, 1, 1, 0]), 0, tol=0.3) is None and np.isnan(rule.changed)  # records
    reason = rule.check(torch.tensor(second), step, tol=0.3)
    assert rule.changed == pytest.approx(changed) and (reason is not None) == stops
    if stops:
        assert reason == f"converged: {changed:.2%} of labels changed (tolerance 30.00%)"
