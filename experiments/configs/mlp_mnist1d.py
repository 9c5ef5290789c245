"""MLP (two hidden layers of 100) on MNIST-1D; hidden=() is logistic regression.

    python -m experiments.train --config=experiments/configs/mlp_mnist1d.py --workdir=runs/mlp_mnist1d

Expected: about 68% test accuracy (the paper's MLP); logistic regression
(--config.model.options.hidden="()") about 32%.
"""
import ml_collections

from experiments.configs import cnn1d_mnist1d


def get_config():
    c = cnn1d_mnist1d.get_config()
    c.model.name = "mlp"
    c.model.options = ml_collections.ConfigDict({"hidden": (100, 100)})
    c.optimizer.learning_rate = 1e-3
    return c
