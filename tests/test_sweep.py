"""Sweeps: grids from knob metadata, validation before anything starts, pretraining once per seed,
the cache entry race, stop and resume, a dead trial isolated, and a real local Ray."""
from __future__ import annotations

import math
import os
import signal
import subprocess
import sys
import threading
from pathlib import Path

import pandas as pd
import pytest

from core.launch import ROOT, is_alive
from core.runs import RunStore
from core.sweep import (LocalExecutor, RayExecutor, SweepSpec, SweepStore, cell_summary, create_sweep, grid_values,
                        list_sweeps, parse_grid, run_sweep, start_sweep, stop_sweep, sweep_state, sweep_table)
from core.sweep.spec import checked_spec
from core.train import RunConfig
from test_launch import wait_until

# The smallest IDEC that still pretrains, initialises and clusters: one epoch of each on digits.
TINY_IDEC = {"pretrain_epochs": 1, "epochs": 1, "batch_size": 256, "snapshot_size": 200, "kmeans_restarts": 1}


@pytest.mark.parametrize("method, name, n, expected", [
    ("idec", "gamma", 5, [0.01, 0.0316, 0.1, 0.316, 1.0]),   # log knob 0.01 … 1: 10^(-2 + k/2), 3 digits
    ("idec", "gamma", 3, [0.01, 0.1, 1.0]),
    ("dec", "alpha", 4, [0.5, 1.0, 1.5, 2.0]),                # 0.5 … 2 on its step 0.1
    ("kmeans", "restarts", 4, [1, 17, 34, 50]),               # 1, 17.33, 33.67, 50 rounded
    ("kmeans", "restarts", 100, list(range(1, 51))),          # 100 points on 1 … 50: each integer once
    ("idec", "snapshot_size", 3, [200, 5100, 10000]),         # a trainer knob
    ("idec", "optimizer_name", 5, ["adam", "sgd"]),           # a select box: all its choices
    ("decs", "augment", 5, [True, False]),                    # a boolean with choices: in their order
    ("cdc", "paper_forms", 5, [False, True]),                 # a plain boolean
])
def test_grid_values_follow_the_knob_metadata(method, name, n, expected):
    assert grid_values(method, name, n) == expected


def test_grid_values_refuse_an_unknown_knob():
    with pytest.raises(ValueError, match="no knob 'nonsense'"):
        grid_values("idec", "nonsense")


@pytest.mark.parametrize("text, expected", [
    ("alpha=0.5,1,2", ("alpha", ["0.5", "1", "2"])),
    (" gamma = 0.01 , 0.1 ", ("gamma", ["0.01", "0.1"])),
    ("alpha", ("alpha", [])),
])
def test_parse_grid(text, expected):
    assert parse_grid(text) == expected


@pytest.mark.parametrize("text", ["=1,2", "alpha=1,,2"])
def test_parse_grid_refuses_malformed_text(text):
    with pytest.raises(ValueError):
        parse_grid(text)


def test_a_checked_spec_types_its_values_and_expands_cell_by_cell():
    spec = checked_spec(SweepSpec("idec", grid={"alpha": ["0.5", "1"], "optimizer_name": ["sgd", "adam"]},
                                  seeds=[0, 1]))
    assert spec.grid == {"alpha": [0.5, 1.0], "optimizer_name": ["sgd", "adam"]}
    expected = [({"alpha": a, "optimizer_name": o}, s) for a in (0.5, 1.0) for o in ("sgd", "adam") for s in (0, 1)]
    assert [(t.settings, t.seed) for t in spec.trials()] == expected
    assert SweepSpec.from_dict(spec.to_dict()) == spec


@pytest.mark.parametrize("grid, seeds, message", [
    ({}, [0], "at least one knob"),
    ({"nonsense": [1]}, [0], "no knob 'nonsense'"),
    ({"alpha": ["abc"]}, [0], "alpha: not a number: 'abc'"),
    ({"update_interval": ["1.5"]}, [0], "update_interval"),   # an integer knob given a fraction
    ({"alpha": [1, 0]}, [0], "alpha=0 is out of range"),      # α's hard limit: > 0
    ({"gamma": ["nan"]}, [0], "gamma=nan"),
    ({"optimizer_name": ["rmsprop"]}, [0], "rmsprop"),
    ({"alpha": [1, "1.0"]}, [0], "repeated values"),
    ({"alpha": []}, [0], "no values"),
    ({"seed": [1, 2]}, [0], "seeds"),
    ({"alpha": [1]}, [0, 0], "repeated seeds"),
])
def test_a_bad_sweep_is_refused_before_anything_is_written(tmp_path, grid, seeds, message):
    with pytest.raises(ValueError, match=message):
        create_sweep(SweepSpec("idec", grid=grid, seeds=seeds), tmp_path / "sweeps", tmp_path / "runs")
    assert not (tmp_path / "sweeps").exists() and not (tmp_path / "runs").exists()


