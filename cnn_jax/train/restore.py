"""A run directory's trained model, back as a classifier, for analysis after training.

classify, data = load_classifier("studies/pooling/max__mnist/seed0")
accuracy = np.mean(classify(data.test.inputs) == data.test.labels)
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from cnn_jax.compile_cache import enable_compile_cache
from cnn_jax.data import Dataset
from cnn_jax.train.checkpoint import Checkpoints
from cnn_jax.train.loop import load_data
from cnn_jax.train.program import build_model
from cnn_jax.train.step import InputSpec


def load_classifier(workdir: str | Path) -> tuple[Callable[[np.ndarray], np.ndarray], Dataset]:
    """(classify, dataset) of the run in `workdir`, from its config.json and latest checkpoint.

    classify: inputs as the dataset stores them (e.g. (N, H, W, C) uint8) -> predicted classes (N,), in
    evaluation mode (BatchNorm's running statistics), normalised as the run normalised them. The dataset is
    loaded as the run loaded it (its data_dir; study variants such as permuted positions applied).
    """
    enable_compile_cache()
    workdir = Path(workdir)
    config_file, checkpoints = workdir / "config.json", workdir / "checkpoints"
    if not config_file.exists() or not checkpoints.exists():
        raise FileNotFoundError(f"{workdir} is not a run directory with a checkpoint (config.json, checkpoints/)")
    config = ml_collections.ConfigDict(json.loads(config_file.read_text()))
    data = load_data(config)
    model = build_model(config, data.info.num_classes)
    state = Checkpoints(checkpoints, config.train.keep_checkpoints).restore(None)
    variables = {"params": state["params"], "batch_stats": state["batch_stats"]}
    inputs = InputSpec(tuple(data.mean.tolist()), tuple(data.std.tolist()), data.scale)

    @jax.jit  # variables as an argument, not a constant folded into the program
    def predict(variables, x):
        return jnp.argmax(model.apply(variables, inputs(x, None), train=False), -1)

    return lambda x: np.asarray(predict(variables, x)), data
