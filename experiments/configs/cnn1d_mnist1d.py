"""1-D CNN on MNIST-1D (Greydanus & Kobak 2024), generated offline.

    python -m experiments.train --config=experiments/configs/cnn1d_mnist1d.py --workdir=runs/cnn1d_mnist1d

Training as in the paper's reference code: Adam, learning rate 1e-2, batch 100, 6000 steps.
Expected: about 94% test accuracy (the paper's CNN: 94%); with --config.dataset.permute_positions=True
about 56%. Takes about a minute on 2 CPU cores.
"""

from cnn_jax.train.config import default_config


def get_config():
    c = default_config()
    c.dataset.name = "mnist1d"
    c.model.name = "cnn1d"
    c.model.options.channels = 25
    c.optimizer.name = "adam"
    c.optimizer.learning_rate = 1e-2
    c.optimizer.schedule = "constant"
    c.optimizer.weight_decay = 0.0
    c.train.batch_size = 100
    c.train.num_steps = 6000
    c.train.log_every_steps = 200
    c.train.eval_every_epochs = 10
    return c
