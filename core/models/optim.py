"""Optimisers as the methods build them, with the fastest kernel torch offers on the device."""
from __future__ import annotations

from collections.abc import Iterable

import torch

# Devices whose fused kernels update every parameter in one pass. On a USPS autoencoder epoch (2 CPU
# cores, batch 256) fused Adam took 0.79 s against 1.03 s for the default multi-tensor Adam, whose
# separate element-wise passes over 2.8 M parameters cost as much as a third of the matrix products;
# fused SGD with momentum took 0.78 s against 0.85 s.
FUSED_DEVICES = ("cpu", "cuda")

Params = Iterable[torch.Tensor] | Iterable[dict]


def adam(params: Params, lr: float, **options) -> torch.optim.Adam:
    """``torch.optim.Adam`` over ``params`` (tensors or parameter groups), fused where supported."""
    params, fused = _with_fused_flag(params)
    return torch.optim.Adam(params, lr=lr, fused=fused, **options)


def sgd(params: Params, lr: float, **options) -> torch.optim.SGD:
    """``torch.optim.SGD`` over ``params`` (tensors or parameter groups), fused where supported."""
    params, fused = _with_fused_flag(params)
    return torch.optim.SGD(params, lr=lr, fused=fused, **options)


def _with_fused_flag(params: Params) -> tuple[list, bool | None]:
    """The parameters as a list (groups' iterators materialised) and whether a fused kernel applies."""
    params = [{**group, "params": list(group["params"])} if isinstance(group, dict) else group for group in params]
    tensors = [t for group in params for t in (group["params"] if isinstance(group, dict) else [group])]
    fused = all(t.device.type in FUSED_DEVICES and t.is_floating_point() for t in tensors)
    return params, fused or None
