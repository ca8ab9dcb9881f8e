"""Pretraining steps of the convolutional methods in channels-last layout against the default one.

    CLUSTERLAB_DATA=../shared/data python bench/conv_layout.py --data usps mnist-test

The trainer keeps a convolutional model and its images channels-last (``core.models.prefer_channels_last``);
this compares one optimisation step of each method's ``cpu``-preset pretraining in both layouts, on real
batches of the data set resident on the device. Every cell is the median of ``--repeats`` timings of
``--steps`` steps, both layouts measured alternately in this one process.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.common import median, table  # noqa: E402
from core.data import load_dataset  # noqa: E402
from core.methods import Batch, get_method  # noqa: E402
from core.models import prefer_channels_last  # noqa: E402
from core.repro import describe_device, resolve_device  # noqa: E402
from core.train import RunConfig  # noqa: E402

METHODS = ("decs", "dcss", "dscdan")


def step_timer(method: str, data: str, x: torch.Tensor, channels_last: bool, steps: int):
    """A function timing ``steps`` pretraining steps of the method's ``cpu`` preset (seconds per step)."""
    config = RunConfig.build(method, data, preset="cpu")
    torch.manual_seed(0)
    instance = get_method(method)(config.params, 10, 0)
    model = instance.build(tuple(x.shape[1:])).to(x.device)
    if channels_last:
        model, x = prefer_channels_last(model, x)
    optimizer = instance.optimizer(model, "pretrain")
    batch_size = config.trainer.batch_size
    order = torch.randperm(len(x), device=x.device)

    def timed() -> float:
        started = time.perf_counter()
        for b in range(steps):
            index = order[b * batch_size:(b + 1) * batch_size]
            loss = instance.pretrain_step(model, Batch(x[index], index))["loss"]
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
        if x.device.type == "cuda":
            torch.cuda.synchronize()
        return (time.perf_counter() - started) / steps

    timed()  # warm-up: kernel selection, allocator
    return timed, batch_size


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", nargs="+", default=["usps", "mnist-test"])
    parser.add_argument("--methods", nargs="+", default=list(METHODS), choices=METHODS)
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--device", default="auto")
    args = parser.parse_args()
    device = resolve_device(args.device)
    rows = []
    for data in args.data:
        x = torch.from_numpy(load_dataset(data).x).to(device)
        for method in args.methods:
            default, batch_size = step_timer(method, data, x, False, args.steps)
            nhwc, _ = step_timer(method, data, x, True, args.steps)
            times = {False: [], True: []}
            for _ in range(args.repeats):  # alternately, so that a busy moment hits both layouts
                times[False].append(default())
                times[True].append(nhwc())
            before, after = median(times[False]), median(times[True])
            rows.append([data, get_method(method).title, batch_size, f"{before * 1e3:.0f}", f"{after * 1e3:.0f}",
                         f"{before / after:.2f}×"])
    print(f"Device: {describe_device(device)}; torch {torch.__version__}; medians of {args.repeats} × {args.steps} "
          "steps")
    print(table(["data", "method", "batch", "ms/step, default layout", "ms/step, channels-last", "speed-up"], rows))


if __name__ == "__main__":
    main()
