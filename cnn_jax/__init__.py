"""cnn_jax: convolutional networks in JAX/Flax, from the math of one layer to paper tables."""

__version__ = "0.1.0"
