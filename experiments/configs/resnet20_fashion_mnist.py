"""ResNet-20 (He et al. 2016, CIFAR layout) on Fashion-MNIST, with flips and 2-pixel random translation.

    python -m experiments.train --config=experiments/configs/resnet20_fashion_mnist.py \
        --workdir=runs/resnet20_fmnist --config.dataset.download_dir=../shared/datasets

Expected: not measured here yet (30 epochs are about 3 hours on 2 CPU cores).
"""

from ml_collections import config_dict

from cnn_jax.train.config import default_config


def get_config():
    c = default_config()
    c.dataset.name = "fashion_mnist"
    c.dataset.augment.crop_padding = 2
    c.dataset.augment.flip = True
    c.model.name = "resnet20"
    c.model.options.norm = "batch"  # batch | none | lrn
    c.model.options.virtual_batch_size = config_dict.placeholder(int)  # ghost BatchNorm over groups of this size
    c.optimizer.learning_rate = 0.1
    c.optimizer.nesterov = True
    c.optimizer.weight_decay = 5e-4
    c.optimizer.warmup_steps = 200
    c.train.num_epochs = 30
    return c
