"""Autoencoders sized from the input shape."""
from core.models.autoencoders import ConvAutoencoder, MLPAutoencoder, build_autoencoder

__all__ = ["ConvAutoencoder", "MLPAutoencoder", "build_autoencoder"]
