"""Analysis of models: receptive fields read off the traced program."""
from cnn_jax.analysis.receptive_field import model_receptive_field

__all__ = ["model_receptive_field"]
