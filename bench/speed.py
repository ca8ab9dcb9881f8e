"""Training speed against this machine's float32 GEMM peak and against ClustPy's IDEC.

    CLUSTERLAB_DATA=../shared/data python bench/speed.py --data usps mnist-test
    (ClustPy is a benchmark-only peer: pip install clustpy)

Every row is a median of ``--repeats`` runs measured in this one process, next to its peer.
* GEMM peak: a 2048³ float32 matmul on the training device.
* AE pretraining epoch: the autoencoder epochs of our trainer (data on the device, index batches),
  their FLOPs counted from the layer sizes (forward 2·MAC, backward 4·MAC less the input gradient of
  the first layer), as a fraction of the GEMM peak.
* IDEC clustering epoch: the same, with the target update P on the whole data every T iterations.
* IDEC P+C epochs: one whole run of ours against ``clustpy.deep.IDEC.fit`` on the same data, batch
  size, epochs and seed (our run also evaluates and snapshots every epoch, for the live view).
* Second IDEC run with a new α: ours starts from the cached autoencoder; ClustPy refits.
"""
from __future__ import annotations

import argparse
import sys
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


def _sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize()


def training_flops(model: torch.nn.Module, n_samples: int, linears=None) -> float:
    """FLOPs of one training epoch through the given Linear layers."""
    layers = linears or [m for m in model.modules() if isinstance(m, torch.nn.Linear)]
    macs = sum(m.in_features * m.out_features for m in layers)
    first = layers[0].in_features * layers[0].out_features
    return n_samples * (6 * macs - 2 * first)


def clustpy_idec(x: np.ndarray, y: np.ndarray, epochs: tuple[int, int], alpha: float, seed: int, device):
    from clustpy.deep import IDEC
    started = time.perf_counter()
    model = IDEC(n_clusters=10, alpha=alpha, batch_size=256, pretrain_epochs=epochs[0], clustering_epochs=epochs[1],
                 random_state=seed, device=device).fit(x.reshape(len(x), -1))
    return time.perf_counter() - started, cluster_acc(y, model.labels_)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", nargs="+", default=["usps", "mnist-test"])
    parser.add_argument("--pretrain-epochs", type=int, default=20)
    parser.add_argument("--epochs", type=int, default=20)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--no-clustpy", action="store_true")
    args = parser.parse_args()
    device = resolve_device(args.device)
    peak = gemm_peak(device, args.repeats)
    rows = [["float32 GEMM peak (2048³)", "—", "—", f"{peak:.0f}", "1.00", "—", "—"]]
    P, C = args.pretrain_epochs, args.epochs
    # tol 0 makes every run do all its epochs, so both sides train the same number of epochs.
    settings = dict(pretrain_epochs=P, epochs=C, tol=0.0, batch_size=256)

    for name in args.data:
        data = load_dataset(name)
        flops = training_flops(MLPAutoencoder(data.shape), len(data))
        pre_times, clu_times, ours_total, ours_acc, ours_second, peer_total, peer_acc, peer_second = ([] for _ in range(8))
        for seed in range(args.repeats):
            store, seconds = train("idec", data, seed, device=args.device, **settings)
            metrics = store.read_metrics()
            pre_times += list(metrics.loc[metrics.phase == "pretrain", "epoch_time"].iloc[1:])  # first epoch warms up
            clu_times += list(metrics.loc[metrics.phase == "cluster", "epoch_time"].iloc[1:])
            ours_total.append(seconds)
            ours_acc.append(metrics["acc"].iloc[-1])
            _, seconds = train("idec", data, seed, device=args.device, alpha=0.8, **settings)
            ours_second.append(seconds)
            if not args.no_clustpy:
                seconds, acc = clustpy_idec(data.x, data.y, (P, C), 1.0, seed, device)
                peer_total.append(seconds)
                peer_acc.append(acc)
                peer_second.append(clustpy_idec(data.x, data.y, (P, C), 0.8, seed, device)[0])
            print(f"{name} repeat {seed} done", file=sys.stderr, flush=True)

        def peer(values, fmt="{:.1f}"):
            return fmt.format(median(values)) if values else "—"

        pre, clu = median(pre_times), median(clu_times)
        rows += [
            [f"AE pretraining epoch, {name}", f"{pre:.3f} s", "", f"{flops / pre / 1e9:.0f}", f"{flops / pre / 1e9 / peak:.2f}", "", ""],
            [f"IDEC clustering epoch, {name}", f"{clu:.3f} s", "", f"{flops / clu / 1e9:.0f}", f"{flops / clu / 1e9 / peak:.2f}", "", ""],
            [f"IDEC {P}+{C} epochs, {name}", f"{median(ours_total):.1f} s", f"ACC {median(ours_acc):.3f}", "", "",
             f"{peer(peer_total)} s, ACC {peer(peer_acc, '{:.3f}')}",
             f"{median(peer_total) / median(ours_total):.2f}× faster" if peer_total else "—"],
            [f"second IDEC run, new α, {name}", f"{median(ours_second):.1f} s", "cached AE", "", "",
             f"{peer(peer_second)} s (refit)",
             f"{median(peer_second) / median(ours_second):.1f}× sooner" if peer_total else "—"],
        ]
    print(table(["measurement", "ours", "note", "GFLOP/s", "× GEMM peak", "ClustPy IDEC", "ours vs ClustPy"], rows))
    print(f"\n{describe_device(device)}; torch {torch.__version__}; medians of {args.repeats} repeats; "
          f"batch 256, MLP D–500–500–2000–10.")


if __name__ == "__main__":
    main()
