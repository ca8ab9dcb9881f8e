"""Training speed against this machine's float32 GEMM peak and against ClustPy's IDEC.

    CLUSTERLAB_DATA=../shared/data python bench/speed.py --data usps mnist-test
    (ClustPy is a benchmark-only peer: pip install clustpy)

Every row is a median of ``--repeats`` runs measured in this one process, next to its peer.
* GEMM peak: a 2048³ float32 matmul on the training device.
* The epoch's matrix products alone: the same products as an autoencoder epoch (batch 256, the
  MLP's layer shapes), timed bare: the bound for this model and batch size, below the 2048³ peak
  because a 256-row product keeps the cores less busy.
* AE pretraining epoch: the autoencoder epochs of our trainer (data on the device, index batches),
  their FLOPs counted from the layer sizes (forward 2·MAC, backward 4·MAC less the input gradient of
  the first layer), as a fraction of the GEMM peak.
* IDEC clustering epoch: the same, with the target update P on the whole data every T iterations.
* ClustPy: ``clustpy.deep.IDEC.fit`` on the same data, batch size, epochs and seed; its epoch time is
  the fit's wall time over its epochs.
* Second IDEC run with a new α: ours starts from the cached autoencoder and stops by IDEC's tolerance;
  ClustPy refits its autoencoder.
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.common import median, table, train  # noqa: E402
from core.data import load_dataset  # noqa: E402
from core.metrics import cluster_acc  # noqa: E402
from core.models import MLPAutoencoder  # noqa: E402
from core.repro import describe_device, resolve_device  # noqa: E402


def gemm_peak(device: torch.device, repeats: int, n: int = 2048) -> float:
    """Median GFLOP/s of an n³ float32 matmul."""
    a, b = torch.randn(n, n, device=device), torch.randn(n, n, device=device)
    rates = []
    for _ in range(repeats + 1):
        _sync(device)
        started = time.perf_counter()
        for _ in range(5):
            a @ b
        _sync(device)
        rates.append(5 * 2 * n ** 3 / (time.perf_counter() - started) / 1e9)
    return median(rates[1:])


def epoch_gemm_time(model: torch.nn.Module, n_samples: int, batch_size: int, device: torch.device,
                    repeats: int) -> float:
    """Median seconds of one epoch's matrix products alone, at the model's shapes and batch size.

    Per batch and Linear layer: the forward product, the weight gradient and (but for the first
    layer) the input gradient — the FLOPs ``training_flops`` counts, with nothing else around them.
    """
    layers = [m for m in model.modules() if isinstance(m, torch.nn.Linear)]
    weights = [torch.randn(m.out_features, m.in_features, device=device) for m in layers]
    inputs = [torch.randn(batch_size, w.shape[1], device=device) for w in weights]  # (B, in)
    grads = [torch.randn(batch_size, w.shape[0], device=device) for w in weights]   # (B, out)
    sizes = [min(batch_size, n_samples - start) for start in range(0, n_samples, batch_size)]
    times = []
    for _ in range(repeats + 1):
        _sync(device)
        started = time.perf_counter()
        for size in sizes:
            for i, w in enumerate(weights):
                a, g = inputs[i][:size], grads[i][:size]
                a @ w.T
                g.T @ a
                if i:
                    g @ w
        _sync(device)
        times.append(time.perf_counter() - started)
    return median(times[1:])


def _sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize()


def training_flops(model: torch.nn.Module, n_samples: int, linears=None) -> float:
    """FLOPs of one training epoch through the given Linear layers."""
    layers = linears or [m for m in model.modules() if isinstance(m, torch.nn.Linear)]
    macs = sum(m.in_features * m.out_features for m in layers)
    first = layers[0].in_features * layers[0].out_features
    return n_samples * (6 * macs - 2 * first)


def clustpy_idec(x: np.ndarray, y: np.ndarray, epochs: tuple[int, int], seed: int, device):
    """Wall time and ACC of one ``clustpy.deep.IDEC.fit``."""
    from clustpy.deep import IDEC
    started = time.perf_counter()
    model = IDEC(n_clusters=10, batch_size=256, pretrain_epochs=epochs[0], clustering_epochs=epochs[1],
                 random_state=seed, device=device).fit(x.reshape(len(x), -1))
    return time.perf_counter() - started, cluster_acc(y, model.labels_)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", nargs="+", default=["usps", "mnist-test"])
    parser.add_argument("--epochs", type=int, default=5, help="pretraining and clustering epochs of the timed runs")
    parser.add_argument("--refit-epochs", type=int, nargs=2, default=(50, 50), metavar=("P", "C"),
                        help="the budget of the 'second run with a new α' comparison")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--device", default="auto")
    args = parser.parse_args()
    os.environ["CLUSTERLAB_CACHE"] = tempfile.mkdtemp(prefix="clusterlab-speed-")  # time real pretraining
    device = resolve_device(args.device)
    peak = gemm_peak(device, args.repeats)
    rows = [["float32 GEMM peak (2048³)", f"{peak:.0f} GFLOP/s", "1.00", "—", "—"]]
    E, (P, C) = args.epochs, args.refit_epochs
    for name in args.data:
        data = load_dataset(name)
        flops = training_flops(MLPAutoencoder(data.shape), len(data))
        gemms = epoch_gemm_time(MLPAutoencoder(data.shape), len(data), 256, device, args.repeats)
        rows.append([f"the epoch's matrix products alone, {name}", f"{gemms:.2f} s · {flops / gemms / 1e9:.0f} GFLOP/s",
                     f"{flops / gemms / 1e9 / peak:.2f}", "—", "—"])
        pre_times, clu_times, second, peer_epoch = [], [], [], []
        for seed in range(args.repeats):
            # tol 0: every timed run trains all its epochs, like ClustPy's
            store, _ = train("idec", data, seed, device=args.device, pretrain_epochs=E, epochs=E, tol=0.0)
            metrics = store.read_metrics()
            pre_times += list(metrics.loc[metrics.phase == "pretrain", "epoch_time"].iloc[1:])  # first one warms up
            clu_times += list(metrics.loc[metrics.phase == "cluster", "epoch_time"].iloc[1:])
            # a user's second run: same data and autoencoder (P epochs, cached), new α, default stopping rule
            if seed == 0:
                train("idec", data, 0, device=args.device, pretrain_epochs=P, epochs=C)  # fills the cache
            _, seconds = train("idec", data, 0, device=args.device, pretrain_epochs=P, epochs=C, alpha=0.8)
            second.append(seconds)
            seconds, _ = clustpy_idec(data.x, data.y, (E, E), seed, device)
            peer_epoch.append(seconds / (2 * E))
            print(f"{name} repeat {seed} done", file=sys.stderr, flush=True)
        pre, clu, peer = median(pre_times), median(clu_times), median(peer_epoch)
        refit = peer * (P + C)
        rows += [
            [f"AE pretraining epoch, {name}", f"{pre:.2f} s · {flops / pre / 1e9:.0f} GFLOP/s",
             f"{flops / pre / 1e9 / peak:.2f} ({gemms / pre:.2f} of the products alone)",
             f"{peer:.2f} s (IDEC fit, per epoch)", f"{peer / pre:.2f}×"],
            [f"IDEC clustering epoch, {name}", f"{clu:.2f} s · {flops / clu / 1e9:.0f} GFLOP/s",
             f"{flops / clu / 1e9 / peak:.2f} ({gemms / clu:.2f} of the products alone)", f"{peer:.2f} s",
             f"{peer / clu:.2f}×"],
            [f"second IDEC run, new α, {name}", f"{median(second):.1f} s (cached AE, tol stop)", "—",
             f"{refit:.0f} s (refit {P}+{C} epochs)", f"{refit / median(second):.1f}× sooner"],
        ]
    print(table(["measurement", "ours", "× GEMM peak", "ClustPy IDEC", "ours vs ClustPy"], rows))
    print(f"\n{describe_device(device)}; torch {torch.__version__}; medians of {args.repeats} repeats; batch 256, "
          f"MLP D–500–500–2000–10; timed runs {E}+{E} epochs. An epoch of ours is its training loop; the "
          f"per-epoch evaluation and snapshot for the live view come on top and are in the second-run time. "
          f"ClustPy's refit time is its measured epoch time × {P + C}.")


if __name__ == "__main__":
    main()
