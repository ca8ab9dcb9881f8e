"""Autoencoders sized from the input shape, the optimisers the methods build, BatchNorm recalibration."""
from core.models.autoencoders import ConvAutoencoder, MLPAutoencoder, build_autoencoder
from core.models.batch_norm import recalibrate_batch_norm
from core.models.optim import adam, sgd

__all__ = ["ConvAutoencoder", "MLPAutoencoder", "adam", "build_autoencoder", "recalibrate_batch_norm", "sgd"]