def test_run_config_names_its_sweep_and_old_configs_still_load():
    config = RunConfig.build("idec", "digits", sweep="20260101-000000-idec-digits-sweep-abcd")
    assert RunConfig.from_dict(config.to_dict()) == config
    old = config.to_dict()
    del old["sweep"]
    assert RunConfig.from_dict(old).sweep is None


def test_cell_summary_by_hand():
    table = pd.DataFrame({
        "alpha": [0.5, 0.5, 0.5, 1.0, 1.0, 1.0],
        "seed": [0, 1, 2, 0, 1, 2],
        "state": ["finished", "finished", "failed", "finished", "running", "stopped"],
        "acc": [0.6, 0.8, math.nan, 0.9, 0.5, 0.4],
        "reason": ["", "", "the loss became NaN", "", "", "stopped by request"]})
    summary = cell_summary(table, ["alpha"], "acc")
    assert summary["alpha"].tolist() == [0.5, 1.0]
    assert summary["mean"].tolist() == pytest.approx([0.7, 0.9])
    assert summary["sd"].iloc[0] == pytest.approx(math.sqrt(0.02))  # (0.1² + 0.1²) / (2 − 1)
    assert math.isnan(summary["sd"].iloc[1])                       # one finished seed: no spread
    assert summary["n"].tolist() == [2, 1]
    assert summary["n_failed"].tolist() == [1, 0]
    assert summary["n_pending"].tolist() == [0, 2]
    assert summary["reasons"].tolist() == ["the loss became NaN", ""]


# -- real sweeps --------------------------------------------------------------------------------------
def pretrainings(runs: list[RunStore]) -> list[RunStore]:
    """The runs that pretrained their autoencoder themselves (a cached one has a ``cached`` pretrain row)."""
    trained = []
    for run in runs:
        pretrain = run.read_metrics().query("phase == 'pretrain'")
        assert len(pretrain), f"{run.id} has no pretraining row"
        if "cached" not in pretrain or pretrain["cached"].isna().all():
            trained.append(run)
    return trained


def trial_status(store: SweepStore, index: int) -> dict:
    """The status of a sweep's trial's run ({} before it exists)."""
    run_id = sweep_table(store)["run_id"].iloc[index]
    return RunStore(store.runs_dir() / run_id).read_status() if run_id else {}


def test_a_2x2_sweep_pretrains_once_per_seed(tmp_path):
    sets = [arg for name, value in TINY_IDEC.items() for arg in ("--set", f"{name}={value}")]
    done = subprocess.run([sys.executable, "-m", "core", "sweep", "--method", "idec", "--data", "digits",
                           "--grid", "alpha=0.5,1", "--grid", "gamma=0.05,0.2", "--seeds", "0", "1", "--workers", "2",
                           *sets, "--runs-dir", str(tmp_path / "runs"), "--sweeps-dir", str(tmp_path / "sweeps")],
                          capture_output=True, text=True, cwd=ROOT, timeout=600)
    assert done.returncode == 0, done.stderr
    assert "8/8 trials" in done.stderr  # the progress bar
    [store] = [SweepStore(p) for p in (tmp_path / "sweeps").iterdir()]
    table = sweep_table(store)
    assert table["state"].tolist() == ["finished"] * 8, table
    assert table[["alpha", "gamma", "seed"]].values.tolist() == [
        [a, g, s] for a in (0.5, 1.0) for g in (0.05, 0.2) for s in (0, 1)]
    runs = [RunStore(tmp_path / "runs" / run_id) for run_id in table["run_id"]]
    assert all(run.read_config()["sweep"] == store.id for run in runs)
    assert [run.read_config()["params"]["gamma"] for run in runs] == table["gamma"].tolist()
    assert sorted(run.read_config()["seed"] for run in pretrainings(runs)) == [0, 1]  # one per seed
    assert (table[["acc", "nmi", "ari"]].notna()).all().all()
    summary = cell_summary(table, ["alpha", "gamma"], "acc")
    assert summary["n"].tolist() == [2] * 4
    assert summary["mean"].tolist() == pytest.approx(table.groupby(["alpha", "gamma"])["acc"].mean().tolist())
    listed = list_sweeps(tmp_path / "sweeps")
    assert listed[["id", "n_trials", "done", "failed", "state"]].values.tolist() == [[store.id, 8, 8, 0, "finished"]]


