"""No float64 on the training device: Apple's MPS has none, so a float64 tensor there fails the run.

CI has only a CPU, where float64 always works, so ``AcceleratorWithoutFloat64`` plays the accelerator.
Training runs on the device ``cpu:0``, which is the CPU for the arithmetic but a device other than
plain ``cpu`` for the guard, a ``TorchFunctionMode`` that follows every tensor to where it would live:

* on the training device: the model's parameters and buffers and the data, as the trainer places them
  (``.to(device)``); the result of any op with such a tensor among its inputs; a tensor created with
  ``device=`` the training device, which is what ``device=x.device`` names (a marked tensor's
  ``.device`` reads ``cpu:0``, as an accelerator tensor's would read ``mps``);
* on the CPU: whatever ``.cpu()`` or ``.to("cpu")`` returns, a tensor created without a device or on
  ``"cpu"``, and the results of ops on such tensors only: the islands where float64 is allowed.

A float64 tensor on the training device fails the test with the op that made it. This follows the
placement rules of torch itself (results live with their inputs, factories where ``device=`` says), so
what passes here runs on MPS as far as dtypes go.
"""
from __future__ import annotations

import weakref

import numpy as np
import pytest
import torch
from torch.overrides import TorchFunctionMode
from torch.utils import _pytree

from core.data import ImageDataset, load_dataset
from core.methods import REGISTRY
from core.runs import RunStore, new_run_id
from core.train import RunConfig, Trainer
from core.train import trainer as trainer_module

TRAINING_DEVICE = torch.device("cpu", 0)
DEVICE_GET = torch.Tensor.device.__get__
TO_CPU = (torch.Tensor.cpu,)


class Float64OnDevice(AssertionError):
    pass


class AcceleratorWithoutFloat64(TorchFunctionMode):
    """The guard (see the module docstring); ``place`` marks tensors the trainer put on the device."""

    def __init__(self):
        super().__init__()
        self._on_device: dict[int, weakref.ref] = {}

    def on_device(self, tensor) -> bool:
        ref = self._on_device.get(id(tensor))
        return ref is not None and ref() is tensor

    def place(self, tensor: torch.Tensor, made_by: str) -> None:
        if tensor.dtype == torch.float64:
            raise Float64OnDevice(f"{made_by} put a float64 tensor {tuple(tensor.shape)} on the training device")
        self._on_device[id(tensor)] = weakref.ref(tensor)

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if func == DEVICE_GET:
            return TRAINING_DEVICE if self.on_device(args[0]) else func(*args)
        result = func(*args, **kwargs)
        if self._lands_on_device(func, args, kwargs):
            name = getattr(func, "__qualname__", getattr(func, "__name__", str(func)))
            for tensor in _pytree.tree_leaves(result):
                if isinstance(tensor, torch.Tensor):
                    self.place(tensor, name)
        elif args and result is args[0] and self.on_device(result):
            # .cpu() of a tensor already on the CPU returns the tensor itself; a real transfer returns
            # another one, which is not on the device: a view stands for it.
            result = result.view_as(result)
        return result

    def _lands_on_device(self, func, args, kwargs) -> bool:
        """Where torch puts the result: ``.cpu()`` on the CPU, ``.to`` where it is told (else with its input),
        anything else with its tensor inputs, or where its ``device=`` says."""
        if func in TO_CPU:
            return False
        if getattr(func, "__name__", "") == "to":
            target = _to_target(args[1:], kwargs)
            if target is not None:
                return target == TRAINING_DEVICE if isinstance(target, torch.device) else self.on_device(target)
            return self.on_device(args[0])
        if "device" in kwargs and kwargs["device"] is not None:
            return torch.device(kwargs["device"]) == TRAINING_DEVICE
        return any(self.on_device(leaf) for leaf in _pytree.tree_leaves((args, kwargs)))


def _to_target(args, kwargs):
    """The device (or tensor) a ``Tensor.to`` call names, None when it names only a dtype."""
    for value in (*args, kwargs.get("device"), kwargs.get("other")):
        if isinstance(value, torch.Tensor):
            return value
        if isinstance(value, (str, torch.device)):
            return torch.device(value)
    return None


@pytest.fixture(scope="module")
def digits_200():
    data = load_dataset("digits")
    keep = np.random.default_rng(0).choice(len(data), 200, replace=False)
    return ImageDataset("digits-200", data.x[keep], data.y[keep], data.class_names)


def _train_under_guard(method: str, dataset: ImageDataset, tmp_path, monkeypatch) -> dict:
    guard = AcceleratorWithoutFloat64()
    placed = trainer_module.prefer_channels_last

    def place_on_device(model, x):  # the trainer's model and data, as it moved them to the device
        model, x = placed(model, x)
        for tensor in (*model.parameters(), *model.buffers(), x):
            guard.place(tensor, "the trainer's .to(device)")
        return model, x

    monkeypatch.setattr(trainer_module, "prefer_channels_last", place_on_device)
    overrides = {"pretrain_epochs": 1, "epochs": 1, "batch_size": 64, "snapshot_size": 200}
    config = RunConfig.build(method, dataset.name, overrides=overrides, device="cpu:0")
    store = RunStore.create(tmp_path / "runs", new_run_id(method, dataset.name, 0), config.to_dict())
    with guard:
        Trainer(config, dataset, store).run()
    return store.read_status()


@pytest.mark.parametrize("method", sorted(REGISTRY))
def test_one_epoch_of_each_phase_makes_no_float64_on_the_training_device(method, digits_200, tmp_path, monkeypatch):
    status = _train_under_guard(method, digits_200, tmp_path, monkeypatch)
    assert status["state"] == "finished", status


def test_the_guard_catches_float64_on_the_device_and_allows_it_on_the_cpu():
    guard = AcceleratorWithoutFloat64()
    x = torch.ones(4, 3)
    guard.place(x, "test")
    with guard:
        island = x.to("cpu", torch.float64).T @ x.cpu().double()  # the CPU's float64: fine
        assert island.dtype == torch.float64 and x.device == TRAINING_DEVICE
        back = island.float().to(x.device)
        assert guard.on_device(back) and not guard.on_device(island)
        for on_device in (lambda: x.double(), lambda: torch.eye(3, dtype=torch.float64, device=x.device),
                          lambda: x.to(torch.float64), lambda: (x.cpu().double() @ island).to(x.device)):
            with pytest.raises(Float64OnDevice):
                on_device()
