"""Starting a run from an imported autoencoder: name maps, refusals, the trainer's imported row, and the
official DCSS MNIST autoencoder loaded through its declared layout."""
from __future__ import annotations

import hashlib
import io
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from core.data import ImageDataset, load_dataset
from core.methods.base import encode_all, kmeans_labels
from core.methods.dcss import DCSS, DCSSConfig
from core.metrics import evaluate
from core.runs import RunStore, list_runs, new_run_id
from core.train import RunConfig, Trainer
from core.train.init_weights import WeightsError, check, fit, load_into, read_state_dict, rename, save_upload

ROOT = Path(__file__).resolve().parents[1]
TINY = {"pretrain_epochs": 2, "epochs": 2, "batch_size": 64, "snapshot_size": 100}


@pytest.fixture(scope="module")
def digits_subset():
    data = load_dataset("digits")
    keep = np.random.default_rng(0).choice(len(data), 300, replace=False)
    return ImageDataset("digits-300", data.x[keep], data.y[keep], data.class_names)


@pytest.mark.parametrize("key, expected", [
    ("fc1.weight", "encoder.11.weight"),              # a one-part prefix
    ("layer1.0.conv1.weight", "encoder.3.body.0.weight"),  # the longest listed prefix wins over "layer1"
    ("layer1.1.conv1.weight", None),                   # only "layer1" matches: dropped
    ("other.bias", "other.bias"),                      # no listed prefix: unchanged
])
def test_rename_by_longest_dotted_prefix(key, expected):
    names = {"fc1": "encoder.11", "layer1.0.conv1": "encoder.3.body.0", "layer1": None, "fc": "wrong"}
    renamed = rename({key: torch.zeros(1)}, names)
    assert list(renamed) == ([] if expected is None else [expected])


def test_a_file_that_fits_nowhere_names_missing_unexpected_and_misshaped_tensors(tmp_path):
    method = DCSS(DCSSConfig(resize=False), 10)
    model = method.build((1, 16, 16))
    state = {k: v.clone() for k, v in method.pretrained_part(model).state_dict().items()}
    del state["decoder.7.bias"]
    state["extra.weight"] = torch.zeros(3)
    state["encoder.11.weight"] = torch.zeros(10, 7)
    with pytest.raises(WeightsError) as err:
        fit(state, method, model, "weights.pt")
    message = str(err.value)
    assert "as this project's autoencoder:" in message
    assert "missing 1: decoder.7.bias" in message
    assert "unexpected 1: extra.weight" in message
    assert "mis-shaped 1: encoder.11.weight (file (10, 7), model (10, 128))" in message


def test_pickled_objects_and_non_state_dicts_are_refused_without_unpickling(tmp_path):
    module_file, list_file = tmp_path / "module.pt", tmp_path / "list.pt"
    torch.save(nn.Linear(2, 2), module_file)  # a whole pickled module: weights_only refuses it
    torch.save([torch.zeros(1)], list_file)
    with pytest.raises(WeightsError, match="weights_only=True"):
        read_state_dict(module_file)
    with pytest.raises(WeightsError, match="holds no state dict"):
        read_state_dict(list_file)
    with pytest.raises(WeightsError, match="No such file"):
        read_state_dict(tmp_path / "absent.pt")


def test_imported_weights_replace_pretraining_and_the_config_records_their_hash(digits_subset, tmp_path):
    donor = IDECish(digits_subset)
    path = tmp_path / "ae.pt"
    torch.save(donor.method.pretrained_part(donor.model).state_dict(), path)
    config = RunConfig.build("idec", digits_subset.name, overrides=TINY, init_weights=str(path))
    assert config.init_weights_sha256 == hashlib.sha256(path.read_bytes()).hexdigest()
    store = RunStore.create(tmp_path / "runs", new_run_id("idec", digits_subset.name, 0), config.to_dict())
    trainer = Trainer(config, digits_subset, store)
    trainer.run()
    metrics = store.read_metrics()
    assert list(metrics["phase"]) == ["pretrain", "init", "cluster", "cluster"]
    assert metrics["imported"].iloc[0] == 1.0
    assert store.read_config()["init_weights_sha256"] == config.init_weights_sha256
    # the first frame Explore shows is the imported autoencoder's codes
    first = store.load_snapshot(1)["z"]
    expected = encode_all(donor.method, donor.model, torch.from_numpy(digits_subset.x)[store.load_snapshot_indices()
                                                                                         ["indices"]])
    np.testing.assert_allclose(first, expected.numpy(), rtol=1e-5, atol=1e-6)


def test_a_weights_file_changed_after_configuring_fails_the_run(digits_subset, tmp_path):
    donor = IDECish(digits_subset)
    path = tmp_path / "ae.pt"
    torch.save(donor.method.pretrained_part(donor.model).state_dict(), path)
    config = RunConfig.build("idec", digits_subset.name, overrides=TINY, init_weights=str(path))
    torch.save(donor.model.state_dict(), path)  # still loadable (a whole model), but not the configured file
    store = RunStore.create(tmp_path / "runs", "changed", config.to_dict())
    Trainer(config, digits_subset, store).run()
    status = store.read_status()
    assert status["state"] == "failed" and "changed since the run was configured" in status["reason"]


def test_a_whole_models_state_dict_loads_into_its_autoencoder(digits_subset, tmp_path):
    donor = IDECish(digits_subset)
    method, model = IDECish.build(digits_subset)
    path = tmp_path / "model.pt"
    torch.save(donor.model.state_dict(), path)
    assert load_into(method, model, path) == "this project's whole model"
    for name, tensor in method.pretrained_part(model).state_dict().items():
        torch.testing.assert_close(tensor, donor.model.ae.state_dict()[name])