def test_two_processes_racing_for_one_cache_entry_pretrain_it_once(tmp_path):
    sets = [arg for name, value in {**TINY_IDEC, "pretrain_epochs": 3}.items() for arg in ("--set", f"{name}={value}")]
    command = [sys.executable, "-m", "core", "train", "--method", "idec", "--data", "digits", "--quiet",
               "--runs-dir", str(tmp_path / "runs"), *sets]
    racers = [subprocess.Popen(command, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
              for _ in range(2)]
    logs = [racer.communicate(timeout=600)[1] for racer in racers]
    assert [racer.returncode for racer in racers] == [0, 0], logs
    runs = [RunStore(p) for p in (tmp_path / "runs").iterdir()]
    assert len(runs) == 2 and len(pretrainings(runs)) == 1
    assert sum("loaded from the cache" in log for log in logs) == 1
    cache = Path(os.environ["CLUSTERLAB_CACHE"]) / "autoencoders"
    assert len(list(cache.glob("*.pt"))) == 1 and not list(cache.glob(".*.tmp"))


def test_stop_a_sweep_then_resume_it(tmp_path):
    # Trial 1 ends at once; trial 2 (same pretraining, served from the cache) clusters for 12 epochs,
    # long enough to be stopped in the middle. One worker: they run one after the other.
    spec = SweepSpec("idec", "digits", overrides={**TINY_IDEC, "tol": 0.0}, grid={"epochs": [1, 12]}, seeds=[0],
                     workers=1)
    store = start_sweep(spec, tmp_path / "sweeps", tmp_path / "runs")
    assert wait_until(lambda: trial_status(store, 1).get("phase") == "cluster", timeout=300), (
        store.path / "log.txt").read_text()
    assert stop_sweep(store)
    assert wait_until(lambda: sweep_state(store) == "stopped", timeout=120), (store.path / "log.txt").read_text()
    table = sweep_table(store)
    assert table["state"].tolist() == ["finished", "stopped"]
    first, stopped = (RunStore(tmp_path / "runs" / run_id) for run_id in table["run_id"])
    assert (stopped.path / "checkpoints" / "last.pt").exists()
    epochs_at_stop = len(stopped.read_metrics())
    assert epochs_at_stop < 1 + 1 + 12
    first_status = first.read_status()
    assert not stop_sweep(store)  # nothing left to stop

    resumed = subprocess.run([sys.executable, "-m", "core", "sweep", "--resume", store.id, "--quiet",
                              "--sweeps-dir", str(tmp_path / "sweeps")], capture_output=True, text=True, cwd=ROOT,
                             timeout=600)
    assert resumed.returncode == 0, resumed.stderr
    assert sweep_state(store) == "finished"
    assert sweep_table(store)["state"].tolist() == ["finished", "finished"]
    assert first.read_status() == first_status  # skipped, not run again
    metrics = stopped.read_metrics()
    assert metrics["epoch"].tolist() == list(range(1, 1 + 1 + 1 + 12))  # continued, not restarted
    assert "resuming" in (stopped.path / "log.txt").read_text()


def test_a_killed_trial_is_recorded_and_the_others_finish(tmp_path):
    spec = SweepSpec("idec", "digits", overrides={**TINY_IDEC, "tol": 0.0}, grid={"epochs": [1, 200]}, seeds=[0],
                     workers=2)
    store = start_sweep(spec, tmp_path / "sweeps", tmp_path / "runs")

    assert wait_until(lambda: trial_status(store, 1).get("phase") == "cluster", timeout=300), (
        store.path / "log.txt").read_text()
    os.kill(trial_status(store, 1)["pid"], signal.SIGKILL)
    assert wait_until(lambda: sweep_state(store) not in ("queued", "running"), timeout=120)
    assert sweep_state(store) == "finished"
    table = sweep_table(store)
    assert table["state"].tolist() == ["finished", "died"]
    assert "exited with code -9" in table["reason"].iloc[1]
    summary = cell_summary(table, ["epochs"], "acc")
    assert summary[["n", "n_failed"]].values.tolist() == [[1, 0], [0, 1]]
    assert "code -9" in summary["reasons"].iloc[1]


def test_a_sweep_on_a_real_local_ray(tmp_path):
    spec = checked_spec(SweepSpec("kmeans", "digits", grid={"restarts": [1, 2]}, seeds=[0], workers=2,
                                  backend="ray"))
    store = create_sweep(spec, tmp_path / "sweeps", tmp_path / "runs")
    executor = RayExecutor(None, width=2, num_cpus=1, local_cpus=2)
    assert run_sweep(store, executor) == "finished"
    table = sweep_table(store)
    assert table["state"].tolist() == ["finished", "finished"], [
        (tmp_path / "runs" / run_id / "log.txt").read_text() for run_id in table["run_id"]]
    configs = [RunStore(tmp_path / "runs" / run_id).read_config() for run_id in table["run_id"]]
    assert [c["params"]["restarts"] for c in configs] == [1, 2]
    assert all(0.5 < acc <= 1 for acc in table["acc"])  # k-means on digits scores about 0.7
