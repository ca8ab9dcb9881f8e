"""BatchNorm statistics recomputed on demand."""
from __future__ import annotations

import torch
from torch import Tensor, nn


@torch.no_grad()
def recalibrate_batch_norm(module: nn.Module, x: Tensor, batch_size: int = 256, transform=None) -> None:
    """Replace the running statistics of every BatchNorm in ``module`` by their exact average over ``x``.

    Each chunk of ``batch_size`` rows of x (N, C, H, W), passed through ``transform`` if given, is forwarded
    in train mode with cumulative averaging (momentum None); the momenta and the mode are restored after.
    Chunks of one row are skipped (BN cannot take batch statistics of a single 1×1 map).
    """
    norms = [m for m in module.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    if not norms:
        return
    momenta, was_training = [m.momentum for m in norms], module.training
    for m in norms:
        m.reset_running_stats()
        m.momentum = None
    module.train()
    for i in range(0, len(x), batch_size):
        chunk = x[i:i + batch_size]
        if len(chunk) > 1:
            module(transform(chunk) if transform else chunk)
    for m, momentum in zip(norms, momenta):
        m.momentum = momentum
    module.train(was_training)
