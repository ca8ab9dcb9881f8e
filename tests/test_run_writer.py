"""One writer per run, and a run keeps the data it started on.

The writer lock is ``flock``, held per open file: a lock taken here through a second open of the lock
file conflicts with the trainer's exactly as another process's would, so these tests hold it in-process.
"""
from __future__ import annotations

import io
import os
import signal

import numpy as np
import pytest

from core import cli
from core.data import DataError, ImageDataset, load_dataset, read_upload, save_upload
from core.runs import RunStore, new_run_id
from core.storage import LockHeld
from core.train import RunConfig, Trainer

TINY = {"pretrain_epochs": 2, "epochs": 2, "batch_size": 64, "snapshot_size": 200}


@pytest.fixture(scope="module")
def digits_200():
    data = load_dataset("digits")
    return ImageDataset("digits-200", data.x[:200], data.y[:200], data.class_names)


def _stopped_run(dataset, tmp_path, data="digits") -> RunStore:
    """An IDEC run stopped by a callback after its first epoch, with a checkpoint to resume from."""
    config = RunConfig.build("idec", data, overrides=TINY)
    store = RunStore.create(tmp_path / "runs", new_run_id("idec", data, 0), config.to_dict())
    Trainer(config, dataset, store, [lambda event: True]).run()
    assert store.read_status()["state"] == "stopped"
    return store


def _folder(store: RunStore) -> dict[str, bytes]:
    return {str(p.relative_to(store.path)): p.read_bytes() for p in sorted(store.path.rglob("*")) if p.is_file()}


@pytest.fixture
def no_signal_handlers(monkeypatch):
    monkeypatch.setattr(signal, "signal", lambda *args: None)  # the CLI's Ctrl-C handler is not for pytest


def test_the_trainer_holds_the_writer_lock_for_its_whole_life(digits_200, tmp_path):
    refused = []

    def second_writer(event):
        try:
            with store.writer():
                refused.append(False)
        except LockHeld as held:
            refused.append(held.pid)

    config = RunConfig.build("idec", "digits", overrides=TINY)
    store = RunStore.create(tmp_path / "runs", new_run_id("idec", "digits", 0), config.to_dict())
    Trainer(config, digits_200, store, [second_writer]).run()
    assert len(refused) == 2 + 1 + 2 and set(refused) == {os.getpid()}
    with store.writer():  # released at the end
        pass


def test_a_second_trainer_is_refused_and_touches_nothing(digits_200, tmp_path, capsys, no_signal_handlers):
    store = _stopped_run(digits_200, tmp_path)
    (store.path / "checkpoints" / ".last.pt.123.tmp").write_bytes(b"the running writer's checkpoint, half-written")
    store.request_stop()  # asked of the running writer: a second trainer must not clear it
    before = _folder(store)
    with store.writer():  # the first trainer, still training
        assert cli.main(["train", "--resume", store.id, "--quiet"]) == 3
        with pytest.raises(LockHeld):
            Trainer(RunConfig.from_dict(store.read_config()), digits_200, store).run(resume=True)
    assert "is being trained by process" in capsys.readouterr().err
    assert _folder(store) == before


def test_a_second_trainer_that_cannot_load_its_data_does_not_mark_the_run_failed(tmp_path, capsys, no_signal_handlers):
    config = RunConfig.build("kmeans", str(tmp_path / "gone.npz"))
    store = RunStore.create(tmp_path / "runs", new_run_id("kmeans", "gone", 0), config.to_dict())
    store.write_status("running")
    with store.writer():
        assert cli.main(["train", "--resume", store.id, "--quiet"]) == 3
    assert store.read_status()["state"] == "running"


def _npz(x, y) -> bytes:
    buffer = io.BytesIO()
    np.savez(buffer, x=x, y=y)
    return buffer.getvalue()


def test_uploads_are_stored_by_content_with_their_name_as_a_label(tmp_path):
    rng = np.random.default_rng(0)
    first, second = (_npz(rng.integers(0, 256, (30, 8, 8), dtype=np.uint8), np.arange(30) % 3) for _ in range(2))
    paths = [save_upload(read_upload("mine.npz", content, n_clusters=3)[0], tmp_path) for content in (first, second)]
    assert paths[0] != paths[1] and all(p.name.startswith("mine-") for p in paths)
    assert save_upload(read_upload("mine.npz", first, n_clusters=3)[0], tmp_path) == paths[0]
    relabelled = _npz(np.load(io.BytesIO(first))["x"], np.arange(30) % 2)
    assert save_upload(read_upload("mine.npz", relabelled, n_clusters=2)[0], tmp_path) not in paths
    assert load_dataset(str(paths[0])).fingerprint() == paths[0].stem.rsplit("-", 1)[1]


def test_resume_refuses_data_that_changed_since_the_run_started(tmp_path, capsys, no_signal_handlers):
    rng = np.random.default_rng(0)
    path = tmp_path / "mine.npz"
    path.write_bytes(_npz(rng.integers(0, 256, (200, 8, 8), dtype=np.uint8), np.arange(200) % 4))
    store = _stopped_run(load_dataset(str(path)), tmp_path, data=str(path))
    assert store.read_config()["data_fingerprint"] == load_dataset(str(path)).fingerprint()
    path.write_bytes(_npz(rng.integers(0, 256, (200, 8, 8), dtype=np.uint8), np.arange(200) % 4))  # other images
    before = _folder(store)
    assert cli.main(["train", "--resume", store.id, "--quiet"]) == 2
    assert "now holds other data" in capsys.readouterr().err
    assert _folder(store) == before
