"""Autoencoders sized from the input shape, and the optimisers the methods build."""
from core.models.autoencoders import ConvAutoencoder, MLPAutoencoder, build_autoencoder
from core.models.optim import adam, sgd

__all__ = ["ConvAutoencoder", "MLPAutoencoder", "adam", "build_autoencoder", "sgd"]
