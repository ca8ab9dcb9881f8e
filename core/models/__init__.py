"""Autoencoders sized from the input shape, the optimisers the methods build, BatchNorm recalibration,
the memory layout of convolutional models."""
from core.models.autoencoders import ConvAutoencoder, MLPAutoencoder, build_autoencoder
from core.models.batch_norm import recalibrate_batch_norm
from core.models.memory_format import prefer_channels_last
from core.models.optim import adam, sgd

__all__ = ["ConvAutoencoder", "MLPAutoencoder", "adam", "build_autoencoder", "prefer_channels_last",
           "recalibrate_batch_norm", "sgd"]
