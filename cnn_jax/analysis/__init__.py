"""Analysis of models: receptive fields read off the traced program, per-layer summaries."""
from cnn_jax.analysis.receptive_field import model_receptive_field
from cnn_jax.analysis.summary import LayerRow, Summary, summarize

__all__ = ["model_receptive_field", "summarize", "Summary", "LayerRow"]
