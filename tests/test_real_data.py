"""Deep methods beat k-means on pixels on real digits: scikit-learn's digits and a slice of MNIST."""
import numpy as np
import pytest

from core.data import ImageDataset, load_dataset
from core.runs import RunStore, new_run_id
from core.train import RunConfig, Trainer

# Small batches give the autoencoder enough steps on 3,000 images (47 per epoch); with 25 pretraining
# epochs IDEC reached 0.586 against 0.549 for k-means, with 40 it reaches 0.642.
BUDGET = {"pretrain_epochs": 40, "epochs": 10, "batch_size": 64, "kmeans_restarts": 5, "snapshot_size": 500}


@pytest.fixture(scope="module")
def mnist_slice(shared_data):
    data = load_dataset("mnist-test", data_dir=shared_data)
    keep = np.random.default_rng(0).choice(len(data), 3000, replace=False)
    return ImageDataset("mnist-test-3000", data.x[keep], data.y[keep], data.class_names)


def final_acc(method, dataset, tmp_path, **overrides):
    config = RunConfig.build(method, dataset.name, seed=0, overrides=overrides)
    store = RunStore.create(tmp_path, new_run_id(method, dataset.name, 0), config.to_dict())
    return Trainer(config, dataset, store).run()["acc"]


def test_idec_and_dec_beat_kmeans_on_pixels(mnist_slice, tmp_path):
    pixels = final_acc("kmeans", mnist_slice, tmp_path, restarts=5)
    idec = final_acc("idec", mnist_slice, tmp_path, **BUDGET)
    dec = final_acc("dec", mnist_slice, tmp_path, **BUDGET)  # reuses IDEC's cached autoencoder
    assert idec > pixels + 0.05, (idec, pixels)
    assert dec > pixels + 0.05, (dec, pixels)


@pytest.mark.parametrize("method", ["idec", "cdc"])
def test_fast_preset_on_digits_beats_kmeans_on_pixels(method, tmp_path):
    digits = load_dataset("digits")
    config = RunConfig.build("kmeans", "digits", seed=0, preset="fast")
    store = RunStore.create(tmp_path, "kmeans", config.to_dict())
    pixels = Trainer(config, digits, store).run()["acc"]
    config = RunConfig.build(method, "digits", seed=0, preset="fast")
    store = RunStore.create(tmp_path, method, config.to_dict())
    assert Trainer(config, digits, store).run()["acc"] > pixels
