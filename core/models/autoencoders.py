"""The two autoencoders of the methods' specs.

* ``MLPAutoencoder``: DEC/IDEC/CDC's D–500–500–2000–d with ReLU hidden layers, linear code and output.
* ``ConvAutoencoder``: DECS's conv encoder (32–64–128–256 channels) and transposed-conv decoder.

Both expose ``encode(x) -> z`` and ``decode(z) -> x̂`` on image tensors (B, C, H, W).
"""
from __future__ import annotations

import math

import torch
from torch import Tensor, nn


def mlp(sizes: list[int]) -> nn.Sequential:
    """Linear layers through ``sizes`` with a ReLU between consecutive ones (none after the last)."""
    layers: list[nn.Module] = []
    for i, (n_in, n_out) in enumerate(zip(sizes[:-1], sizes[1:])):
        layers.append(nn.Linear(n_in, n_out))
        if i < len(sizes) - 2:
            layers.append(nn.ReLU())
    return nn.Sequential(*layers)


class MLPAutoencoder(nn.Module):
    """D–500–500–2000–d encoder and its mirror; PyTorch's default init is DEC-keras' ±√(1/fan_in)."""

    hidden = (500, 500, 2000)

    def __init__(self, input_shape: tuple[int, int, int], latent_dim: int = 10):
        super().__init__()
        self.input_shape = tuple(input_shape)
        n_in = math.prod(input_shape)
        self.encoder = mlp([n_in, *self.hidden, latent_dim])
        self.decoder = mlp([latent_dim, *reversed(self.hidden), n_in])

    def encode(self, x: Tensor) -> Tensor:
        return self.encoder(x.flatten(1))  # (B, d)

    def decode(self, z: Tensor) -> Tensor:
        return self.decoder(z).view(-1, *self.input_shape)  # (B, C, H, W)


def _conv_block(c_in: int, c_out: int, padding: int, pool: bool) -> list[nn.Module]:
    # Keras order of the official code: conv → ReLU → BN; Keras BN momentum 0.99 is torch's 0.01.
    block = [nn.Conv2d(c_in, c_out, 3, padding=padding), nn.ReLU(), nn.BatchNorm2d(c_out, eps=1e-3, momentum=0.01)]
    return block + [nn.MaxPool2d(2)] if pool else block


def _deconv_block(c_in: int, c_out: int, padding: int, output_padding: int) -> list[nn.Module]:
    return [nn.ConvTranspose2d(c_in, c_out, 3, stride=2, padding=padding, output_padding=output_padding),
            nn.ReLU(), nn.BatchNorm2d(c_out, eps=1e-3, momentum=0.01)]


class ConvAutoencoder(nn.Module):
    """DECS's conv autoencoder (spec ``decs.md`` §b), for square inputs of side ≥ 8."""

    def __init__(self, input_shape: tuple[int, int, int], latent_dim: int = 10):
        super().__init__()
        channels, height, width = input_shape
        if height != width or height < 8:
            raise ValueError(f"the conv autoencoder needs square images of side >= 8, got {height}x{width}")
        self.input_shape = tuple(input_shape)
        exact = height % 8 == 0
        self.side = height // 8                                  # spatial side after three pools
        code_side = self.side if exact else self.side - 2        # the 4th conv is "valid" otherwise
        self.encoder = nn.Sequential(
            *_conv_block(channels, 32, 1, True), *_conv_block(32, 64, 1, True),
            *_conv_block(64, 128, 1, True), *_conv_block(128, 256, 1 if exact else 0, False),
            nn.Flatten(), nn.Linear(256 * code_side ** 2, latent_dim))
        self.unflatten = nn.Sequential(nn.Linear(latent_dim, 256 * self.side ** 2), nn.ReLU())
        self.decoder = nn.Sequential(
            *_deconv_block(256, 128, 1 if exact else 0, 1 if exact else 0),
            *_deconv_block(128, 64, 1, 1), *_deconv_block(64, 32, 1, 1),
            nn.ConvTranspose2d(32, channels, 3, stride=1, padding=1))
        for module in self.modules():
            if isinstance(module, (nn.Conv2d, nn.ConvTranspose2d, nn.Linear)):
                nn.init.xavier_uniform_(module.weight)  # Keras' Glorot-uniform default
                nn.init.zeros_(module.bias)

    def encode(self, x: Tensor) -> Tensor:
        return self.encoder(x)  # (B, d)

    def decode(self, z: Tensor) -> Tensor:
        h = self.unflatten(z).view(-1, 256, self.side, self.side)
        x_hat = self.decoder(h)
        # Sides that are not multiples of 8 come back one or two pixels short (spec pitfall); pad back.
        pad_h = self.input_shape[1] - x_hat.shape[2]
        pad_w = self.input_shape[2] - x_hat.shape[3]
        return nn.functional.pad(x_hat, (0, pad_w, 0, pad_h)) if pad_h or pad_w else x_hat


def build_autoencoder(kind: str, input_shape: tuple[int, int, int], latent_dim: int) -> nn.Module:
    if kind == "mlp":
        return MLPAutoencoder(input_shape, latent_dim)
    if kind == "conv":
        return ConvAutoencoder(input_shape, latent_dim)
    raise ValueError(f"unknown autoencoder {kind!r}; choose 'mlp' or 'conv'")
