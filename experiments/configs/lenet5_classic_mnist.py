"""LeNet-5 as published (LeCun et al. 1998: scaled tanh, trainable subsampling, C3's partial table) on
MNIST, 28x28 digits centred in 32x32 as in the paper; 20 passes as in the paper, SGD with momentum
instead of its stochastic diagonal Levenberg-Marquardt, and a trained dense output layer instead of
the fixed RBF units.

    python -m experiments.train --config=experiments/configs/lenet5_classic_mnist.py \
        --workdir=runs/lenet5_classic --config.dataset.download_dir=../shared/datasets

Expected: the paper's error without distortions (cnn_jax/report/published.py); ours: docs/results.md (study 5).
"""

from cnn_jax.train.config import default_config


def get_config():
    c = default_config()
    c.dataset.name = "mnist"
    c.model.name = "lenet5_classic"
    c.optimizer.learning_rate = 0.02
    c.optimizer.weight_decay = 1e-4
    c.train.num_epochs = 20
    return c
