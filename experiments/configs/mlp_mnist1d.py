"""MLP (two hidden layers of 100) on MNIST-1D, or logistic regression with the argument "logreg".

    python -m experiments.train --config=experiments/configs/mlp_mnist1d.py --workdir=runs/mlp_mnist1d
    python -m experiments.train --config=experiments/configs/mlp_mnist1d.py:logreg --workdir=runs/logreg

Expected: about 68% test accuracy for the MLP and 32% for logistic regression (the paper's values).
Training as for the CNN (configs/cnn1d_mnist1d.py).
"""

import ml_collections

from experiments.configs import cnn1d_mnist1d


def get_config(arg: str | None = None):
    if arg not in (None, "", "logreg"):
        raise ValueError(f"config argument {arg!r}: valid arguments are none (MLP) or 'logreg'")
    c = cnn1d_mnist1d.get_config()
    c.model.name = "mlp"
    c.model.options = ml_collections.ConfigDict(
        {"hidden": () if arg == "logreg" else (100, 100), "residual": False}  # residual: the reference's MLPBase
    )
    return c
