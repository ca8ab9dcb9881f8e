"""Runs as separate processes: start, stop with a checkpoint, and a dead process seen as dead."""
from __future__ import annotations

import os
import socket
import subprocess
import sys
import time

import pytest

from core.launch import active_run_ids, is_alive, run_progress, run_state, start_run, stop_run
from core.train import RunConfig


def wait_until(predicate, timeout: float = 120.0, step: float = 0.3) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(step)
    return predicate()


def test_start_run_trains_in_its_own_process(tmp_path):
    config = RunConfig.build("kmeans", "digits", overrides={"restarts": 2})
    store = start_run(config, tmp_path / "runs")
    assert store.read_config()["params"]["restarts"] == 2
    assert wait_until(lambda: run_state(store) not in ("queued", "running")), "the run did not end"
    status = store.read_status()
    assert status["state"] == "finished", (store.path / "log.txt").read_text()
    assert status["pid"] != os.getpid()
    assert wait_until(lambda: not is_alive(status["pid"]), timeout=30)  # it exits after writing its final state
    assert (store.path / "assignments.npz").exists()


def test_stop_run_ends_after_a_batch_with_a_checkpoint(tmp_path):
    config = RunConfig.build("idec", "digits", overrides={"pretrain_epochs": 500, "batch_size": 64})
    store = start_run(config, tmp_path / "runs")
    assert wait_until(lambda: len(store.read_metrics()) >= 1), (store.path / "log.txt").read_text()
    assert stop_run(store)
    assert wait_until(lambda: store.read_status()["state"] == "stopped", timeout=60)
    assert (store.path / "checkpoints" / "last.pt").exists()
    assert wait_until(lambda: not is_alive(store.read_status()["pid"]), timeout=30)
    assert not stop_run(store)  # nothing left to stop


def test_a_run_whose_process_died_shows_as_died(synthetic_run, tmp_path):
    finished = subprocess.Popen([sys.executable, "-c", "pass"])
    finished.wait()
    synthetic_run.write_status("running", pid=finished.pid)
    assert run_state(synthetic_run) == "died"
    progress = run_progress(synthetic_run)
    assert progress.state == "died" and not progress.active and progress.reason
    assert active_run_ids(tmp_path / "runs") == []


def test_a_run_on_another_host_is_taken_at_its_word(synthetic_run):
    finished = subprocess.Popen([sys.executable, "-c", "pass"])
    finished.wait()
    synthetic_run.write_status("running", pid=finished.pid, host="another-node-of-the-cluster")
    assert run_state(synthetic_run) == "running"  # its pid means nothing here
    synthetic_run.write_status("running", pid=finished.pid, host=socket.gethostname())
    assert run_state(synthetic_run) == "died"


def test_is_alive():
    assert is_alive(os.getpid())
    assert not is_alive(None)


@pytest.mark.skipif(not os.path.isdir("/proc"), reason="zombie detection reads /proc")
def test_an_exited_child_that_was_not_waited_for_is_not_alive():
    child = subprocess.Popen([sys.executable, "-c", "pass"])  # launched outside core.launch
    assert wait_until(lambda: open(f"/proc/{child.pid}/stat").read().rsplit(")", 1)[1].split()[0] == "Z",
                      timeout=30)
    assert not is_alive(child.pid)
    child.wait()


def test_run_progress_estimates_the_remaining_time(synthetic_run):
    synthetic_run.write_status("running", epoch=3, total_epochs=6, batch=None, phase="init")
    progress = run_progress(synthetic_run)
    assert progress.fraction == pytest.approx(0.5)
    assert progress.eta_seconds == pytest.approx(3.0)  # 3 epochs left × 1 s per epoch in the metrics