def test_methods_without_an_autoencoder_refuse_imported_weights(tmp_path):
    path = tmp_path / "ae.pt"
    torch.save({"w": torch.zeros(1)}, path)
    with pytest.raises(WeightsError, match="pretrains no autoencoder"):
        RunConfig.build("kmeans", "digits", init_weights=str(path))


def test_upload_check_and_content_addressed_copy(tmp_path):
    method = DCSS(DCSSConfig(resize=False), 10)
    state = method.pretrained_part(method.build((1, 16, 16))).state_dict()
    path = tmp_path / "ae.pt"
    torch.save(state, path)
    data = path.read_bytes()
    assert check(data, "ae.pt", method, (1, 16, 16)) == "this project's autoencoder"
    with pytest.raises(WeightsError, match="mis-shaped"):
        check(data, "ae.pt", method, (1, 28, 28))
    saved = save_upload(data, tmp_path / "weights")
    assert saved.read_bytes() == data and saved == save_upload(data, tmp_path / "weights")


def test_cli_reports_a_file_that_does_not_fit(tmp_path):
    path = tmp_path / "ae.pt"
    torch.save({"encoder.0.weight": torch.zeros(2, 2)}, path)
    done = subprocess.run([sys.executable, "-m", "core", "train", "--method", "idec", "--data", "digits",
                           "--init-weights", str(path), "--quiet", "--runs-dir", str(tmp_path / "runs"),
                           "--set", "epochs=1"], capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert done.returncode == 1
    assert "does not fit IDEC's" in done.stderr and "missing" in done.stderr
    assert list_runs(tmp_path / "runs")["state"].tolist() == ["failed"]


def test_official_dcss_mnist_autoencoder_loads_by_its_declared_names(shared_data):
    """The authors' shipped autoencoder (see the data README) loads strictly through DCSS' declared layout, and
    k-means on its codes of 2,000 MNIST-test images lies far above k-means on their pixels."""
    path = shared_data / "dcss_official_mnist_ae.pt"
    assert path.is_file(), f"{path} is missing: it belongs beside the data sets (see the data README)"
    method = DCSS(DCSSConfig(), 10)
    model = method.build((1, 28, 28))
    official = read_state_dict(path)
    layout, mapped = fit(official, method, model)
    assert layout == "the official DCSS code (Armanfard-Lab/DCSS)"
    unused = [k for k in official if k.split(".")[0] in ("layer4", "layer5", "layer6")]
    assert len(mapped) == len(official) - len(unused) == len(model.ae.state_dict())
    load_into(method, model, path)
    torch.testing.assert_close(model.ae.encoder[11].weight, official["fc1.weight"])

    data = load_dataset("mnist-test", data_dir=shared_data)
    keep = np.random.default_rng(0).choice(len(data), 2000, replace=False)
    x, y = torch.from_numpy(data.x[keep]), data.y[keep]
    codes = encode_all(method, model, x).numpy()
    acc_codes = evaluate(y, kmeans_labels(codes, 10, 0, restarts=3)[0])["acc"]
    acc_pixels = evaluate(y, kmeans_labels(x.flatten(1).numpy(), 10, 0, restarts=3)[0])["acc"]
    assert acc_codes > 0.85 and acc_codes > acc_pixels + 0.25, (acc_codes, acc_pixels)


class IDECish:
    """A pretrained-looking IDEC autoencoder on the digits subset: random weights, distinct from a fresh build."""

    def __init__(self, dataset):
        torch.manual_seed(123)
        self.method, self.model = self.build(dataset)

    @staticmethod
    def build(dataset):
        from core.methods import get_method
        config = RunConfig.build("idec", dataset.name, overrides=TINY)
        method = get_method("idec")(config.params, 10, 0)
        return method, method.build(dataset.shape)


def test_train_page_keeps_fitting_weights_by_content_and_refuses_others_writing_nothing(tmp_path):
    from core.data.builtin import cache_dir
    from pages import train

    config = RunConfig.build("dcss", "usps", preset="cpu", n_clusters=10)
    method = DCSS(config.params, 10)
    good = tmp_path / "ae.pt"
    torch.save(method.pretrained_part(method.build((1, 16, 16))).state_dict(), good)
    path, sentence = train.accept_weights("ae.pt", good.read_bytes(), config, (1, 16, 16))
    assert Path(path).parent == cache_dir() / "weights" and Path(path).read_bytes() == good.read_bytes()
    assert "skips pretraining" in sentence
    native = RunConfig.build("dcss", "usps", n_clusters=10, overrides={"resize": False})
    with pytest.raises(WeightsError, match="mis-shaped"):  # the 28×28 net's weights for the native 16×16 one
        train.accept_weights("ae.pt", good.read_bytes(), native, (1, 16, 16))
    assert len(list((cache_dir() / "weights").iterdir())) == 1


def test_a_file_that_unpacks_beyond_the_limit_is_refused_before_torch_unpacks_it():
    from core.train.init_weights import _check_unpacked_size

    buffer = io.BytesIO()
    torch.save({"w": torch.zeros(1000)}, buffer)  # 4,000 bytes of tensor data, uncompressed in torch's zip
    _check_unpacked_size(buffer.getvalue(), "small.pt", limit=1 << 20)
    with pytest.raises(WeightsError, match="small.pt unpacks to .* bytes, more than the limit of 1,000"):
        _check_unpacked_size(buffer.getvalue(), "small.pt", limit=1000)
