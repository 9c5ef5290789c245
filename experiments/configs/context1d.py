"""A 1-D dilated context network (Yu & Koltun 2016's module: 3-tap convolutions, ReLU, 32 channels,
a 1x1 classifier and global average pooling) on the long-range XOR task or MNIST-1D.

    python -m experiments.train --config=experiments/configs/context1d.py:long_range_xor \\
        --config.model.options.dilations="(1,2,4,8)" --workdir=runs/context_xor_1248
    python -m experiments.train --config=experiments/configs/context1d.py:mnist1d --workdir=runs/context_mnist1d

The receptive-field study (experiments/receptive_fields.py) trains it with the dilation schedules
(1,1,1,1), (2,2,2,2), (1,2,4,8) and (1,2,5,9); docs/results.md has the accuracies. Adam 3e-3, batch 100,
4000 steps: under a minute on 2 CPU cores.
"""

from cnn_jax.train.config import default_config

DATASETS = ("long_range_xor", "mnist1d")


def get_config(arg: str | None = None):
    if arg not in DATASETS:
        raise ValueError(f"config argument {arg!r}: valid arguments are {', '.join(DATASETS)}")
    c = default_config()
    c.dataset.name = arg
    c.model.name = "context_net"
    c.model.options.features = 32
    c.model.options.dilations = (1, 2, 4, 8)
    c.model.options.global_pool = True
    c.optimizer.name = "adam"
    c.optimizer.learning_rate = 3e-3
    c.optimizer.schedule = "cosine"
    c.optimizer.weight_decay = 0.0
    c.train.batch_size = 100
    c.train.num_steps = 4000
    c.train.log_every_steps = 200
    c.train.eval_every_epochs = 10
    return c
