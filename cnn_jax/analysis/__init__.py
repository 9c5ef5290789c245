"""Analysis of models: receptive fields read off the traced program, per-layer summaries,
effective receptive fields, translation equivariance, and a classifier's consistency under shifts."""

from cnn_jax.analysis.receptive_field import model_receptive_field
from cnn_jax.analysis.shift import consistency, predictions_at_shifts, shift_robustness
from cnn_jax.analysis.spatial import (
    EffectiveReceptiveField,
    ShiftResponse,
    effective_receptive_field,
    last_spatial_map,
    translation_response,
)
from cnn_jax.analysis.summary import LayerRow, Summary, compare_conv_variants, params_and_macs, summarize

__all__ = [
    "model_receptive_field",
    "summarize",
    "params_and_macs",
    "Summary",
    "LayerRow",
    "effective_receptive_field",
    "EffectiveReceptiveField",
    "last_spatial_map",
    "translation_response",
    "ShiftResponse",
    "compare_conv_variants",
    "predictions_at_shifts",
    "shift_robustness",
    "consistency",
]
